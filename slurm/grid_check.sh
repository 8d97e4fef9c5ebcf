#!/usr/bin/env bash
# One seed of every experiment through jobs/launch.py with packed jobs, timed end to end; then aggregate.py.
#   bash slurm/grid_check.sh            # a GPU node: full-size random-init models (no hub), real FarsTail,
#                                       # 3,000 synthetic clips with ShEMO's durations
#   bash slurm/grid_check.sh --tiny     # a CPU: the smoke slice
# Writes <results>/grid_check.{json,md} (default results/grid-check/); options: --help.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
exec "$python" jobs/grid_check.py "$@"
