"""The grid check: one seed of every experiment, end to end through jobs/launch.py with packed jobs,
timed from the launcher's start to the last metrics.json, then aggregate.py.

    bash slurm/grid_check.sh              # a GPU node: random-init models of ParsBERT's and HuBERT-base's
                                          # exact shapes (model_name: random-base, no hub), the real
                                          # FarsTail, 3,000 synthetic clips with ShEMO's durations
    bash slurm/grid_check.sh --tiny       # anywhere (a CPU): the smoke slice, tiny models

Writes <results>/grid_check.json and .md: the wall time, each run's device-seconds (its own wall time,
model building to metrics.json) and the share of them that is not training steps (loading, CNN
features, evaluation), the grid of every seed extrapolated from them, and the bench's estimate beside
it when a bench.json holds one (`hw5 bench --ablations --startup-clips N` on the same device).
Torch-free: the runs happen in the launcher's jobs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parent.parent) not in sys.path:   # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw5.config import DEFAULT_GRID, REPO_ROOT, load_grid  # noqa: E402
from hw5.io import write_json_atomic, write_text_atomic  # noqa: E402

# What a full-size check changes in the study's defaults: no hub, and a corpus the node can make.
FULL_SIZE = {"nli": {"model_name": "random-base"},
             "ser": {"model_name": "random-base", "corpus": "synthetic", "synthetic_clips": 0,
                     "synthetic_durations": "shemo"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash slurm/grid_check.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--tiny", action="store_true", help="the smoke slice (tiny models; what a CPU can run)")
    p.add_argument("--results", default="results/grid-check", help="results folder of the check")
    p.add_argument("--experiments", default=str(DEFAULT_GRID),
                   help="the grid to check (one seed of each of its experiments)")
    p.add_argument("--only", help="experiment globs, as launch.py --only")
    p.add_argument("--pack", type=int, default=6, help="runs per job (default 6: a task's runs share one job)")
    p.add_argument("--runs-per-gpu", type=int, default=1, help="runs of a pack at once (default 1)")
    p.add_argument("--cluster", default="local", help="launch.py --cluster (default local: this node)")
    p.add_argument("--profile", help="launch.py --profile")
    p.add_argument("--bench", default="results/bench/bench.json", help="a bench.json with the grid estimate")
    return p.parse_args(argv)


def write_overlay(base: Path, out: Path, tiny: bool) -> Path:
    """The grid to run: the base file with one seed and, at full size, FULL_SIZE over its defaults."""
    raw = load_grid(base).raw
    raw["seeds"] = raw["seeds"][:1]
    if not tiny:
        for task, values in FULL_SIZE.items():
            raw["defaults"][task].update(values)
    import yaml
    header = f"# Written by jobs/grid_check.py from {base}; run: bash slurm/grid_check.sh{' --tiny' if tiny else ''}\n"
    write_text_atomic(out, header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return out


def launch_command(args: argparse.Namespace, grid: Path, results: Path) -> list[str]:
    command = [sys.executable, str(REPO_ROOT / "jobs" / "launch.py"), "--all", "--experiments", str(grid),
               "--results", str(results), "--checkpoints", str(results / ".checkpoints"),
               "--cluster", args.cluster, "--pack", str(args.pack), "--runs-per-gpu", str(args.runs_per_gpu)]
    command += ["--only", args.only] if args.only else []
    command += ["--profile", args.profile] if args.profile else []
    command += ["--wait"] if args.cluster == "slurm" else []
    return command + (["--smoke"] if args.tiny else [])


def summary(tree: Path, started: float, seeds: int, bench: Path) -> dict:
    """Per-run device seconds and the totals, from every metrics.json of the check."""
    runs, last = [], started
    for path in sorted(tree.glob("*/seed-*/metrics.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        if m.get("provenance", {}).get("finished") is None:
            continue
        last = max(last, path.stat().st_mtime)
        wall, train = float(m["provenance"]["wall_seconds"]), float(m["throughput"]["train_seconds"])
        runs.append({"experiment": m["experiment"], "task": m["task"], "device_seconds": wall,
                     "train_seconds": train, "other_share": 1 - train / wall if wall else 0.0,
                     "device": m["provenance"].get("device")})
    device = sum(r["device_seconds"] for r in runs)
    train = sum(r["train_seconds"] for r in runs)
    estimate = _bench_estimate(bench)
    return {"runs": runs, "wall_seconds": last - started, "device_seconds": device,
            "not_training_share": 1 - train / device if device else 0.0, "seeds_in_grid": seeds,
            "grid_device_seconds": device * seeds, "grid_wall_seconds_like_this": (last - started) * seeds,
            "bench_estimate_hours": estimate}


def _bench_estimate(path: Path) -> float | None:
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["grid_estimate"]["hours"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def markdown(s: dict, tiny: bool) -> str:
    bench = (f"{s['bench_estimate_hours']:.2f} h" if s["bench_estimate_hours"] is not None
             else "none here (run `hw5 bench --ablations` on this device)")
    lines = [f"# Grid check ({'tiny smoke slice' if tiny else 'full size, random-init'})", "",
             f"- {len(s['runs'])} runs, one seed each: **{s['wall_seconds']:.0f} s** from the launcher's start to "
             f"the last metrics.json; {s['device_seconds']:.0f} device-seconds in the runs, "
             f"{s['not_training_share']:.0%} of them outside training steps (loading, features, evaluation).",
             f"- The grid of {s['seeds_in_grid']} seeds, extrapolated: {s['grid_device_seconds'] / 3600:.2f} "
             f"device-hours; {s['grid_wall_seconds_like_this'] / 60:.1f} min wall run like this. "
             f"Bench estimate: {bench}.", "",
             "| experiment | task | device s | train s | not training |", "|---|---|---|---|---|"]
    lines += [f"| {r['experiment']} | {r['task']} | {r['device_seconds']:.1f} | {r['train_seconds']:.1f} | "
              f"{r['other_share']:.0%} |" for r in s["runs"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Path(args.results).resolve()
    grid = write_overlay(Path(args.experiments), results / "grid_check_experiments.yaml", args.tiny)
    started = time.time()
    code = subprocess.call(launch_command(args, grid, results))
    tree = results / "smoke" if args.tiny else results
    s = summary(tree, started, len(load_grid(args.experiments).seeds), Path(args.bench))
    write_json_atomic(results / "grid_check.json", {**s, "tiny": args.tiny, "pack": args.pack,
                                                    "runs_per_gpu": args.runs_per_gpu, "launch_exit": code})
    write_text_atomic(results / "grid_check.md", markdown(s, args.tiny))
    print(markdown(s, args.tiny))
    report = [sys.executable, str(REPO_ROOT / "aggregate.py"), "--results", str(results), "--experiments", str(grid)]
    return code or subprocess.call(report + (["--smoke"] if args.tiny else []))


if __name__ == "__main__":
    sys.exit(main())
