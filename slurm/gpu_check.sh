#!/usr/bin/env bash
# The short GPU check of the CUDA-graphs path:   sbatch slurm/gpu_check.sh [OUT_DIR]   (repository root)
# 1) bench rows that decide cuda_graphs (full-size random-init models): naive / project / ceiling,
#    project+graphs / ceiling+graphs, and the rows the grid estimate needs (x2, eval, random, fixed);
#    SER's positional conv by cuDNN, the bmm and rfft (the *-matmul-pos rows and --posconv);
#    a run's host start-up on this node, so the grid estimate in bench.md includes it;
# 2) the CUDA-only tests (graphed NLI and SER steps vs eager ones), when pytest is installed;
# 3) parity: tiny smoke runs of jobs/cuda_graphs_check.yaml with and without cuda_graphs, side by side.
# Every result lands flat in OUT_DIR (default results/gpu-check).
# Sizes shrink for a CPU dry run: HW5_CHECK_BENCH="--tiny --nli-pairs 64 --ser-clips 16".
#SBATCH --job-name=hw5-gpu-check
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=00:20:00
#SBATCH --output=hw5-gpu-check-%j.out
set -uo pipefail
PYTHON=${HW5_PYTHON:-.venv/bin/python}
OUT_DIR=${1:-results/gpu-check}
SIZES=${HW5_CHECK_BENCH:---nli-pairs 1000 --ser-clips 400}
STARTUP=${HW5_CHECK_STARTUP:-3000}   # clips of the synthetic corpus whose start-up the grid estimate adds
POSCONV=${HW5_CHECK_POSCONV---posconv}     # the positional conv alone by each method (set empty to skip)
POS_ROWS=project-matmul-pos,project+graphs-matmul-pos   # SER: the bmm against the default rfft
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
timeout 480 "$PYTHON" -m hw5 bench $SIZES --repeat 3 --results "$OUT_DIR/b" $POSCONV --startup $STARTUP \
  --paths project-random,project-fixed,project-x2,project-eval,project+graphs,project+graphs-half-step,ceiling+graphs,$POS_ROWS 2>&1 | tee "$OUT_DIR/bench.log"
cp "$OUT_DIR"/b/bench/bench.{json,md} "$OUT_DIR"/ 2>/dev/null
if "$PYTHON" -c "import pytest" 2>/dev/null; then     # the CUDA-only tests: graphs replay like eager steps
  timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_graphs.py -k on_cuda 2>&1 | tail -15 \
    | tee "$OUT_DIR/pytest.txt"
fi
for e in nli-eager nli-graphs ser-eager ser-graphs; do
  timeout 90 "$PYTHON" -m hw5 run "$e" --smoke --force --experiments jobs/cuda_graphs_check.yaml \
    --results "$OUT_DIR/gc" 2>&1 | grep -v '^ *[0-9]*%|'
done | tee "$OUT_DIR/parity.log"
"$PYTHON" - "$OUT_DIR" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
runs = {p.parent.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("gc/*/seed-0/metrics.json"))}
json.dump(runs, open(out / "parity.json", "w"), indent=1)
for name, m in runs.items():
    losses = " ".join(f"{h['train_loss']:.6f}" for h in m["history"])
    t = m["throughput"]
    print(f"{name:10s} train losses {losses}  test acc {m['test']['accuracy']:.4f} loss {m['test']['loss']:.6f}  "
          f"{t['units_per_s']:.0f} {t['unit']}/s  graphs {t.get('cuda_graphs')}")
PY
exit 0
