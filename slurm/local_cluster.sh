#!/usr/bin/env bash
# local_cluster.sh - a REAL one-node SLURM cluster on 127.0.0.1 for CI and laptops.
#
#   bash slurm/local_cluster.sh start    install (Debian packages) + start munge, MariaDB, slurmdbd,
#                                        slurmctld, slurmd; idempotent (running daemons are kept)
#   bash slurm/local_cluster.sh stop     cancel all jobs, stop the daemons by PID (never by name)
#   bash slurm/local_cluster.sh stop --purge   ... and delete queue state, accounting DB, logs, configs
#   bash slurm/local_cluster.sh status   which daemons run, sinfo, squeue; exit 0 only when usable
#   eval "$(bash slurm/local_cluster.sh env)"   export SLURM_CONF for sbatch/squeue/sacct
#
# Debian 12: slurm-wlm 22.05, munge 0.5. slurmdbd + a private MariaDB are always started because
# submitit (and `launch.py --status`) read job states through `sacct`. Needs root, no init system.
#
# Two flavours, which can run side by side (own prefix, ports, database, cluster name):
#   default  partitions debug (default, preemptible) + urgent, no accounting enforcement
#   strict   a site unlike the default: accounting enforced (the user's default account `nobudget`
#            may not submit, so jobs must name `hw5lab`; `otherlab` exists but is not allowed on the
#            partition), one partition `a100` (MaxTime 10 min, AllowAccounts), a partition QOS
#            `gpuonly` that refuses jobs without a GPU, cgroup process tracking where the host allows
#
# Env knobs (defaults in brackets; [default | strict] where the flavours differ):
#   SLURM_FLAVOUR [default]        default | strict
#   SLURM_PREFIX [/tmp/hw5-slurm | /tmp/hw5-slurm-strict]  configs, state, logs, pid files, the DB
#   SLURM_FAKE_GPUS [2]            fake gres/gpu devices on the node (0: no GRES) so GPU profiles
#                                  can be exercised: jobs get CUDA_VISIBLE_DEVICES, no real GPU
#   SLURM_FRESH [0]                1: forget all jobs (queue state AND accounting DB) on start
#   SLURM_DB_PORT [3307 | 3308]    loopback TCP port of the private MariaDB
#   SLURM_CGROUPS [0 | auto]       1: enforce --mem/cores/devices with cgroup v1 (host must allow it);
#                                  auto: 1 when the host mounts cgroup v1 memory + devices controllers
#   SLURM_APPTAINER [0]            1: give the node an `apptainer` (TEST ONLY, see apptainer_node below):
#                                  Debian sid's real apptainer in a root filesystem, entered through
#                                  slurm/apptainer_shim.sh, installed as /usr/local/bin/apptainer
#   SLURM_APPTAINER_ROOT [/tmp/hw5-apptainer/rootfs]   that root filesystem (made once, ~20 s)
#   SLURM_APPTAINER_BINDS [auto]   host folders visible to apptainer (auto: every top-level folder
#                                  that is not the OS's, as a real node sees them)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

FLAVOUR=${SLURM_FLAVOUR:-default}
case "$FLAVOUR" in
  default) CLUSTER=local PORT0=6817 DEF_PREFIX=/tmp/hw5-slurm DEF_DB_PORT=3307 DEF_CGROUPS=0 ;;
  strict) CLUSTER=strict PORT0=6827 DEF_PREFIX=/tmp/hw5-slurm-strict DEF_DB_PORT=3308 DEF_CGROUPS=auto ;;
  *) echo "SLURM_FLAVOUR must be default or strict, not '$FLAVOUR'" >&2; exit 2 ;;
esac
PREFIX=${SLURM_PREFIX:-$DEF_PREFIX}
FAKE_GPUS=${SLURM_FAKE_GPUS:-2}
FRESH=${SLURM_FRESH:-0}
DB_PORT=${SLURM_DB_PORT:-$DEF_DB_PORT}
CGROUPS=${SLURM_CGROUPS:-$DEF_CGROUPS}
if [ "$CGROUPS" = auto ]; then
  if [ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/devices ]; then CGROUPS=1; else CGROUPS=0; fi
fi
CTLD_PORT=$PORT0 SLURMD_PORT=$((PORT0 + 1)) DBD_PORT=$((PORT0 + 2))
DB_PASS=slurmlocal   # loopback-only throwaway DB; not a secret
ETC=$PREFIX/etc RUN=$PREFIX/run LOG=$PREFIX/log STATE=$PREFIX/state DB=$PREFIX/mysql
export SLURM_CONF=$ETC/slurm.conf
T0=$EPOCHREALTIME

say() { printf '[local_cluster %5ss] %s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{printf "%.1f", a-b}')" "$*"; }
die() { say "ERROR: $*"; for f in "$LOG"/*.log; do [ -f "$f" ] && { echo "--- tail $f"; tail -n 20 "$f"; }; done; exit 1; }
# alive and not a zombie (PID 1 in containers may reap orphans late)
running() { local st; st=$(sed 's/.*) //' /proc/"$1"/stat 2>/dev/null | cut -d' ' -f1); [ -n "$st" ] && [ "$st" != Z ]; }
# pid_alive PIDFILE COMM: the pid in PIDFILE runs and really is COMM (pid files can be stale)
pid_alive() { local p; [ -s "$1" ] || return 1; p=$(cat "$1"); [ -n "$p" ] && running "$p" && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ]; }
wait_for() { # wait_for SECONDS DESC CMD...
  local t=$1 d=$2; shift 2; local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$end" ] || die "timeout waiting for $d"; sleep 0.2; done; }
# stop_pid PIDFILE COMM: SIGTERM, wait up to 30 s, then SIGKILL; only if the pid really is COMM
stop_pid() {
  local f=$1 comm=$2 p
  pid_alive "$f" "$comm" || { rm -f "$f"; return 0; }
  p=$(cat "$f"); kill -TERM "$p"
  for _ in $(seq 1 300); do running "$p" || break; sleep 0.1; done
  if running "$p"; then kill -KILL "$p"; say "$comm ($p) SIGKILLed after 30 s"; else say "$comm ($p) stopped"; fi
  rm -f "$f"
}

install_packages() {
  local p missing=""
  local wanted="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
  [ "${SLURM_APPTAINER:-0}" != 1 ] || wanted="$wanted sudo mmdebstrap"
  for p in $wanted; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    say "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  say "packages ok (slurm $(dpkg-query -W -f='${Version}' slurmctld))"
}

write_gres_conf() {
  if [ "$FAKE_GPUS" -le 0 ]; then rm -f "$ETC/gres.conf"; return; fi
  # slurmd drops a GPU without a device file; char major 240 is "local/experimental" (not /dev/null,
  # which ConstrainDevices would then deny to every job)
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    [ -c "$PREFIX/dev/fakegpu$i" ] && [ "$(stat -c %t "$PREFIX/dev/fakegpu$i")" = f0 ] \
      || { rm -f "$PREFIX/dev/fakegpu$i"; mknod -m 666 "$PREFIX/dev/fakegpu$i" c 240 "$i"; }
  done
  printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/dev/fakegpu[0-%d]\n' \
    "$NODE" "$PREFIX" $((FAKE_GPUS - 1)) > "$ETC/gres.conf"
}

write_slurm_conf() {
  local topo mem_mb proctrack gres_node="" grestypes="" enforce=""
  [ "$FLAVOUR" = strict ] && enforce="AccountingStorageEnforce=associations,limits,qos
FirstJobId=100000"
  topo=$(slurmd -C | head -n1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')   # real topology
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2/1024*0.8}' /proc/meminfo)     # 80% of RAM for jobs
  [ "$FAKE_GPUS" -gt 0 ] && gres_node="Gres=gpu:$FAKE_GPUS" grestypes="GresTypes=gpu"
  if [ "$CGROUPS" = 1 ]; then
    proctrack=$'ProctrackType=proctrack/cgroup\nTaskPlugin=task/cgroup,task/affinity'
    printf '%s\n' CgroupPlugin=autodetect ConstrainCores=yes ConstrainRAMSpace=yes \
      ConstrainDevices=yes > "$ETC/cgroup.conf"
  else
    proctrack=$'ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none'
    rm -f "$ETC/cgroup.conf"
  fi
  cat > "$ETC/slurm.conf" <<EOF
# one-node localhost cluster, generated by slurm/local_cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
# how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$proctrack
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
$enforce
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# fast scheduling passes: pending and requeued jobs start within ~1-2 s
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
KillWait=5
ReturnToService=2
JobRequeue=1
# jobs in 'urgent' preempt (requeue) jobs in 'debug'; GraceTime + preempt_send_user_signal first
# send the victim its --signal (submitit: USR2) so it can checkpoint instead of a bare SIGTERM
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
$grestypes
NodeName=$NODE NodeAddr=127.0.0.1 $topo RealMemory=$mem_mb $gres_node State=UNKNOWN
$(partitions)
EOF
}

partitions() {
  if [ "$FLAVOUR" = default ]; then
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30"
    echo "PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2"
    return
  fi
  # the partition QOS can exist only after slurmctld registered gres/gpu: added on the second pass
  local qos=""; [ -f "$ETC/.qos_ready" ] && qos=" QOS=gpuonly"
  echo "PartitionName=a100 Nodes=ALL Default=YES MaxTime=10 State=UP GraceTime=30 AllowAccounts=hw5lab,nobudget$qos"
}

# strict flavour: accounts, the user's associations and the GPU-only QOS (idempotent)
setup_accounting() {
  local me; me=$(id -un)
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i -Q add account nobudget,hw5lab,otherlab cluster="$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i -Q add user "$me" account=nobudget,hw5lab,otherlab defaultaccount=nobudget \
    cluster="$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i -Q modify user "$me" where account=nobudget cluster="$CLUSTER" set MaxSubmitJobs=0 >/dev/null || true
  sacctmgr -n -P show qos gpuonly format=name | grep -q gpuonly \
    || sacctmgr -i -Q add qos gpuonly MinTRESPerJob=gres/gpu=1 Flags=DenyOnLimit >/dev/null \
    || die "could not create QOS gpuonly (gres/gpu not registered yet?)"
  if [ ! -f "$ETC/.qos_ready" ]; then
    touch "$ETC/.qos_ready"; write_slurm_conf; scontrol reconfigure
    wait_for 30 "partition QOS" sh -c 'scontrol show partition a100 | grep -q "QoS=gpuonly"'
  fi
  say "accounting: default account nobudget (MaxSubmitJobs=0), hw5lab allowed on a100, otherlab not; QOS gpuonly"
}

# A node-side `apptainer` for the jobs (SLURM_APPTAINER=1), test only. Debian 12 does not package
# apptainer; Debian sid does. Its rootfs comes from the host's own Debian mirror (mmdebstrap), and the
# shim enters it for each call (see slurm/apptainer_shim.sh for why each piece is there):
#   - sudo with a NOPASSWD rule for the shim alone: a user's job needs root to enter a mount namespace;
#   - /dev/fuse world-usable, as on a Debian node (0666), so apptainer mounts a SIF with squashfuse
#     instead of unpacking it on every run.
apptainer_node() {
  local root=${SLURM_APPTAINER_ROOT:-/tmp/hw5-apptainer/rootfs}
  local binds=${SLURM_APPTAINER_BINDS:-auto} uri
  command -v sudo >/dev/null && command -v mmdebstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sudo mmdebstrap >/dev/null; }
  if [ ! -x "$root/usr/bin/apptainer" ]; then
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    rm -rf "$root.partial"; mkdir -p "$(dirname "$root")"
    mmdebstrap --variant=apt --include=apptainer,squashfuse,fuse3,ca-certificates,mount,util-linux,passwd \
      --aptopt='Acquire::Check-Valid-Until "false"' --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      --customize-hook='printf "127.0.0.1 localhost\n" > "$1/etc/hosts"' \
      sid "$root.partial" "deb $uri sid main" >"$LOG/apptainer-rootfs.log" 2>&1 \
      || die "could not make apptainer's root filesystem (log: $LOG/apptainer-rootfs.log)"
    mv "$root.partial" "$root"
  fi
  sed -e "s|^ROOT=.*|ROOT=$root|" -e "s|^BINDS=.*|BINDS=$binds|" "$HERE/apptainer_shim.sh" > /usr/local/bin/apptainer.new
  chmod 0755 /usr/local/bin/apptainer.new && mv /usr/local/bin/apptainer.new /usr/local/bin/apptainer
  printf 'Defaults!/usr/local/bin/apptainer !use_pty\nALL ALL=(root) NOPASSWD:SETENV: /usr/local/bin/apptainer\n' \
    > /etc/sudoers.d/hw5-apptainer
  chmod 0440 /etc/sudoers.d/hw5-apptainer
  [ ! -c /dev/fuse ] || chmod 0666 /dev/fuse
  say "apptainer on the node: $(apptainer --version 2>/dev/null) (test shim -> $root)"
}

conf_sum() { { cat "$ETC/slurm.conf" "$ETC/gres.conf" "$ETC/cgroup.conf" 2>/dev/null || true; } | md5sum; }

start_munge() {
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
  mkdir -p /var/lib/munge /var/log/munge /run/munge
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then say "munged already running"; return; fi
  runuser -u munge -- /usr/sbin/munged --force   # daemonizes; pid in /run/munge/munged.pid
  wait_for 10 munged sh -c 'munge -n | unmunge'
  say "munged started (pid $(cat /run/munge/munged.pid))"
}

start_mariadb() {
  local sock=$DB/run/mysqld.sock
  mkdir -p "$DB/data" "$DB/run"; chown -R mysql:mysql "$DB"
  if [ ! -d "$DB/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --basedir=/usr --datadir="$DB/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install-db.log" 2>&1 \
      || die "mariadb-install-db failed"
  fi
  if pid_alive "$DB/run/mysqld.pid" mariadbd; then
    say "mariadbd already running"
  else
    nohup /usr/sbin/mariadbd --no-defaults --user=mysql --basedir=/usr --datadir="$DB/data" \
      --socket="$sock" --pid-file="$DB/run/mysqld.pid" --log-error="$DB/run/mysqld.err" \
      --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 >/dev/null 2>&1 &
    wait_for 60 mariadbd mariadb --no-defaults --socket="$sock" -uroot -e 'select 1'
    say "mariadbd started (pid $(cat "$DB/run/mysqld.pid"))"
  fi
  mariadb --no-defaults --socket="$sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
  cat > "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"     # slurmdbd refuses a group/world readable config
  if pid_alive "$RUN/slurmdbd.pid" slurmdbd; then say "slurmdbd already running"; return; fi
  slurmdbd || die "slurmdbd failed to start"   # reads slurmdbd.conf next to $SLURM_CONF
  wait_for 60 slurmdbd sacctmgr -n -P show cluster
  say "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
}

start_slurm_daemons() {
  local conf_changed=$1
  if [ "$conf_changed" = 1 ] && { pid_alive "$RUN/slurmctld.pid" slurmctld || pid_alive "$RUN/slurmd.pid" slurmd; }; then
    say "config changed: restarting slurmctld and slurmd"
    stop_pid "$RUN/slurmd.pid" slurmd; stop_pid "$RUN/slurmctld.pid" slurmctld
  fi
  pid_alive "$RUN/slurmctld.pid" slurmctld || slurmctld -f "$SLURM_CONF" || die "slurmctld failed to start"
  wait_for 60 slurmctld sh -c 'scontrol ping | grep -q UP'
  say "slurmctld up (pid $(cat "$RUN/slurmctld.pid"))"
  pid_alive "$RUN/slurmd.pid" slurmd || slurmd -f "$SLURM_CONF" || die "slurmd failed to start"
  wait_for 30 slurmd pid_alive "$RUN/slurmd.pid" slurmd
  say "slurmd up (pid $(cat "$RUN/slurmd.pid"))"
}

wait_node_ready() {
  local state=""
  for _ in $(seq 1 150); do
    state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n1)
    case "$state" in
      idle|mixed|allocated|completing) say "cluster ready: node $NODE is $state"; return ;;
      # a node left DRAIN/DOWN by an earlier bad config does not come back by itself
      *drain*|*down*|inval*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
  done
  die "node $NODE is '$state'"
}

cmd_start() {
  [ "$(id -u)" = 0 ] || { echo "local_cluster.sh start must run as root (it installs packages and starts daemons)" >&2; exit 1; }
  install_packages
  NODE=$(hostname -s)
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/d" "$PREFIX/dev"
  [ "${SLURM_APPTAINER:-0}" != 1 ] || apptainer_node
  local old_sum; old_sum=$(conf_sum)
  if [ "$FRESH" = 1 ]; then
    # wiping only the queue restarts job ids at 1 while the DB keeps old rows with the same ids
    cmd_stop_daemons; rm -rf "${STATE:?}/ctld"/* "${STATE:?}/d"/* "${DB:?}" "$ETC/.qos_ready"
  fi
  write_gres_conf; write_slurm_conf
  local changed=0; [ "$(conf_sum)" = "$old_sum" ] || changed=1
  start_munge; start_mariadb; start_slurmdbd; start_slurm_daemons "$changed"; wait_node_ready
  if [ "$FLAVOUR" = strict ]; then setup_accounting; fi
  sinfo
  echo "export SLURM_CONF=$SLURM_CONF"
}

cmd_stop_daemons() {   # reverse start order
  stop_pid "$RUN/slurmd.pid" slurmd
  stop_pid "$RUN/slurmctld.pid" slurmctld      # its child slurmscriptd exits with it
  stop_pid "$RUN/slurmdbd.pid" slurmdbd
  stop_pid "$DB/run/mysqld.pid" mariadbd
  # munged is shared by both flavours: keep it while the other flavour's daemons run
  local other=/tmp/hw5-slurm-strict
  [ "$FLAVOUR" = strict ] && other=/tmp/hw5-slurm
  if pid_alive "$other/run/slurmctld.pid" slurmctld || pid_alive "$other/run/slurmd.pid" slurmd; then
    say "munged kept (the other flavour's cluster under $other uses it)"
  else stop_pid /run/munge/munged.pid munged; fi
}

cmd_stop() {
  # cancel jobs first so no job process outlives slurmd
  if pid_alive "$RUN/slurmctld.pid" slurmctld; then
    local jobs; jobs=$(squeue -h -o %A 2>/dev/null | sort -u)
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $(echo $jobs)"; scancel $jobs 2>/dev/null || true
      for _ in $(seq 1 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  cmd_stop_daemons
  if [ "${1:-}" = "--purge" ]; then
    rm -rf "${PREFIX:?}/state" "${DB:?}" "${PREFIX:?}/log" "${RUN:?}" "${ETC:?}" "${PREFIX:?}/dev"
    say "purged state under $PREFIX"
  fi
}

cmd_status() {
  local ok=0 pair
  for pair in "/run/munge/munged.pid munged" "$DB/run/mysqld.pid mariadbd" "$RUN/slurmdbd.pid slurmdbd" \
              "$RUN/slurmctld.pid slurmctld" "$RUN/slurmd.pid slurmd"; do
    set -- $pair
    if pid_alive "$1" "$2"; then echo "$2: running (pid $(cat "$1"))"; else echo "$2: not running"; ok=1; fi
  done
  [ "$ok" = 0 ] || { echo "cluster is not (fully) up: bash slurm/local_cluster.sh start"; return 1; }
  sinfo; squeue
}

case "${1:-}" in
  start) cmd_start ;;
  stop) shift; cmd_stop "${1:-}" ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: bash slurm/local_cluster.sh {start|stop [--purge]|status|env}" >&2; exit 2 ;;
esac
