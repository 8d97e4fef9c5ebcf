#!/usr/bin/env bash
# engine.sh - Debian's Docker engine as a local service for CI and tests (root; no init system).
#
#   bash docker/engine.sh start    install docker.io if missing, start dockerd with its own state under
#                                  $HW5_DOCKER_ROOT/engine; idempotent (a running engine is kept)
#   bash docker/engine.sh stop     remove every container, stop dockerd by its PID (never by name)
#   bash docker/engine.sh status   exit 0 when the engine answers
#   eval "$(bash docker/engine.sh env)"   export DOCKER_HOST for the docker CLI
#
# The engine runs without iptables or a bridge (this machine has neither to spare): containers use
# --network host or none. Its socket belongs to group `docker` (mode 660), so a non-root user in that
# group (a SLURM job's user) may run containers, as on a lab cluster that offers Docker.
set -euo pipefail
ROOT=${HW5_DOCKER_ROOT:-/tmp/hw5-docker}
STATE=$ROOT/engine
SOCK=$STATE/docker.sock
PIDFILE=$STATE/dockerd.pid
export DOCKER_HOST=unix://$SOCK
DOCKER=/usr/bin/docker   # Debian's CLI 20.10 (BuildKit built in); a newer CLI on PATH works as well

say() { echo "[engine] $*"; }
answers() { "$DOCKER" version >/dev/null 2>&1; }
alive() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && [ "$(cat /proc/"$(cat "$PIDFILE")"/comm 2>/dev/null)" = dockerd ]; }

cmd_start() {
    [ "$(id -u)" = 0 ] || { echo "engine.sh start must run as root (it starts dockerd)" >&2; exit 1; }
    if ! command -v dockerd >/dev/null || [ ! -x "$DOCKER" ]; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null
        say "installed Debian's docker.io"
    fi
    getent group docker >/dev/null || groupadd --system docker
    mkdir -p "$STATE"
    if alive && answers; then say "dockerd already running (pid $(cat "$PIDFILE"))"; return; fi
    if alive; then kill -TERM "$(cat "$PIDFILE")"; sleep 3; fi   # a half-dead engine left by a killed run
    # nofile: dockerd's default asks for more than this machine's hard limit
    dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$PIDFILE" -H "$DOCKER_HOST" \
        --group docker --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
        --default-ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" >>"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 120); do answers && break; sleep 0.5; done
    answers || { tail -n 20 "$STATE/dockerd.log" >&2; echo "dockerd did not start (log: $STATE/dockerd.log)" >&2; exit 1; }
    say "dockerd up (pid $(cat "$PIDFILE")), socket $SOCK (group docker)"
}

cmd_stop() {
    if answers; then "$DOCKER" ps -aq | xargs -r "$DOCKER" rm -f >/dev/null 2>&1 || true; fi
    if alive; then
        local pid; pid=$(cat "$PIDFILE"); kill -TERM "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        say "dockerd ($pid) stopped"
    fi
    umount "$STATE/exec/netns/default" 2>/dev/null || true
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) answers && say "dockerd answers on $SOCK" ;;
    env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    *) echo "usage: bash docker/engine.sh {start|stop|status|env}" >&2; exit 2 ;;
esac
