#!/bin/sh
# jobgraph's unit wrapper for batch jobs (written by the engine into its run
# directory; see docs/slurm.md). It runs the command, keeps it from outliving
# the engine, and records its exit status.
#
# usage: unit.sh HEARTBEAT STALE_SECONDS STATUS_FILE PREFIX COMMAND [ARG...]
#   HEARTBEAT      a file the engine touches every second
#   STALE_SECONDS  heartbeat older than this: the engine is gone; every job
#                  of the run (named PREFIX*) is cancelled
#   STATUS_FILE    where the exit status goes
hb=$1 stale=$2 status=$3 prefix=$4
shift 4
cancel_run() {
  squeue -h -u "$(id -u)" -o '%i %j' |
    awk -v p="$prefix" 'index($2, p) == 1 { print $1 }' | xargs -r scancel --quiet
}
stale_beat() {
  now=$(date +%s)
  beat=$(stat -c %Y "$hb" 2>/dev/null || echo 0)
  [ $((now - beat)) -gt "$stale" ]
}
# A job that waited in the queue past the engine's death does not run its
# command: it cancels the run's jobs (pending ones too) and itself.
if stale_beat; then
  echo "jobgraph: the engine's heartbeat stopped ($hb) before this unit started: cancelling the run's units" >&2
  cancel_run
  exit 1
fi
# An asynchronous command's stdin is /dev/null unless given: give it ours.
exec 9<&0
"$@" <&9 9<&- &
child=$!
exec 9<&- </dev/null
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  while :; do
    sleep 1 &
    s=$!
    wait "$s"
    kill -0 "$child" 2>/dev/null || exit 0
    if stale_beat; then
      echo "jobgraph: the engine's heartbeat stopped ($hb): cancelling the run's units" >&2
      # Slurm kills every process of the unit (the command's descendants
      # too); killing the command from here would orphan them.
      cancel_run
      sleep 10
      kill -KILL "$child" 2>/dev/null
      exit 0
    fi
  done
) &
watcher=$!
# A stop signal is for the command (Slurm signals every process of the unit):
# the wrapper outlives it to report the command's status.
trap '' TERM INT HUP QUIT USR1 USR2
wait "$child"
rc=$?
kill "$watcher" 2>/dev/null
# The unit ends with its command, as a Slurm job ends with its script: what
# the command left running goes with it. Such a process keeps the unit's
# process group (which the wrapper leads) even once re-parented to init,
# where Slurm's process tracking (proctrack/linuxproc follows parents) no
# longer finds it: the wrapper kills the rest of its group itself.
if [ "$(ps -o pgid= -p $$ | tr -d ' ')" = "$$" ]; then
  for p in $(ps -eo pid=,pgid= | awk -v g=$$ '$2 == g && $1 != g { print $1 }'); do
    kill -KILL "$p" 2>/dev/null
  done
fi
echo "$rc" >"$status.tmp" && mv -f "$status.tmp" "$status"
exit "$rc"
