#!/usr/bin/env bash
# A one-node Slurm with accounting on 127.0.0.1, for trying and testing the cluster path on one machine.
#   bash experiments/slurm/local_cluster.sh up     # installs what is missing (root, Debian/Ubuntu), starts it,
#                                                  # prints the partition on its last line; again: no-op
#   bash experiments/slurm/local_cluster.sh down   # stops only the daemons this script started (pid files)
# Everything lives in $KGQA_SLURM_DIR (default /tmp/kgqa-slurm): configs, spool, state, logs, the database.
# Clients find the cluster by SLURM_CONF=$KGQA_SLURM_DIR/slurm.conf; when /etc/slurm/slurm.conf is absent
# it is linked there too (removed by down), so plain sbatch/squeue work.
set -euo pipefail
STATE=${KGQA_SLURM_DIR:-/tmp/kgqa-slurm}
PARTITION=${KGQA_SLURM_PARTITION:-debug}
CLUSTER=kgqa
PORT=${KGQA_SLURM_PORT:-6817}          # slurmctld; slurmd, slurmdbd and mariadb use the next three
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)   # stop order
export SLURM_CONF=$STATE/slurm.conf

node_name() {  # one the jobs resolve: DDP's ranks meet at the first node of SLURM_NODELIST
  if getent hosts "$(hostname -s)" >/dev/null; then hostname -s; else echo localhost; fi
}

running() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds, else the daemon's log and exit 1
  local what=$1 seconds=$2; shift 2
  local end=$((SECONDS + seconds))
  while ((SECONDS < end)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "local_cluster: $what did not come up; its log:" >&2; tail -n 20 "$STATE/$what.log" >&2 || true; exit 1
}

install_missing() {
  local need=()
  command -v slurmctld >/dev/null || need+=(slurm-wlm)
  command -v slurmdbd >/dev/null || need+=(slurmdbd)
  command -v munged >/dev/null || need+=(munge)
  command -v mariadbd >/dev/null || need+=(mariadb-server)
  ((${#need[@]})) || return 0
  [[ $(id -u) == 0 ]] || { echo "local_cluster: missing ${need[*]}: install them or run as root" >&2; exit 1; }
  echo "local_cluster: installing ${need[*]}" >&2
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e $policy ]]; then  # the packages' services stay stopped: this script starts its own daemons
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && ours=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  if ((ours)); then rm -f $policy; fi
}

write_configs() {
  local cpus mem host
  cpus=$(nproc); mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10)); host=$(hostname -s)
  node=$(node_name)
  mkdir -p "$STATE"/{ctld,spool,mysql}
  cat >"$STATE/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge.socket,cred_expire=10   # a requeued job waits this long to start again
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
SchedulerParameters=sched_interval=2,bf_interval=1   # jobs start within seconds of submission
KillWait=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$STATE/munge.socket   # for slurmdbd: the munge socket
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
  cat >"$STATE/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$STATE/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=kgqa
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$STATE/slurmdbd.conf"
}

start_munge() {
  running munged && return 0
  if [[ ! -f $STATE/munge.key ]]; then
    dd if=/dev/urandom of="$STATE/munge.key" bs=1024 count=1 2>/dev/null && chmod 400 "$STATE/munge.key"
  fi
  munged --force --socket="$STATE/munge.socket" --key-file="$STATE/munge.key" --pid-file="$STATE/munged.pid" \
    --log-file="$STATE/munged.log" --seed-file="$STATE/munge.seed"
  wait_for munged 10 test -S "$STATE/munge.socket"
}

start_mariadb() {
  running mariadbd && return 0
  if [[ ! -d $STATE/mysql/mysql ]]; then
    mariadb-install-db --user=root --datadir="$STATE/mysql" --auth-root-authentication-method=socket >/dev/null
  fi
  mariadbd --user=root --datadir="$STATE/mysql" --socket="$STATE/mysql.sock" --port=$((PORT + 3)) \
    --bind-address=127.0.0.1 --pid-file="$STATE/mariadbd.pid" --log-error="$STATE/mariadbd.log" </dev/null &>/dev/null &
  wait_for mariadbd 30 mariadb --socket="$STATE/mysql.sock" -e "SELECT 1"
  mariadb --socket="$STATE/mysql.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'kgqa';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurm() {
  if ! running slurmdbd; then
    slurmdbd
    wait_for slurmdbd 30 sacctmgr -n list cluster
  fi
  sacctmgr -n list cluster format=cluster | grep -qw $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
  if ! running slurmctld; then slurmctld; wait_for slurmctld 30 scontrol ping; fi
  if ! running slurmd; then slurmd -N "$(node_name)"; fi
  wait_for slurmd 30 bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
  if [[ ! -e /etc/slurm/slurm.conf && -w /etc ]]; then
    mkdir -p /etc/slurm && ln -s "$SLURM_CONF" /etc/slurm/slurm.conf && touch "$STATE/linked-etc"
  fi
}

down() {
  for d in "${DAEMONS[@]}"; do
    running "$d" || continue
    local pid; pid=$(cat "$STATE/$d.pid")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$STATE/$d.pid"
  done
  if [[ -f $STATE/linked-etc ]]; then
    [[ $(readlink /etc/slurm/slurm.conf) == "$SLURM_CONF" ]] && rm -f /etc/slurm/slurm.conf
    rm -f "$STATE/linked-etc"
  fi
}

case ${1:-} in
  up) install_missing; write_configs; start_munge; start_mariadb; start_slurm; echo "$PARTITION" ;;
  down) down ;;
  *) echo "usage: $0 up|down  (state in \$KGQA_SLURM_DIR, default /tmp/kgqa-slurm)" >&2; exit 2 ;;
esac
