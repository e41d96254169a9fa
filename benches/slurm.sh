#!/usr/bin/env bash
# Slurm benchmark (issue 12), against the cluster tests/slurm/up.sh brings up:
#   step mode:  N `true` instances through `jobgraph run --executor slurm` inside an
#               allocation of P tasks (--max-parallel P), against a plain shell loop of
#               `srun --jobid … -n1 --exact true` steps with the same parallelism (xargs -P P);
#   batch mode: N independent `true` jobs through jobgraph, against a hand-written loop
#               of `sbatch --wrap true` awaited with one squeue call every 250 ms;
#   polling:    jobgraph's squeue calls per second in batch mode (JOBGRAPH_SLURM_STATS).
# Usage: benches/slurm.sh [N] [RUNS] [P]   (defaults 200 units, 5 runs, 4 tasks; medians)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
runs=${2:-5}
p=${3:-4}
sinfo -h -o %T | grep -qE 'idle|mixed' || { echo "Slurm is not up: run tests/slurm/up.sh" >&2; exit 1; }
cargo build --release --quiet --bin jobgraph
jg=$PWD/target/release/jobgraph
tmp=$(mktemp -d)
alloc=""
cleanup() { [ -n "$alloc" ] && scancel "$alloc"; rm -rf "$tmp"; }
trap cleanup EXIT
export JOBGRAPH_SLURM_DIR=$tmp/slurm NO_COLOR=1
printf '[process.t]\nreplicas = %d\ncmd = ["true"]\n' "$n" > "$tmp/true.toml"

now() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bench() { # label, command...
  local label=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    local t0; t0=$(now)
    "$@" > "$tmp/out" 2>&1 || { echo "$label: FAILED"; tail "$tmp/out"; return 1; }
    times+=($(( ($(now) - t0) / 1000000 )))
  done
  local m; m=$(median "${times[@]}")
  printf '%-52s median %6d ms  (runs: %s)\n' "$label" "$m" "${times[*]}"
}

# Waits until squeue lists none of the given job ids, one call per 250 ms.
await() { # ids...
  local ids; ids=$(IFS=,; echo "$*")
  while [ -n "$(squeue -h -j "$ids" -o %i 2>/dev/null)" ]; do sleep 0.25; done
}
sbatch_loop() {
  local ids=()
  for _ in $(seq "$n"); do ids+=("$(sbatch --parsable --job-name=bench-loop --output=/dev/null --wrap true)"); done
  await "${ids[@]}"
}
srun_loop() {
  seq "$n" | xargs -P "$p" -I{} srun --jobid="$alloc" --ntasks=1 --exact --quiet true
}

alloc=$(salloc --no-shell --ntasks="$p" --job-name=bench-alloc 2>&1 | sed -n 's/.*Granted job allocation \([0-9]*\).*/\1/p')
[ -n "$alloc" ] || { echo "salloc failed" >&2; exit 1; }
echo "== step mode: $n x true in allocation $alloc ($p tasks), median of $runs"
bench "shell loop: xargs -P$p srun --jobid -n1 --exact true" srun_loop
bench "jobgraph run --executor slurm --max-parallel $p" \
  env SLURM_JOB_ID="$alloc" "$jg" run --executor slurm --quiet --no-progress --max-parallel "$p" "$tmp/true.toml"
scancel "$alloc"; alloc=""
while [ -n "$(squeue -h -n bench-alloc -o %i)" ]; do sleep 0.1; done

echo "== batch mode: $n independent true jobs, median of $runs"
bench "hand-written sbatch loop + squeue every 250 ms" sbatch_loop
bench "jobgraph run --executor slurm (batch)" \
  env -u SLURM_JOB_ID "$jg" run --executor slurm --quiet --no-progress "$tmp/true.toml"

echo "== batch mode polling"
t0=$(now)
env -u SLURM_JOB_ID JOBGRAPH_SLURM_STATS=1 "$jg" run --executor slurm --quiet --no-progress "$tmp/true.toml" > "$tmp/out" 2>&1
ms=$(( ($(now) - t0) / 1000000 ))
calls=$(sed -n 's/^jobgraph: slurm: \([0-9]*\) squeue calls$/\1/p' "$tmp/out")
awk -v c="$calls" -v ms="$ms" -v n="$n" 'BEGIN { printf "%d squeue calls for %d units in %d ms: %.2f calls/s\n", c, n, ms, c * 1000 / ms }'

echo "== group units: a stream group run as one nested jobgraph (local / step / batch in turn, median of $runs)"
alloc=$(salloc --no-shell --ntasks=2 --job-name=bench-alloc 2>&1 | sed -n 's/.*Granted job allocation \([0-9]*\).*/\1/p')
[ -n "$alloc" ] || { echo "salloc failed" >&2; exit 1; }
for f in duplex queue; do
  declare -a tl=() ts=() tb=()
  for _ in $(seq "$runs"); do
    t0=$(now); "$jg" run --executor local --quiet --no-progress "jobs/$f.toml" > "$tmp/out" 2>&1; tl+=($(( ($(now) - t0) / 1000000 )))
    t0=$(now); env SLURM_JOB_ID="$alloc" "$jg" run --executor slurm --quiet --no-progress "jobs/$f.toml" > "$tmp/out" 2>&1; ts+=($(( ($(now) - t0) / 1000000 )))
    t0=$(now); env -u SLURM_JOB_ID "$jg" run --executor slurm --quiet --no-progress "jobs/$f.toml" > "$tmp/out" 2>&1; tb+=($(( ($(now) - t0) / 1000000 )))
  done
  printf 'jobs/%s.toml: local %d ms, step %d ms, batch %d ms\n' "$f" "$(median "${tl[@]}")" "$(median "${ts[@]}")" "$(median "${tb[@]}")"
done
