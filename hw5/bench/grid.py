"""The default grid's device time, estimated from `hw5 bench --ablations` rates (not a measured grid run).

Per experiment x seed: epochs x (train units at the rate of its batching + validation units at the
forward-only rate) + test units at the forward-only rate. Once for the whole grid: the frozen CNN over
ShEMO's 3,000 clips (the runs share it through hw5.data.feature_store). Every NLI experiment is charged
nli-full's rate, so frozen / shortened / pruned models make it an upper bound. With `--startup` the
measured start-up of a run (imports, data, model load, stored features; hw5.bench.startup) is added to
every run; CUDA initialisation is never included.
"""
from __future__ import annotations

import pandas as pd

# examples per split: FarsTail's release; ShEMO's 3,000 clips split 80/10/10; the EmoBox fold's 2,838 clips
SPLIT_SIZES = {"nli": {"train": 7266, "val": 1537, "test": 1564}, "ser": {"train": 2400, "val": 300, "test": 300},
               "ser-emobox": {"train": 1918, "val": 213, "test": 707}}
TRAIN_PATH = {"bucket": "project", "dynamic": "project-random", "fixed": "project-fixed"}


def estimate(table: pd.DataFrame, device: str = "this device", config_path=None,
             startup: dict | None = None) -> dict | None:
    from hw5.config import load_grid, resolve_config
    rows = {(r.task, r.path): r for r in table.itertuples()}
    grid = load_grid(config_path)
    per_run, features = {}, 0.0
    for name in grid.experiments:
        cfg = resolve_config(name, path=config_path)
        seconds = run_seconds(cfg, rows)
        if seconds is None:
            return None                         # a task or path was not benched
        per_run[name] = seconds + (startup[f"{cfg.task}_run_seconds"] if startup else 0.0)
        if cfg.task == "ser" and cfg.feature_cache:
            features = feature_seconds(rows)
    total = sum(per_run.values()) * len(grid.seeds) + features
    lines = [f"Estimated time of the default grid ({len(per_run)} experiments x {len(grid.seeds)} seeds) on "
             f"{device}, from the rates above (training + evaluation passes, and the CNN features once: "
             f"{features:.0f} s; {'with' if startup else 'no'} start-up per run; no CUDA initialisation; "
             f"an estimate, not a measured grid run): "
             f"**{total / 3600:.2f} hours** ({total / 60:.1f} min).", "",
             "| experiment | seconds per run |", "| --- | --- |"]
    lines += [f"| {name} | {s:.0f} |" for name, s in per_run.items()]
    return {"device": device, "hours": total / 3600, "seconds_per_run": per_run, "seeds": len(grid.seeds),
            "feature_seconds_once": features, "markdown": "\n".join(lines)}


def train_path(cfg, rows: dict) -> str:
    """The bench row whose rate a run trains at. cuda_graphs was benched on bucketed batches only, and
    never runs on a CPU (no row there): other batchings, and CPU, get the eager rate."""
    if cfg.task == "ser" and not cfg.feature_cache:
        return "project-waves"
    if cfg.cuda_graphs and cfg.batching == "bucket" and (cfg.task, "project+graphs") in rows:
        return "project+graphs"
    return TRAIN_PATH[cfg.batching]


def run_seconds(cfg, rows: dict) -> float | None:
    task = cfg.task
    sizes = SPLIT_SIZES["ser-emobox" if getattr(cfg, "split", "") == "emobox" else task]
    path = train_path(cfg, rows)
    train, evaluate = rows.get((task, path)), rows.get((task, "project-eval"))
    if train is None or evaluate is None:
        return None
    unit_per_example = train.units_per_s / train.examples_per_s
    train_s = sizes["train"] * unit_per_example / train.units_per_s
    eval_s = (cfg.epochs * sizes["val"] + sizes["test"]) * unit_per_example / evaluate.units_per_s
    return cfg.epochs * train_s + eval_s


def feature_seconds(rows: dict) -> float:
    """The frozen CNN over every ShEMO clip, at the bench's measured seconds per clip."""
    project = rows[("ser", "project")]
    bench_clips = project.examples_per_s * project.seconds      # the clips of the timed pass
    return project.prep_seconds * sum(SPLIT_SIZES["ser"].values()) / bench_clips
