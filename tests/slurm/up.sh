#!/usr/bin/env bash
# Brings up a single-node Slurm on this machine, without systemd: Debian's
# slurm-wlm and munge (installed if missing), a munge key, munged, then
# slurmctld and slurmd started directly with a slurm.conf written for this
# host. Waits until `sinfo` shows the node idle. Needs root.
#
#   tests/slurm/up.sh          # then: sinfo, srun, sbatch, ... ; tests/slurm/down.sh
#
# Environment: JOBGRAPH_SLURM_STATE (state, logs, pid files; default
# /tmp/jobgraph-slurm), JOBGRAPH_SLURM_CPUS (CPUs declared; default 4).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${JOBGRAPH_SLURM_STATE:-/tmp/jobgraph-slurm}"
cpus="${JOBGRAPH_SLURM_CPUS:-4}"
host="$(hostname -s)"
conf=/etc/slurm/slurm.conf
start=$(date +%s.%N)

fail() {
  echo "tests/slurm/up.sh: $*" >&2
  for log in "$dir/slurmctld.log" "$dir/slurmd.log" /var/log/munge/munged.log; do
    [ -f "$log" ] && { echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; }
  done
  exit 1
}

if [ "$(id -u)" != 0 ]; then fail "must run as root (it starts munged, slurmctld and slurmd)"; fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
installed=$(date +%s.%N)

# Whatever an earlier bring-up left running goes first.
"$here/down.sh" >/dev/null 2>&1 || true

mkdir -p "$dir/state" "$dir/spool" /etc/slurm
chmod 755 "$dir"

# munge: a key, then the daemon (as the munge user, as packaged).
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
runuser -u munge -- /usr/sbin/munged --pid-file="/run/munge/munged.pid" --log-file=/var/log/munge/munged.log \
  || fail "munged did not start"
for _ in $(seq 100); do
  munge -n </dev/null | unmunge >/dev/null 2>&1 && break
  sleep 0.05
done
munge -n </dev/null | unmunge >/dev/null 2>&1 || fail "munge does not work (munge -n | unmunge)"

sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@DIR@|$dir|g" "$here/slurm.conf.in" >"$conf"
: >"$dir/slurmctld.log"
: >"$dir/slurmd.log"
# -c: a clean controller, no jobs from an earlier bring-up.
/usr/sbin/slurmctld -c || fail "slurmctld did not start"
/usr/sbin/slurmd -c || fail "slurmd did not start"

state=""
for _ in $(seq 600); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.05
done
[ "$state" = idle ] || fail "the node $host is not idle after 30 s (sinfo says: '${state:-nothing}')"
end=$(date +%s.%N)
printf 'tests/slurm/up.sh: Slurm %s up on %s (%s CPUs declared) in %.2f s (%.2f s without installing)\n' \
  "$(sinfo --version | awk '{print $2}')" "$host" "$cpus" \
  "$(awk "BEGIN{print $end - $start}")" "$(awk "BEGIN{print $end - $installed}")"
