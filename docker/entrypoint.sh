#!/bin/sh
# Entry point of the hw5 image: `docker run hw5 run nli-full --seed 0` == `python -m hw5 run nli-full --seed 0`.
# A first word that is a program on PATH (bash, python, hw5) runs as given, for debugging and for
# launchers that pass a full command line; anything else goes to the hw5 CLI, whose own error
# message names the valid subcommands.
set -eu

# An arbitrary uid (docker --user, Apptainer, pyxis) may come with a HOME it cannot write to.
if [ ! -w "${HOME:-/nonexistent}" ]; then
    export HOME=/tmp
fi

case "${1:-}" in
    run|stats|prepare|bench|-*|"")
        exec python -m hw5 "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec python -m hw5 "$@"
