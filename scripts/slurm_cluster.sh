#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests: munged, slurmctld and slurmd from
# Debian's packages (slurmctld, slurmd, munge), run as root, reachable on localhost only, with
# their own config, key, spool, state and log files in one directory. Nothing under /etc is
# read or changed, and the system's own munge and SLURM services (if any) are left alone.
#
# Usage (as root):
#   scripts/slurm_cluster.sh start    # start the daemons (if not running); print the SLURM_CONF
#   scripts/slurm_cluster.sh stop     # stop them (jobs still running are killed)
#   scripts/slurm_cluster.sh status   # sinfo, or exit 1 if the cluster is not up
#   SLURM_CONF=$(scripts/slurm_cluster.sh conf) squeue   # client commands need SLURM_CONF
#
# The node has this machine's CPUs, one partition `debug` (the default), no GPUs, no
# accounting; finished jobs stay visible to `scontrol show job` for an hour and are listed in
# jobcomp.log. Packages missing: `apt-get update && apt-get install -y slurmctld slurmd munge`.
#
# Environment (optional):
#   SLURM_CLUSTER_DIR   where everything goes        (default: ${TMPDIR:-/tmp}/dreamer-lsp-slurm)
#   SLURM_CLUSTER_PORT  slurmctld's port; slurmd's is the next one   (default: 16817)
set -euo pipefail

DIR="${SLURM_CLUSTER_DIR:-${TMPDIR:-/tmp}/dreamer-lsp-slurm}"
PORT="${SLURM_CLUSTER_PORT:-16817}"
CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/munge.socket"

say() { printf '[slurm_cluster] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

running() {  # pid file -> whether its process is alive
  [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_config() {
  local host cpus memory
  host="$(hostname -s)"
  cpus="$(nproc --all)"
  memory=$(( $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024 / 2 ))
  mkdir -p "$DIR"/{state,spool,log}
  cat > "$CONF" <<EOF
# Written by scripts/slurm_cluster.sh; a single-node test cluster on localhost.
ClusterName=dreamerlsp
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  running "$DIR/munge/munged.pid" && return
  mkdir -p "$DIR/munge"
  chmod 0700 "$DIR/munge"
  [[ -s "$DIR/munge/munge.key" ]] || mungekey --create --keyfile="$DIR/munge/munge.key"
  chmod 0400 "$DIR/munge/munge.key"
  munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start (see $DIR/munge/munged.log)"
}

wait_for() {  # seconds, description, command...
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq $((seconds * 2))); do
    "$@" >/dev/null 2>&1 && return
    sleep 0.5
  done
  die "$what within ${seconds} s (logs in $DIR/log)"
}

start() {
  [[ $EUID -eq 0 ]] || die "run as root (the daemons run as root here)"
  for program in munged mungekey slurmctld slurmd sbatch; do
    command -v "$program" >/dev/null \
      || die "$program is missing: apt-get install -y slurmctld slurmd munge"
  done
  [[ -f "$CONF" ]] || write_config
  start_munge
  export SLURM_CONF="$CONF"
  if ! running "$DIR/slurmctld.pid"; then
    slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  fi
  wait_for 30 "slurmctld did not answer" scontrol ping
  if ! running "$DIR/slurmd.pid"; then
    slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
  fi
  wait_for 60 "the node did not come up" \
    bash -c '[[ "$(sinfo -h -N -o %t)" =~ ^(idle|mix|alloc) ]]'
  say "up: $(sinfo -h -o '%P %D node(s) %c CPUs %t')"
  echo "$CONF"
}

stop() {
  export SLURM_CONF="$CONF"
  for pid_file in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    if running "$pid_file"; then
      local pid
      pid="$(cat "$pid_file")"
      kill "$pid"
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pid_file"
  done
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF="$CONF" sinfo ;;
  conf) echo "$CONF" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
