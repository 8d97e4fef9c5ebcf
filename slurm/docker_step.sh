#!/usr/bin/env bash
# docker_step.sh - one SLURM job step inside the hw5 image with docker or podman (container.kind: docker).
# The launcher composes the call (jobs/container.py); srun starts it on the node:
#
#   docker_step.sh ENGINE gpus|nogpus [run options...] IMAGE COMMAND...
#
# A docker container is the engine's child, not the job's: SLURM's limits do not reach it, and killing
# the job leaves it running. So this step
#   - names the container after the job (<job name>-<job id>) and runs it as the submitting uid:gid
#     (podman: --userns=keep-id, cgroupfs, so it stays inside the job's processes);
#   - gives it the job's GPUs (SLURM_STEP_GPUS / SLURM_JOB_GPUS), CPUs and memory (SLURM_MEM_PER_NODE);
#   - passes SLURM_* and SUBMITIT_* by name (the job's identity, which submitit reads);
#   - forwards USR1 and USR2 to the container, where tini (--init) hands them to Python, once each
#     (the client's own forwarding is off, so a signal that reaches both is not delivered twice);
#   - on TERM or INT (scancel, the time limit) passes the signal on, gives Python STOP_GRACE_S to end,
#     then removes the container, all before SLURM's KillWait ends this script;
#   - removes the container when the step ends in any other way (--rm covers a normal end).
# Its exit status is the container's.
set -uo pipefail
engine=${1:?usage: docker_step.sh ENGINE gpus|nogpus [run options...] IMAGE COMMAND...}
gpus=${2:?usage: docker_step.sh ENGINE gpus|nogpus [run options...] IMAGE COMMAND...}
shift 2
: "${SLURM_JOB_ID:?docker_step.sh runs as a SLURM job step (srun)}"
STOP_GRACE_S=${HW5_STOP_GRACE_S:-3}   # below KillWait (30 s by default, 5 s on slurm/local_cluster.sh)
name=$(printf '%s-%s' "${SLURM_JOB_NAME:-hw5}" "$SLURM_JOB_ID" | tr -c 'a-zA-Z0-9_.-' '_')

global=()
opts=(--rm --init --sig-proxy=false --name "$name" --network host)
if [ "$engine" = podman ]; then
    global=(--cgroup-manager=cgroupfs)
    opts+=(--userns=keep-id)
else
    opts+=(--user "$(id -u):$(id -g)")
fi
[ -z "${SLURM_CPUS_PER_TASK:-}" ] || opts+=(--cpus "$SLURM_CPUS_PER_TASK")
[ -z "${SLURM_MEM_PER_NODE:-}" ] || opts+=(--memory "${SLURM_MEM_PER_NODE}m")
if [ "$gpus" = gpus ]; then
    devices=${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}
    if [ -z "$devices" ]; then
        echo "docker_step.sh: the job asked for GPUs but SLURM named none (SLURM_STEP_GPUS, SLURM_JOB_GPUS)" >&2
        exit 2
    fi
    opts+=(--gpus "\"device=$devices\"")
fi
for var in $(compgen -e); do
    case $var in SLURM_*|SUBMITIT_*) opts+=(-e "$var") ;; esac
done

running() { [ -n "$("$engine" ps -q --filter "name=^${name}\$" 2>/dev/null)" ]; }
remove() { "$engine" rm -f "$name" >/dev/null 2>&1 || true; }
forward() { "$engine" kill --signal "$1" "$name" >/dev/null 2>&1 || true; }
stop() {
    forward "$1"
    for _ in $(seq $((STOP_GRACE_S * 10))); do running || break; sleep 0.1; done
    remove
}

"$engine" "${global[@]}" run "${opts[@]}" "$@" &
client=$!
trap 'forward USR1' USR1
trap 'forward USR2' USR2
trap 'stop TERM; exit 143' TERM
trap 'stop INT; exit 130' INT
trap remove EXIT
# `wait` returns early when a trapped signal arrives; wait again until the client itself has ended
while :; do
    wait "$client"
    rc=$?
    kill -0 "$client" 2>/dev/null || break
done
exit "$rc"
