#!/usr/bin/env bash
# A one-node Slurm on this machine, for the tests marked `slurm` (tests/test_slurm.py).
#
#   tests/cluster/local_slurm.sh start    install slurm-wlm + munge if missing (apt-get, as root),
#                                          write a one-node slurm.conf for this host, start munged,
#                                          slurmctld and slurmd, wait until `sinfo` shows the node idle
#   tests/cluster/local_slurm.sh stop     cancel its jobs, stop the daemons, remove everything it
#                                          created (its state dir, the /etc/slurm/slurm.conf link)
#   tests/cluster/local_slurm.sh status   are its daemons running? (sinfo, squeue); exit 0 if so
#
# Everything lives under one state dir ($RMT_LOCAL_SLURM_DIR, default /tmp/rmt-local-slurm):
# slurm.conf, the munge key and socket, spool/state dirs, logs and PID files. munged runs on a
# private socket with a private key, so a system munge (if any) is neither used nor touched.
# Slurm's commands find the config through /etc/slurm/slurm.conf, a link into the state dir made
# only when no such file exists (otherwise export SLURM_CONF=<state dir>/slurm.conf, printed by
# start). `start` is idempotent; `stop` leaves no daemon and no file behind (the apt packages stay).
# Environment: RMT_LOCAL_SLURM_DIR, RMT_LOCAL_SLURM_WAIT (seconds to wait for the node, default 60),
# RMT_LOCAL_SLURM_PORTS ("CTLD,SLURMD", default "6817,6818").
set -euo pipefail

STATE="${RMT_LOCAL_SLURM_DIR:-/tmp/rmt-local-slurm}"
WAIT_S="${RMT_LOCAL_SLURM_WAIT:-60}"
PORTS="${RMT_LOCAL_SLURM_PORTS:-6817,6818}"
CONF="$STATE/slurm.conf"
ETC_DIR=/etc/slurm
ETC_CONF="$ETC_DIR/slurm.conf"
SOCK="$STATE/munge/munge.socket"
KEY="$STATE/munge/munge.key"
DAEMONS=(munged slurmctld slurmd)

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: ERROR: $*" >&2; exit 1; }

pidfile() { echo "$STATE/run/$1.pid"; }

running() {  # running PID: the process exists and is not a zombie (one waiting for its parent to reap it)
    local st
    st="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

alive() {  # alive NAME: the daemon NAME started by this script runs (PID file + live process of that name)
    local f pid
    f="$(pidfile "$1")"
    [[ -s "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] && running "$pid" || return 1
    grep -q "$1" "/proc/$pid/comm" 2>/dev/null
}

node_state() {  # the node's state as sinfo says it ("idle", "mix", ...; empty if sinfo fails)
    SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o %t 2>/dev/null | head -n1 | tr -d ' *~#' || true
}

logs() {  # the last lines of every log (why a start failed)
    local f
    for f in "$STATE"/log/*.log; do
        [[ -f "$f" ]] || continue
        echo "---- $f (last 15 lines)" >&2
        tail -n 15 "$f" >&2
    done
}

install_packages() {
    local missing=()
    command -v munged >/dev/null 2>&1 && command -v mungekey >/dev/null 2>&1 || missing+=(munge)
    for c in slurmctld slurmd sinfo sbatch; do
        command -v "$c" >/dev/null 2>&1 || { missing+=(slurm-wlm); break; }
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $EUID -eq 0 ]] || die "${missing[*]} not installed and not root: run as root (or apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null 2>&1 || die "${missing[*]} not installed and no apt-get on this machine"
    say "installing ${missing[*]} with apt-get"
    # the packages must not start their own daemons (with the default config) on install
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 || {
        apt-get update -q >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 || rc=$?
    }
    [[ $made_policy -eq 1 ]] && rm -f "$policy"
    if [[ $rc -ne 0 ]]; then
        tail -n 20 "$STATE/apt.log" >&2
        die "apt-get install ${missing[*]} failed (exit $rc)"
    fi
    # a munged started by a package's postinst despite the policy would hold the system socket; it
    # is not ours and not used (we run on a private socket), so it is left alone
}

write_conf() {
    local host node ctld_port d_port
    host="$(hostname -s)"
    IFS=, read -r ctld_port d_port <<<"$PORTS"
    # this machine's CPUs, sockets, cores, threads and RealMemory, as slurmd sees them
    node="$(slurmd -C 2>/dev/null | grep '^NodeName=' | sed 's/ UpTime=.*//')" || true
    [[ -n "$node" ]] || die "slurmd -C printed no NodeName line (is slurmd installed and working?)"
    # keep ~5% of the memory (at least 512 MB) for the driver and the OS: Slurm may then hand out
    # the rest without the node draining for 'low RealMemory'
    local mem
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
    if [[ -n "$mem" ]]; then
        local keep=$((mem / 20 > 512 ? mem / 20 : 512))
        node="$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem - keep))/" <<<"$node")"
    fi
    node="$(sed "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" <<<"$node")"
    cat >"$CONF" <<EOF
# written by tests/cluster/local_slurm.sh: a one-node Slurm for the tests (removed by its 'stop')
ClusterName=rmtlocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=30
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

link_etc_conf() {
    if [[ -L $ETC_CONF && "$(readlink "$ETC_CONF")" == "$CONF" ]]; then
        return 0
    fi
    if [[ -e $ETC_CONF || -L $ETC_CONF ]]; then
        say "note: $ETC_CONF exists (not ours): Slurm commands need: export SLURM_CONF=$CONF"
        return 0
    fi
    if [[ ! -d $ETC_DIR ]]; then
        mkdir -p "$ETC_DIR"
        touch "$STATE/made_etc_dir"
    fi
    ln -s "$CONF" "$ETC_CONF"
    touch "$STATE/made_etc_link"
}

start_munged() {
    if [[ ! -s $KEY ]]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$KEY" >/dev/null 2>&1 || dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
        else
            dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
        fi
        chmod 400 "$KEY"
    fi
    munged --socket="$SOCK" --key-file="$KEY" --pid-file="$(pidfile munged)" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" --force \
        || { logs; die "munged did not start"; }
    local i
    for i in $(seq 50); do
        munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    logs
    die "munged started but a credential does not round-trip on $SOCK"
}

cmd_start() {
    if alive munged && alive slurmctld && alive slurmd && [[ "$(node_state)" =~ ^(idle|mix|alloc|comp)$ ]]; then
        say "already running (node $(node_state)); SLURM_CONF=$CONF"
        return 0
    fi
    if [[ -d $STATE ]]; then  # a half-started or dead instance: clean it up first
        say "cleaning up a previous instance in $STATE"
        cmd_stop >/dev/null
    fi
    mkdir -p "$STATE"/{run,log,munge,spool/ctld,spool/d}
    chmod 711 "$STATE/munge"  # the socket reachable by every user, the key (mode 400) by root only
    install_packages
    write_conf
    link_etc_conf
    export SLURM_CONF="$CONF"
    start_munged
    slurmctld -f "$CONF" || { logs; cmd_stop >/dev/null 2>&1; die "slurmctld did not start"; }
    slurmd -f "$CONF" || { logs; cmd_stop >/dev/null 2>&1; die "slurmd did not start"; }
    local t0=$SECONDS st=""
    while ((SECONDS - t0 < WAIT_S)); do
        st="$(node_state)"
        if [[ $st == idle ]]; then
            say "running: node $(hostname -s) idle after $((SECONDS - t0)) s; SLURM_CONF=$CONF"
            SLURM_CONF="$CONF" sinfo -N -o "%N %t %c %m" | sed 's/^/local_slurm:   /'
            return 0
        fi
        for d in "${DAEMONS[@]}"; do
            alive "$d" || { logs; cmd_stop >/dev/null 2>&1; die "$d exited during start-up"; }
        done
        sleep 0.5
    done
    logs
    cmd_stop >/dev/null 2>&1
    die "the node did not become idle within $WAIT_S s (last state: '${st:-sinfo failed}')"
}

ours() {  # PIDs of this instance's job steps: slurmstepd, or a job's process (SLURM_JOB_ID set),
    # carrying this instance's SLURM_CONF (never a shell that merely exported SLURM_CONF)
    local p env
    for p in /proc/[0-9]*; do
        [[ -r $p/environ && ${p#/proc/} != "$$" && ${p#/proc/} != "$BASHPID" ]] || continue
        env="$(tr '\0' '\n' 2>/dev/null <"$p/environ")" || continue
        grep -qx "SLURM_CONF=$CONF" <<<"$env" || continue
        if [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || grep -q '^SLURM_JOB_ID=' <<<"$env"; then
            echo "${p#/proc/}"
        fi
    done
}

stop_pid() {  # stop_pid PID: TERM, wait up to 10 s, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        running "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
    if [[ ! -d $STATE ]]; then
        say "not running (no $STATE)"
        return 0
    fi
    export SLURM_CONF="$CONF"
    if alive slurmctld; then  # cancel every job first, so that slurmd ends their steps
        local jobs
        jobs="$(timeout 10 squeue -h -o %A 2>/dev/null || true)"
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            local i
            for i in $(seq 30); do
                [[ -z "$(timeout 5 squeue -h -t R,CG -o %A 2>/dev/null)" ]] && break
                sleep 0.5
            done
        fi
    fi
    local d pid stopped=()
    for d in slurmd slurmctld munged; do
        if alive "$d"; then
            pid="$(cat "$(pidfile "$d")")"
            stop_pid "$pid"
            stopped+=("$pid")
        fi
    done
    # job steps (slurmstepd and their processes) that outlived slurmd: only this instance's
    for pid in $(ours); do
        kill -KILL "$pid" 2>/dev/null || true
        stopped+=("$pid")
    done
    # the daemons were reparented to PID 1 when they forked: wait (bounded) until it has reaped
    # them, so that no <defunct> entry is left either
    local i left
    for i in $(seq 150); do
        left=0
        for pid in "${stopped[@]}"; do
            [[ -e /proc/$pid ]] && left=1
        done
        [[ $left -eq 0 ]] && break
        sleep 0.1
    done
    [[ $left -eq 0 ]] || say "note: stopped processes not yet reaped by their parent (PID 1): ${stopped[*]}"
    if [[ -f $STATE/made_etc_link && -L $ETC_CONF && "$(readlink "$ETC_CONF")" == "$CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
    if [[ -f $STATE/made_etc_dir ]]; then
        rmdir "$ETC_DIR" 2>/dev/null || true
    fi
    rm -rf "$STATE"
    say "stopped; removed $STATE"
}

cmd_status() {
    local d ok=0
    for d in "${DAEMONS[@]}"; do
        if alive "$d"; then
            say "$d running (PID $(cat "$(pidfile "$d")"))"
        else
            say "$d not running"
            ok=3
        fi
    done
    if [[ $ok -eq 0 ]]; then
        SLURM_CONF="$CONF" sinfo -N -o "%N %t %c %m" | sed 's/^/local_slurm:   /'
        SLURM_CONF="$CONF" squeue | sed 's/^/local_slurm:   /'
    fi
    return $ok
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
