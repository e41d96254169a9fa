#!/usr/bin/env bash
# Benchmark: `jobgraph validate` and `jobgraph plan` on generated files of N
# processes, one per shape (examples/gen_graph.rs):
#   dag       N processes, ~2N after edges, a lock, a queue per 200 processes
#   wide      N independent processes
#   chain     one after chain of N
#   cycle     one after cycle of N (invalid: measures the error path and its message)
#   parents   one parent chain N deep
#   replicas  N processes of 65,536 replicas each (and the issue's 600 x 65,536)
#   groups    N/2 stream groups (a one-way pipe each, a queue per 4 groups)
# Usage: benches/validate.sh [N] [RUNS]     (defaults: 100000 processes, 5 runs)
# Prints a table of medians: wall time and peak RSS (/usr/bin/time -f %M), and
# the peers' parse-only figures. Not a test: nothing is gated on it.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
runs=${2:-5}
cargo build --release --quiet --bin jobgraph --example gen_graph
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gen=./target/release/examples/gen_graph
jg=./target/release/jobgraph
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# measure FILE COMMAND: prints "wall_s cpu_s rss_mib" medians over $runs runs
# (cpu = user + system: what the machine's other work does not inflate).
measure() {
  local file=$1 cmd=$2 walls=() cpus=() rss=()
  for _ in $(seq "$runs"); do
    /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" "$jg" "$cmd" "$file" >/dev/null 2>"$tmp/err" || true
    # time(1) puts "Command exited with non-zero status" first for an invalid file.
    read -r wall user sys kb < <(tail -n 1 "$tmp/time")
    walls+=("$wall"); cpus+=("$(echo "$user $sys" | awk '{printf "%.2f", $1 + $2}')"); rss+=("$kb")
  done
  echo "$(median "${walls[@]}") $(median "${cpus[@]}") $(( $(median "${rss[@]}") / 1024 ))"
}
printf '%-9s %9s %7s | %8s %8s %8s | %8s %8s %8s | %s\n' shape processes KiB "val wall" "val cpu" "val MiB" "plan wall" "plan cpu" "plan MiB" note
row() { # shape, file, note
  local shape=$1 file=$2 note=${3:-}
  local procs size v p
  procs=$(grep -c '^\[process\.' "$file")
  size=$(( $(stat -c %s "$file") / 1024 ))
  v=$(measure "$file" validate)
  p=$(measure "$file" plan)
  # shellcheck disable=SC2086
  printf '%-9s %9s %7s | %8s %8s %8s | %8s %8s %8s | %s\n' "$shape" "$procs" "$size" $v $p "$note"
}
for shape in dag wide chain cycle parents replicas groups; do
  "$gen" "$shape" "$n" > "$tmp/$shape.toml"
  note=""
  if [ "$shape" = cycle ]; then
    lines=$("$jg" validate "$tmp/$shape.toml" 2>&1 | wc -l || true)
    note="invalid; message: $lines lines"
  fi
  [ "$shape" = replicas ] && note="$((n * 65536)) instances"
  row "$shape" "$tmp/$shape.toml" "$note"
  [ "$shape" = dag ] || rm -f "$tmp/$shape.toml"
done
"$gen" replicas 600 > "$tmp/r600.toml"
row replicas "$tmp/r600.toml" "600 x 65,536 (issue 10)"
# Peers on the dag file: parsing alone, with no checks at all.
peer() { # name, command...
  local name=$1; shift
  local ws=()
  for _ in $(seq 3); do
    /usr/bin/time -f '%e %M' -o "$tmp/ptime" "$@" > /dev/null 2>&1 || { echo "peer $name: failed"; return; }
    read -r w k < "$tmp/ptime"; ws+=("$w"); pk=$k
  done
  echo "peer on dag, $name (parse only): median $(median "${ws[@]}")s wall, $((pk / 1024)) MiB peak RSS"
}
if command -v python3 >/dev/null; then
  peer "python3 tomllib" python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$tmp/dag.toml"
fi
peer "cat (reading the file)" cat "$tmp/dag.toml"
