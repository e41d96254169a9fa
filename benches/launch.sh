#!/usr/bin/env bash
# Launch benchmark (issue: runtime core). In one run, side by side:
#   1,000 independent /bin/true with at most 16 at once, and a chain of 1,000 sequential ones,
#   through jobgraph, a plain Rust fork+exec loop (the floor), the same loop with a pipe per
#   child read to end-of-file (what keeping outputs apart costs), the loop in two threads (what
#   spawning from more than one thread gains), make -j16 and xargs -P16.
# Usage: benches/launch.sh [N] [RUNS]     (defaults 1000 processes, 5 runs; medians reported)
# Also: the engine's CPU use and RSS while N processes sleep.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
runs=${2:-5}
cargo build --release --quiet --bin jobgraph --example spawn_floor
jg=$PWD/target/release/jobgraph
floor=$PWD/target/release/examples/spawn_floor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

{ echo "[graph]"; echo "max_parallel = 16"
  for i in $(seq "$n"); do printf '[process.t%d]\ncmd = ["/bin/true"]\n' "$i"; done; } > "$tmp/independent.toml"
{ printf '[process.t1]\ncmd = ["/bin/true"]\n'
  for i in $(seq 2 "$n"); do printf '[process.t%d]\ncmd = ["/bin/true"]\nafter = ["t%d"]\n' "$i" $((i - 1)); done; } > "$tmp/chain.toml"
{ printf 'all:'; for i in $(seq "$n"); do printf ' t%d' "$i"; done; echo
  for i in $(seq "$n"); do printf 't%d:\n\t@/bin/true\n' "$i"; done
  echo ".PHONY: all $(seq -f 't%g' -s ' ' "$n")"; } > "$tmp/independent.mk"
{ printf 'all: t%d\nt1:\n\t@/bin/true\n' "$n"
  for i in $(seq 2 "$n"); do printf 't%d: t%d\n\t@/bin/true\n' "$i" $((i - 1)); done
  echo ".PHONY: all $(seq -f 't%g' -s ' ' "$n")"; } > "$tmp/chain.mk"

now() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A result
bench() { # label, command...
  local label=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    local t0; t0=$(now)
    "$@" > /dev/null 2>&1 || { echo "$label: FAILED"; return; }
    times+=($(( ($(now) - t0) / 1000 )))
  done
  local m; m=$(median "${times[@]}")
  result[$label]=$m
  printf '%-34s %8.1f ms total  %6.3f ms/process\n' "$label" "$(echo "$m / 1000" | bc -l)" "$(echo "$m / 1000 / $n" | bc -l)"
}

echo "== $n independent /bin/true, 16 at once (median of $runs)"
bench "floor: Rust fork+exec loop -P16" "$floor" "$n" 16
bench "floor + a pipe per child -P16" "$floor" "$n" 16 /bin/true --capture
bench "floor, two spawning threads -P16" "$floor" "$n" 16 --threads=2
bench "jobgraph run (max_parallel 16)" "$jg" run --no-progress --quiet "$tmp/independent.toml"
bench "make -j16" make -s -j16 -f "$tmp/independent.mk"
bench "xargs -P16" sh -c "seq $n | xargs -P16 -n1 /bin/true"
echo "== chain of $n sequential /bin/true (median of $runs)"
bench "floor: Rust fork+exec loop -P1" "$floor" "$n" 1
bench "floor + a pipe per child -P1" "$floor" "$n" 1 /bin/true --capture
bench "jobgraph run (chain of after)" "$jg" run --no-progress --quiet "$tmp/chain.toml"
bench "make (chain)" make -s -j16 -f "$tmp/chain.mk"
bench "xargs -P1" sh -c "seq $n | xargs -P1 -n1 /bin/true"
r() { echo "scale=2; ${result[$1]} / ${result[$2]}" | bc; }
echo "== ratios (lower is better)"
echo "independent: jobgraph / floor = $(r 'jobgraph run (max_parallel 16)' 'floor: Rust fork+exec loop -P16'), jobgraph / floor with pipes = $(r 'jobgraph run (max_parallel 16)' 'floor + a pipe per child -P16'), jobgraph / make -j16 = $(r 'jobgraph run (max_parallel 16)' 'make -j16'), jobgraph / xargs = $(r 'jobgraph run (max_parallel 16)' 'xargs -P16')"
echo "chain:       jobgraph / floor = $(r 'jobgraph run (chain of after)' 'floor: Rust fork+exec loop -P1'), jobgraph / floor with pipes = $(r 'jobgraph run (chain of after)' 'floor + a pipe per child -P1'), jobgraph / make = $(r 'jobgraph run (chain of after)' 'make (chain)'), jobgraph / xargs = $(r 'jobgraph run (chain of after)' 'xargs -P1')"

echo "== engine at rest: $n sleepers (sleep 3)"
{ for i in $(seq "$n"); do printf '[process.s%d]\ncmd = ["sleep", "3"]\n' "$i"; done; } > "$tmp/sleepers.toml"
"$jg" run --no-progress --quiet "$tmp/sleepers.toml" > /dev/null 2>&1 &
engine=$!
sleep 1.5
ticks() { awk '{print $14 + $15}' "/proc/$engine/stat"; }
t0=$(ticks); sleep 1; t1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$engine/status")
hz=$(getconf CLK_TCK)
echo "engine CPU while $n processes sleep: $(( (t1 - t0) * 1000 / hz )) ms per second; RSS $((rss / 1024)) MiB ($rss KiB)"
wait "$engine"
