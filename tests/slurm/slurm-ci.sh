#!/usr/bin/env bash
# A one-node SLURM cluster for tests: munge + slurmctld + slurmd on localhost, state in
# $SLURM_CI_DIR (default /tmp/sd_mpi-slurm-ci). Needs root and the Debian packages slurm-wlm and
# munge (tools/setup.sh --slurm). Based on the verified recipe in the team's HPC notes.
#   slurm-ci.sh start   → prints "export SLURM_CONF=..." for the caller to eval
#   slurm-ci.sh stop    → stops the daemons by PID
set -euo pipefail
W=${SLURM_CI_DIR:-/tmp/sd_mpi-slurm-ci}
export SLURM_CONF="$W/slurm.conf"

start() {
  stop >/dev/null 2>&1 || true
  mkdir -p "$W"/{state,spool,log}
  local ncpu mem
  ncpu=$(nproc)
  mem=$(awk '/MemTotal/{print int($2/1024*0.9)}' /proc/meminfo)
  cat >"$SLURM_CONF" <<CONF
ClusterName=sdmpici
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
KillWait=5
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey -c
  if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
  fi
  for _ in $(seq 100); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  setsid slurmctld -D -c -i >"$W/log/slurmctld.out" 2>&1 </dev/null & echo $! >"$W/slurmctld.bgpid"
  setsid slurmd -D -N localhost >"$W/log/slurmd.out" 2>&1 </dev/null & echo $! >"$W/slurmd.bgpid"
  for _ in $(seq 300); do
    case "$(sinfo -h -n localhost -o %t 2>/dev/null)" in idle* | mix* | alloc*)
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0 ;;
    esac
    sleep 0.1
  done
  echo "slurm-ci: slurm did not come up" >&2
  tail -n 20 "$W"/log/*.out "$W"/log/*.log >&2 || true
  return 1
}

stop() {
  local pids=() p
  for d in slurmd slurmctld; do [ -f "$W/$d.bgpid" ] && pids+=("$(cat "$W/$d.bgpid")"); done
  [ -f /run/munge/munged.pid ] && pids+=("$(cat /run/munge/munged.pid)")
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$W"/*.bgpid
}

"$@"
