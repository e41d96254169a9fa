#!/usr/bin/env bash
# Stream benchmark (issue: streams). In one run, side by side, medians of RUNS:
#   one-way pipe: `head -c SIZE /dev/zero | cat > /dev/null` raw vs the same two processes joined by a jobgraph pipe;
#   queue: `seq LINES | wc -l` raw vs jobgraph queue seq -> 2 x `wc -l` (balance) vs
#          `parallel --pipe --roundrobin -j2 wc -l` (if installed: apt-get install parallel);
#   Python multiprocessing.Queue, 1 producer -> 2 consumers, PYMSGS messages (the seed's anchor);
#   balance with a slow consumer (issue 9): `seq 1000000` -> 4 x `cat` + 1 reader of ~1,000 lines/s,
#          jobgraph vs `parallel --pipe --roundrobin -j5` with the same five jobs (one of them the slow one).
# Usage: benches/streams.sh [SIZE] [LINES] [RUNS] [PYMSGS] [SLOWLIMIT]   (defaults 4G 50000000 3 1000000 60)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-4G}
lines=${2:-50000000}
runs=${3:-3}
pymsgs=${4:-1000000}
slowlimit=${5:-60}
cargo build --release --quiet --bin jobgraph
jg=$PWD/target/release/jobgraph
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
now() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A ms
bench() { # label, command...
  local label=$1; shift
  local t=()
  for _ in $(seq "$runs"); do
    local t0; t0=$(now)
    "$@" > /dev/null 2>&1 || { echo "$label: FAILED"; return; }
    t+=($(( ($(now) - t0) / 1000000 )))
  done
  ms[$label]=$(median "${t[@]}")
  echo "${ms[$label]}"
}
bytes=$(numfmt --from=iec "$size")

cat > "$tmp/pipe.toml" <<TOML
[pipe.p]
from = "gen"
to = "sink"
[process.gen]
cmd = ["head", "-c", "$size", "/dev/zero"]
[process.sink]
cmd = ["cat"]
stdout = "null"
TOML
cat > "$tmp/queue.toml" <<TOML
[queue.q]
from = ["gen"]
to = ["count"]
[process.gen]
cmd = ["seq", "$lines"]
[process.count]
replicas = 2
cmd = ["wc", "-l"]
TOML
cat > "$tmp/slow.toml" <<TOML
[process.gen]
cmd = ["seq", "1", "1000000"]
[process.w]
replicas = 4
shell = "cat > $tmp/out.{replica}"
[process.slow]
shell = "while read -r l; do sleep 0.0002; done"
[queue.q]
from = ["gen"]
to = ["w", "slow"]
TOML
cat > "$tmp/mpq.py" <<'PY'
import multiprocessing as mp, sys
N = int(sys.argv[1])
def consume(q, out):
    n = 0
    while q.get() is not None:
        n += 1
    out.put(n)
if __name__ == "__main__":
    q, out = mp.Queue(maxsize=1024), mp.Queue()
    cs = [mp.Process(target=consume, args=(q, out)) for _ in range(2)]
    for c in cs: c.start()
    for i in range(N): q.put(i)
    for _ in cs: q.put(None)
    total = out.get() + out.get()
    for c in cs: c.join()
    assert total == N, total
PY

echo "== one-way pipe, $size (median of $runs, raw and jobgraph runs interleaved against drift)"
rt=(); jt=()
for _ in $(seq "$runs"); do
  t0=$(now); sh -c "head -c $size /dev/zero | cat > /dev/null"; rt+=($(( ($(now) - t0) / 1000000 )))
  t0=$(now); "$jg" run --quiet --no-progress "$tmp/pipe.toml" > /dev/null 2>&1; jt+=($(( ($(now) - t0) / 1000000 )))
done
raw=$(median "${rt[@]}"); jgp=$(median "${jt[@]}")
printf 'raw kernel pipe         %6d ms  %6.2f GB/s\n' "$raw" "$(echo "$bytes / $raw / 1000000" | bc -l)"
printf 'jobgraph pipe           %6d ms  %6.2f GB/s   ratio %.2f of raw throughput\n' "$jgp" "$(echo "$bytes / $jgp / 1000000" | bc -l)" "$(echo "$raw / $jgp" | bc -l)"

echo "== queue, seq $lines -> 2 x wc -l (median of $runs)"
rawq=$(bench rawq sh -c "seq $lines | wc -l")
jgq=$(bench jgq "$jg" run --quiet --no-progress "$tmp/queue.toml")
printf 'raw seq | wc -l         %6d ms  %6.1f M lines/s\n' "$rawq" "$(echo "$lines / $rawq / 1000" | bc -l)"
printf 'jobgraph queue          %6d ms  %6.1f M lines/s   ratio %.2f of raw\n' "$jgq" "$(echo "$lines / $jgq / 1000" | bc -l)" "$(echo "$rawq / $jgq" | bc -l)"
if command -v parallel > /dev/null; then
  par=$(bench par sh -c "seq $lines | parallel --pipe --roundrobin -j2 wc -l")
  printf 'parallel --pipe -j2     %6d ms  %6.1f M lines/s   jobgraph is %.2fx faster\n' "$par" "$(echo "$lines / $par / 1000" | bc -l)" "$(echo "$par / $jgq" | bc -l)"
else
  echo "parallel --pipe: not installed (apt-get install parallel)"
fi

echo "== Python multiprocessing.Queue, 1 -> 2, $pymsgs messages (median of $runs)"
py=$(bench py python3 "$tmp/mpq.py" "$pymsgs")
printf 'multiprocessing.Queue   %6d ms  %6.2f M msgs/s\n' "$py" "$(echo "$pymsgs / $py / 1000" | bc -l)"
printf 'jobgraph queue          %6.1f M msgs/s: %.0fx the Python anchor\n' "$(echo "$lines / $jgq / 1000" | bc -l)" "$(echo "($lines / $jgq) / ($pymsgs / $py)" | bc -l)"

echo "== balance with a slow consumer: seq 1000000 -> 4 x cat + 1 slow reader (median of $runs; parallel cut at ${slowlimit}s)"
jgs=$(bench jgs "$jg" run --quiet --no-progress "$tmp/slow.toml")
printf 'jobgraph queue          %6d ms\n' "$jgs"
if command -v parallel > /dev/null; then
  slowjob="if [ {%} = 5 ]; then while read -r l; do sleep 0.0002; done; else cat > $tmp/par.{%}; fi"
  for block in 16k 1M; do
    pars=$(bench "pars$block" timeout "$slowlimit" sh -c "seq 1000000 | parallel --pipe --roundrobin --block $block -j5 '$slowjob'")
    case $pars in
      *FAILED*) printf 'parallel --block %-4s   > %d s (cut)\n' "$block" "$slowlimit" ;;
      *) printf 'parallel --block %-4s   %6d ms   jobgraph is %.0fx faster\n' "$block" "$pars" "$(echo "$pars / $jgs" | bc -l)" ;;
    esac
  done
fi
