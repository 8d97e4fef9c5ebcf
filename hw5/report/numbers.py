"""The numbers behind the tables: per-run values, mean ± sample std over seeds, paired differences."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # Student t quantile; scipy.stats costs 1.6 s to import

from .runs import Collection, Run

CONFIDENCE = 0.95  # two-sided level of the paired t-interval against the baseline


@dataclass(frozen=True)
class Metric:
    """One number read from every metrics.json."""
    key: str                       # column name in the CSV files
    label: str                     # column header in the Markdown tables
    path: tuple[str, ...]          # keys into metrics.json
    digits: int = 3                # decimals shown in Markdown (CSV keeps full precision)
    tasks: tuple[str, ...] = ("nli", "ser")  # tasks whose per-task table shows it


METRICS = (
    Metric("accuracy", "Accuracy", ("test", "accuracy")),
    Metric("macro_f1", "Macro-F1", ("test", "macro_f1")),
    Metric("weighted_f1", "Weighted-F1", ("test", "weighted_f1")),
    Metric("uar", "UAR", ("test", "uar"), tasks=("ser",)),
    Metric("hard_hypothesis", "Hard-hypothesis acc.", ("test_subsets", "hard_hypothesis", "accuracy"), tasks=("nli",)),
    Metric("hard_overlap", "Hard-overlap acc.", ("test_subsets", "hard_overlap", "accuracy"), tasks=("nli",)),
    Metric("trainable_params", "Trainable params", ("params", "trainable"), digits=0),
    Metric("total_params", "Total params", ("params", "total"), digits=0),
    Metric("train_seconds", "Train time (s)", ("throughput", "train_seconds"), digits=1),
    Metric("examples_per_s", "Throughput (examples/s)", ("throughput", "examples_per_s"), digits=1),
    Metric("units_per_s", "Throughput (units/s)", ("throughput", "units_per_s"), digits=0),
    Metric("peak_memory_mb", "Peak memory (MB)", ("peak_memory_mb",), digits=0),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}
# Metrics compared against the baseline, main one first. SER uses UAR first: its classes are imbalanced.
COMPARED = {"nli": ("accuracy", "macro_f1", "hard_hypothesis"), "ser": ("uar", "accuracy", "macro_f1")}


def metric_value(metrics: dict, path: tuple[str, ...]) -> float:
    """The number at `path`, or NaN when the run lacks it (older schema, other task)."""
    value = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return math.nan
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def run_frame(collection: Collection) -> pd.DataFrame:
    """One row per usable run: experiment, task, seed, config_hash and every metric."""
    rows = []
    for experiment, task in collection.scope.tasks.items():
        for run in collection.done(experiment):
            row = {"experiment": experiment, "task": task, "seed": run.seed,
                   "config_hash": run.metrics["config_hash"]}
            row.update({m.key: metric_value(run.metrics, m.path) for m in METRICS})
            rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "task", "seed", "config_hash"] + [m.key for m in METRICS])


def mean_std(values) -> tuple[int, float, float]:
    """(n, mean, sample std with ddof=1) over the finite values; std is NaN for n < 2."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return 0, math.nan, math.nan
    return int(arr.size), float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def flags(collection: Collection, experiment: str) -> str:
    """Why some seeds of an experiment are not averaged, e.g. 'missing: 3, 4; stale: 2'."""
    parts = []
    for status in ("missing", "partial", "stale", "corrupt", "ignored"):
        seeds = [str(s) for (e, s), r in sorted(collection.runs.items()) if e == experiment and r.status == status]
        if seeds:
            parts.append(f"{status}: {', '.join(seeds)}")
    return "; ".join(parts)


def summary_frame(collection: Collection, runs: pd.DataFrame, experiments: list[str]) -> pd.DataFrame:
    """One row per experiment: n, seeds used, flags, and <metric>_mean / <metric>_std."""
    rows = []
    for experiment in experiments:
        mine = runs[runs["experiment"] == experiment]
        row = {"experiment": experiment, "task": collection.scope.tasks[experiment], "n": len(mine),
               "seeds": " ".join(str(s) for s in mine["seed"]), "flags": flags(collection, experiment)}
        for metric in METRICS:
            _, row[f"{metric.key}_mean"], row[f"{metric.key}_std"] = mean_std(mine[metric.key])
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(baseline: dict[int, float], variant: dict[int, float]) -> dict:
    """Mean of variant - baseline over the seeds both have, with a two-sided t-interval."""
    seeds = sorted(s for s in set(baseline) & set(variant)
                   if math.isfinite(baseline[s]) and math.isfinite(variant[s]))
    diffs = np.array([variant[s] - baseline[s] for s in seeds], dtype=float)
    out = {"n_pairs": len(seeds), "diff_mean": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "ratio": math.nan, "interval_excludes_zero": False}
    if not seeds:
        return out
    out["diff_mean"] = float(diffs.mean())
    base_mean = float(np.mean([baseline[s] for s in seeds]))
    out["ratio"] = (base_mean + out["diff_mean"]) / base_mean if base_mean else math.nan
    if len(seeds) >= 2:
        half = stdtrit(len(seeds) - 1, 0.5 + CONFIDENCE / 2) * diffs.std(ddof=1) / math.sqrt(len(seeds))
        out["ci_low"], out["ci_high"] = out["diff_mean"] - half, out["diff_mean"] + half
        out["interval_excludes_zero"] = bool(out["ci_low"] > 0 or out["ci_high"] < 0)
    return out


def comparison_frame(runs: pd.DataFrame, experiments: list[str], baseline: str, metric_keys) -> pd.DataFrame:
    """One row per (experiment, metric): the seed-paired difference to the baseline."""
    rows = []
    base = runs[runs["experiment"] == baseline]
    for experiment in experiments:
        if experiment == baseline:
            continue
        mine = runs[runs["experiment"] == experiment]
        for key in metric_keys:
            diff = paired_difference(dict(zip(base["seed"], base[key])), dict(zip(mine["seed"], mine[key])))
            rows.append({"experiment": experiment, "baseline": baseline, "metric": key, **diff})
    columns = ["experiment", "baseline", "metric", "n_pairs", "diff_mean", "ci_low", "ci_high", "ratio",
               "interval_excludes_zero"]
    return pd.DataFrame(rows, columns=columns)


def per_class_frame(runs: list[Run]) -> pd.DataFrame:
    """Test precision / recall / F1 per class: mean and std over seeds; support as a mean."""
    rows = []
    classes = runs[0].metrics["classes"] if runs else []
    for cls in classes:
        row = {"class": cls}
        for key in ("precision", "recall", "f1", "support"):
            values = [metric_value(r.metrics, ("test", "per_class", cls, key)) for r in runs]
            row["n"], row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
        rows.append(row)
    return pd.DataFrame(rows)


def history_frame(runs: list[Run]) -> pd.DataFrame:
    """Every history row of every run, with its seed: the input of the curve and padding plots."""
    rows = [{"seed": r.seed, **row} for r in runs for row in (r.metrics.get("history") or [])
            if isinstance(row, dict) and "epoch" in row]
    return pd.DataFrame(rows)


def resource_frame(runs: list[Run]) -> pd.DataFrame:
    """Per seed: padding share and seconds per epoch (means over epochs), peak memory (largest epoch)
    and units/s; a run without history falls back to its run-level values."""
    history = history_frame(runs)
    rows = []
    for run in runs:
        mine = history[history["seed"] == run.seed] if not history.empty else history
        rows.append({
            "seed": run.seed,
            "padding_share": _history_value(mine, "padding_share", "mean", run.metrics,
                                            ("throughput", "padding_share")),
            "epoch_seconds": _history_value(mine, "seconds", "mean", run.metrics, ()),
            "peak_memory_mb": _history_value(mine, "peak_memory_mb", "max", run.metrics, ("peak_memory_mb",)),
            "units_per_s": metric_value(run.metrics, ("throughput", "units_per_s")),
        })
    return pd.DataFrame(rows, columns=["seed", "padding_share", "epoch_seconds", "peak_memory_mb", "units_per_s"])


def _history_value(history: pd.DataFrame, column: str, how: str, metrics: dict, fallback: tuple[str, ...]) -> float:
    values = pd.to_numeric(history[column], errors="coerce").dropna() if column in history else pd.Series(dtype=float)
    if not values.empty:
        return float(values.agg(how))
    return metric_value(metrics, fallback) if fallback else math.nan
