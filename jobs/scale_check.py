"""How the launcher's --status and --dry-run and aggregate.py grow with the number of runs.

    python jobs/scale_check.py                          # 1,000 / 2,500 / 5,000 runs, under /tmp
    python jobs/scale_check.py --runs 200,400 --out DIR

For each size it writes a synthetic results tree in the smoke layout: the study's experiments with as
many seeds as make up the size, nine in ten runs done (each metrics.json a copy of a real smoke run's,
with its own experiment, seed, resolved config, config hash and data fingerprint, its scores moved a
little), one in ten never run. Then it times each command in a process of its own and reads that
process's peak memory (wait4). It writes scale_check.json and scale_check.md beside the trees: seconds,
MB and seconds per thousand runs, which stay about level when the cost grows linearly.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parent.parent) not in sys.path:   # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw5.config import DEFAULT_GRID, REPO_ROOT, config_dict, config_hash, load_grid  # noqa: E402
from hw5.contract import data_fingerprint  # noqa: E402
from hw5.io import write_json_atomic, write_text_atomic  # noqa: E402

TEMPLATES = {"nli": "nli-full", "ser": "ser-mean"}     # one real smoke run per task, copied for every run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python jobs/scale_check.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--runs", default="1000,2500,5000", help="tree sizes, comma-separated (default: 1000,2500,5000)")
    p.add_argument("--out", type=Path, default=None, help="where the trees and the report go (default: a temp folder)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("HW5_DATA_DIR", "data")))
    p.add_argument("--templates", type=Path, default=None, metavar="DIR",
                   help="nli_metrics.json and ser_metrics.json to copy (default: one real smoke run per task)")
    return p.parse_args(argv)


def templates(out: Path, data_dir: Path) -> dict[str, dict]:
    """metrics.json of one real smoke run per task (made once, under out/templates)."""
    found = {}
    for task, experiment in TEMPLATES.items():
        path = out / "templates" / "smoke" / experiment / "seed-0" / "metrics.json"
        if not path.is_file():
            subprocess.run([sys.executable, "-m", "hw5", "run", experiment, "--seed", "0", "--smoke",
                            "--results", str(out / "templates"), "--data-dir", str(data_dir),
                            "--checkpoint-dir", str(out / "templates-ckpt" / experiment)],
                           check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
        found[task] = json.loads(path.read_text())
    return found


def write_tree(root: Path, runs: int, models: dict[str, dict], data_dir: Path) -> tuple[int, int]:
    """A smoke tree of about `runs` runs; (runs, seeds per experiment)."""
    grid = load_grid(DEFAULT_GRID)
    seeds = max(1, round(runs / len(grid.experiments)))
    rng = random.Random(0)
    for experiment in grid.experiments:
        cfg = grid.resolve(experiment, smoke=True)
        fingerprint = data_fingerprint(cfg, data_dir)
        base = models[cfg.task]
        for seed in range(seeds):
            if rng.random() < 0.1:          # never run: missing
                continue
            metrics = copy.deepcopy(base)
            metrics.update(experiment=experiment, seed=seed, smoke=True, config=config_dict(cfg),
                           config_hash=config_hash(cfg), data=fingerprint)
            for key in ("accuracy", "macro_f1", "weighted_f1", "uar"):
                metrics["test"][key] = min(1.0, max(0.0, metrics["test"][key] + rng.uniform(-0.05, 0.05)))
            write_json_atomic(root / "smoke" / experiment / f"seed-{seed}" / "metrics.json", metrics)
    return len(grid.experiments) * seeds, seeds


def timed(command: list[str]) -> dict:
    """Seconds and peak memory (MB) of one command, in a process of its own."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0 and os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_mb": round(usage.ru_maxrss / 1024, 1)}


def measure(root: Path, seeds: int, data_dir: Path) -> dict:
    launch = [sys.executable, str(REPO_ROOT / "jobs" / "launch.py"), "--all", "--smoke", "--results", str(root),
              "--seeds", f"0-{seeds - 1}", "--data-dir", str(data_dir), "--yes"]
    return {"status": timed([*launch, "--status"]),
            "dry_run": timed([*launch, "--dry-run", "--cluster", "local"]),
            "aggregate": timed([sys.executable, str(REPO_ROOT / "aggregate.py"), "--smoke", "--results", str(root),
                                "--seeds", f"0-{seeds - 1}", "--data-dir", str(data_dir)])}


def markdown(rows: list[dict]) -> str:
    """Seconds (peak MB) per size, and each command's added seconds per 1,000 more runs than the size
    before: level when the cost grows linearly (the first size carries the start-up: imports, plots)."""
    keys = ("status", "dry_run", "aggregate")
    lines = ["| runs | seeds | --status s (MB) | --dry-run s (MB) | aggregate.py s (MB) | "
             "added s per 1,000 more runs: status / dry-run / aggregate |", "|---:|---:|---|---|---|---|"]
    for i, r in enumerate(rows):
        cells = " | ".join(f"{r[k]['seconds']:.1f} ({r[k]['peak_mb']:.0f})" for k in keys)
        if i:
            more = (r["runs"] - rows[i - 1]["runs"]) / 1000
            slope = " / ".join(f"{(r[k]['seconds'] - rows[i - 1][k]['seconds']) / more:.2f}" for k in keys)
        else:
            slope = "–"
        lines.append(f"| {r['runs']:,} | {r['seeds']} | {cells} | {slope} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="hw5-scale-"))
    data_dir = args.data_dir.expanduser().resolve()
    models = ({task: json.loads((args.templates / f"{task}_metrics.json").read_text()) for task in TEMPLATES}
              if args.templates else templates(out, data_dir))
    rows = []
    for size in (int(x) for x in args.runs.split(",") if x.strip()):
        root = out / f"tree-{size}"
        shutil.rmtree(root, ignore_errors=True)
        runs, seeds = write_tree(root, size, models, data_dir)
        row = {"runs": runs, "seeds": seeds, **measure(root, seeds, data_dir)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_json_atomic(out / "scale_check.json", {"rows": rows, "python": sys.version.split()[0],
                                                  "cpus": os.cpu_count()})
    write_text_atomic(out / "scale_check.md", markdown(rows))
    print(f"scale_check: wrote {out / 'scale_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
