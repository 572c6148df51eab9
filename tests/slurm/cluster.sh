#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for testing profiles/slurm for real.
#
#   tests/slurm/cluster.sh install   apt-get the Debian packages (slurmctld slurmd slurm-client munge)
#   tests/slurm/cluster.sh start     write /etc/slurm/{slurm,gres}.conf, start munged, slurmctld, slurmd
#   tests/slurm/cluster.sh status    sinfo + squeue of the running cluster
#   tests/slurm/cluster.sh stop      cancel its jobs, stop exactly the daemons `start` started
#
# Needs root on Debian (12). Everything the daemons write (pid files, logs, spool, the munge
# socket) lives under $DUSTPRED_SLURM_STATE (default /run/dustpred-slurm); only slurm.conf and
# gres.conf go to /etc/slurm, because the executor plugin's job step strips SLURM_* variables,
# so a SLURM_CONF pointing elsewhere would not reach `srun` inside the job.
#
# The cluster: partitions `cpu` (default) and `gpu` on one node `dustnode` with four declared GPUs
# (gres.conf File=/dev/null,..., AutoDetect=off: there is no GPU, but Slurm accounts for them and
# sets CUDA_VISIBLE_DEVICES in the job). The node is declared with 16 CPUs and 64 GB whatever the
# machine has (SlurmdParameters=config_overrides), so the profile's real requests are accepted as
# a user's cluster would accept them; nothing enforces them (no cgroups), which is fine for the
# tiny test config. No slurmdbd: `sacct` does not work, so the profile's tests use
# `slurm-status-command: squeue`, and MinJobAge keeps finished jobs visible to squeue/scontrol for
# an hour. JobCompType=jobcomp/filetxt writes one line per finished job (state, partition, TRES)
# to $DUSTPRED_SLURM_STATE/jobcomp.log: the test's record of what ran through Slurm.
set -euo pipefail

STATE=${DUSTPRED_SLURM_STATE:-/run/dustpred-slurm}
CONF_DIR=/etc/slurm
MARKER="# written by dustpred tests/slurm/cluster.sh"
NODE=dustnode
PACKAGES=(slurmctld slurmd slurm-client munge)

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (found uid $(id -u))"
}

install() {
    need_root
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null; then
        echo "cluster.sh: Slurm and munge already installed"
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found: installing needs Debian/Ubuntu"
    # The packages' postinst scripts would start daemons only under systemd; we start our own.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

# True if the pid file names a live process whose executable is $2 (so a stale pid file whose
# number was reused by another process is never acted on).
alive() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(</proc/"$pid"/comm) == "$name"* ]]
}

write_config() {
    local host
    host=$(hostname -s)
    for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"; do
        if [[ -e $f ]] && ! grep -qF "$MARKER" "$f"; then
            die "$f exists and was not written by this script; refusing to overwrite a real cluster's config"
        fi
    done
    mkdir -p "$CONF_DIR"
    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
ClusterName=dustpred
# slurmctld only runs where SlurmctldHost is this host's short name.
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket.2
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
# Start each batch job as soon as it is submitted (the default waits up to 3 s).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that gives no memory takes the whole node.
DefMemPerCPU=1000
# Finished jobs stay visible to squeue/scontrol for an hour: the plugin's squeue status check
# needs them well beyond its polling interval, and the tests read them afterwards.
MinJobAge=3600
KillWait=5
MailProg=/bin/true
InactiveLimit=0
Waittime=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
GresTypes=gpu
# Use the declared sizes below, not the machine's, so that real profile requests fit.
SlurmdParameters=config_overrides
NodeName=$NODE NodeHostname=$host NodeAddr=127.0.0.1 CPUs=16 RealMemory=64000 Gres=gpu:4 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
# No real GPU: character devices stand in (a node whose GPU has no File= goes INVAL). Four,
# so that the DAG's GPU jobs (trainings, predictions, template) do not queue behind each other.
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null,/dev/zero,/dev/full,/dev/urandom
EOF
}

start() {
    need_root
    for d in munged slurmctld slurmd; do
        if alive "$(pidfile $d)" "$d"; then
            die "$d from an earlier start is still running (pid $(<"$(pidfile $d)")); run '$0 stop' first"
        fi
    done
    command -v slurmctld >/dev/null || die "slurmctld not installed; run '$0 install' first"
    write_config
    rm -rf "$STATE"
    mkdir -p "$STATE/slurmctld" "$STATE/slurmd" "$STATE/munge"
    chmod 755 "$STATE"
    # munged runs as munge; it refuses a socket directory others can write, and clients (every
    # job's srun) need to reach the socket, so the directory is 0755.
    chown munge:munge "$STATE/munge"
    chmod 755 "$STATE/munge"
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 600 /etc/munge/munge.key
    fi
    runuser -u munge -- munged --socket="$STATE/munge/munge.socket.2" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log"
    slurmctld
    slurmd -N "$NODE"
    if ! wait_idle; then
        stop
        die "cluster did not come up; logs in $STATE"
    fi
    echo "cluster.sh: cluster up (state in $STATE)"
}

pidfile() {
    case $1 in
    munged) echo "$STATE/munge/munged.pid" ;;
    *) echo "$STATE/$1.pid" ;;
    esac
}

# Wait until the node registered and is idle, or show why not.
wait_idle() {
    local state=""
    for _ in $(seq 1 60); do
        state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1 || true)
        [[ $state == idle ]] && return 0
        sleep 0.5
    done
    echo "cluster.sh: node $NODE is '${state:-unreachable}' after 30 s" >&2
    scontrol show node "$NODE" >&2 || true
    tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
    return 1
}

stop_daemon() {
    local name=$1 file pid
    file=$(pidfile "$name")
    if ! alive "$file" "$name"; then
        rm -f "$file"
        return 0
    fi
    pid=$(<"$file")
    kill -TERM "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "cluster.sh: $name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
        kill -KILL "$pid" || true
    fi
    rm -f "$file"
    echo "cluster.sh: stopped $name (pid $pid)"
}

stop() {
    need_root
    # Jobs first, while slurmctld and slurmd can still clean up their slurmstepd processes.
    if alive "$(pidfile slurmctld)" slurmctld; then
        local jobs
        jobs=$(squeue -h -t PENDING,CONFIGURING,RUNNING,SUSPENDED -o %A 2>/dev/null || true)
        # shellcheck disable=SC2086 # one argument per job id
        [[ -z $jobs ]] || scancel $jobs || true
        for _ in $(seq 1 50); do
            [[ -z $(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
}

status() {
    sinfo
    squeue -t all -o '%.6i %.9P %.10T %.8M %.30k %b'
}

case ${1:-} in
install) install ;;
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 install|start|stop|status" ;;
esac
