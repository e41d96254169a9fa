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
echo "floor (reading the file): $( { /usr/bin/time -f '%e' cat "$tmp/big.toml" > /dev/null; } 2>&1 )s for cat"
