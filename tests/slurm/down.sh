#!/usr/bin/env bash
# Takes down what tests/slurm/up.sh started: cancels every job, stops slurmd,
# slurmctld and munged, and waits until they are gone.
set -uo pipefail
dir="${JOBGRAPH_SLURM_STATE:-/tmp/jobgraph-slurm}"
ctld=$(cat "$dir/slurmctld.pid" 2>/dev/null || true)
if [ -n "$ctld" ] && kill -0 "$ctld" 2>/dev/null; then
  timeout 5 scancel --user="$(id -un)" >/dev/null 2>&1 || true
fi
stop() { # pidfile name
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  echo "tests/slurm/down.sh: $2 ($pid) ignored SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null
}
stop "$dir/slurmd.pid" slurmd
stop "$dir/slurmctld.pid" slurmctld
stop /run/munge/munged.pid munged
exit 0
