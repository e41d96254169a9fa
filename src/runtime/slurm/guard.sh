#!/bin/sh
# jobgraph's guardian step (step mode; written by the engine into its run
# directory, see docs/slurm.md). One per run, outside the engine's process
# tree: when the engine's heartbeat stops (the engine died, even by SIGKILL),
# it cancels every step of the run, itself included.
#
# usage: guard.sh HEARTBEAT STALE_SECONDS PREFIX READY_FILE
hb=$1 stale=$2 prefix=$3
: >"$4"
while sleep 1; do
  now=$(date +%s)
  beat=$(stat -c %Y "$hb" 2>/dev/null || echo 0)
  if [ $((now - beat)) -gt "$stale" ]; then
    echo "jobgraph: the engine's heartbeat stopped ($hb): cancelling the run's steps" >&2
    # Until none is left: a controller that does not answer now (paused,
    # restarting) must not leave the steps running for good.
    while :; do
      if steps=$(squeue -h -s -j "$SLURM_JOB_ID" -o '%i %j'); then
        steps=$(printf '%s\n' "$steps" |
          awk -v p="$prefix" -v me="$SLURM_JOB_ID.$SLURM_STEP_ID" 'index($2, p) == 1 && $1 != me { print $1 }')
        [ -z "$steps" ] && exit 0
        printf '%s\n' "$steps" | xargs -r scancel --quiet
      fi
      sleep 2
    done
  fi
done
