#!/usr/bin/env bash
# Benchmark: `jobgraph validate` on a generated file of N processes and ~2N after edges.
# Usage: benches/validate.sh [N] [RUNS]     (defaults: 100000 processes, 7 runs)
# Prints each run's wall time and peak RSS, then the medians. Not a test: nothing is gated on it.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
runs=${2:-7}
cargo build --release --quiet --bin jobgraph --example gen_graph
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./target/release/examples/gen_graph "$n" $((2 * n)) > "$tmp/big.toml"
size=$(stat -c %s "$tmp/big.toml")
edges=$(grep -o '"p[0-9]*"' "$tmp/big.toml" | wc -l)
echo "file: $n processes (+ $((n / 200 * 2)) queue members), $edges after edges, $((size / 1024)) KiB"
walls=(); rss=()
for i in $(seq "$runs"); do
  /usr/bin/time -f '%e %M' -o "$tmp/time" ./target/release/jobgraph validate "$tmp/big.toml" 2>/dev/null
  read -r wall kb < "$tmp/time"
  echo "run $i: ${wall}s wall, $((kb / 1024)) MiB peak RSS"
  walls+=("$wall"); rss+=("$kb")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median: $(median "${walls[@]}")s wall, $(( $(median "${rss[@]}") / 1024 )) MiB peak RSS"
# Peers on the same file, same run: parsing alone, with no checks at all.
peer() { # name, command...
  local name=$1; shift
  local ws=()
  for i in $(seq 3); do
    /usr/bin/time -f '%e %M' -o "$tmp/ptime" "$@" > /dev/null 2>&1 || { echo "peer $name: failed"; return; }
    read -r w k < "$tmp/ptime"; ws+=("$w"); pk=$k
  done
  echo "peer $name (parse only): median $(median "${ws[@]}")s wall, $((pk / 1024)) MiB peak RSS"
}
if command -v python3 >/dev/null; then
  peer "python3 tomllib" python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$tmp/big.toml"
fi
peer "cat (reading the file)" cat "$tmp/big.toml"
