#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the Slurm sweep test
# (crates/qat-cli/tests/slurm.rs) and for trying `qat sweep --launcher slurm` by hand.
#
#   bash scripts/slurm_local.sh start   # install slurm-wlm + munge if missing (Debian, root), start
#   bash scripts/slurm_local.sh stop
#
# slurmctld and slurmd run on localhost with the machine's CPUs and memory, no accounting
# database (sacct has nothing to say; squeue does), process tracking without cgroups (works in
# containers). The config goes to /etc/slurm/slurm.conf, where Slurm's commands look for it.
# `start` is idempotent: a cluster that already answers is left as it is.
set -euo pipefail
state=/var/lib/qat-slurm
conf=/etc/slurm/slurm.conf

answers() { timeout 10 sinfo -h >/dev/null 2>&1; }

start() {
  if command -v sinfo >/dev/null && answers; then
    echo "slurm_local: a cluster already answers"; return 0
  fi
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "slurm_local: installing Slurm needs root (apt-get)" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
  fi
  mkdir -p "$state"/{ctld,d} /etc/slurm /var/log/slurm /run/munge /etc/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
  chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || munged --force
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$conf" <<EOF
# Written by qat's scripts/slurm_local.sh: a one-node test cluster.
ClusterName=qat-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=30
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  slurmctld
  slurmd
  for _ in $(seq 1 30); do
    if answers && sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'; then
      echo "slurm_local: cluster up ($host, $cpus CPUs, $mem MB)"; return 0
    fi
    sleep 1
  done
  echo "slurm_local: the cluster did not come up; logs in /var/log/slurm" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
}

stop() {
  pkill -x slurmd || true
  pkill -x slurmctld || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
