#!/usr/bin/env bash
# hw5 against the Hugging Face Trainer on one GPU:   sbatch slurm/peer_check.sh [OUT_DIR]   (repository root)
# Full-size random-init models: the three paths, the graphed project path (what the study's NLI runs
# use), NLI with its full last layer (project-all-tokens) and both Trainer peers (eager and
# torch_compile), median of three epochs each; bench.md then holds the hw5 / peer table.
# Needs the bench extra: pip install -e '.[bench]' (accelerate).
# Results land flat in OUT_DIR (default results/peer-check). A CPU dry run: HW5_CHECK_BENCH="--tiny".
#SBATCH --job-name=hw5-peer-check
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=00:20:00
#SBATCH --output=hw5-peer-check-%j.out
set -uo pipefail
PYTHON=${HW5_PYTHON:-.venv/bin/python}
OUT_DIR=${1:-results/peer-check}
SIZES=${HW5_CHECK_BENCH:---nli-pairs 1000 --ser-clips 400}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
timeout 540 "$PYTHON" -m hw5 bench $SIZES --repeat 3 --results "$OUT_DIR/b" \
  --paths project+graphs,project-all-tokens,peer-trainer,peer-trainer+compile 2>&1 | grep -v -i warn | tee "$OUT_DIR/bench.log"
cp "$OUT_DIR"/b/bench/bench.{json,md} "$OUT_DIR"/ 2>/dev/null
exit 0
