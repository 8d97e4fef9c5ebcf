"""Markdown and CSV tables: summary per task, comparison to the baseline, hyper-parameters, run status."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from hw5.config import seed_ranges
from hw5.contract import STATES
from hw5.io import write_text_atomic
from hw5.markdown import DASH, markdown_table  # noqa: F401  (the report's tables are these)
from .numbers import COMPARED, METRIC_BY_KEY, METRICS, mean_std, per_class_frame, resource_frame
from .runs import Collection, Run

# Fields that identify a run rather than describe its experiment: left out of the settings tables.
CONFIG_IDENTITY = {"seed", "description", "task"}


def fmt_number(value: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:,.{digits}f}"


def fmt_mean_std(mean: float, std: float, n: int, digits: int) -> str:
    """'mean ± std'; '–' for the std of a single run, '–' alone when there is no run."""
    if n == 0 or not math.isfinite(mean):
        return DASH
    return f"{fmt_number(mean, digits)} ± {fmt_number(std, digits) if n > 1 else DASH}"


def fmt_count(value: float) -> str:
    """Parameter counts at a glance: 110.1M, 85.3k, 512."""
    if not math.isfinite(value):
        return DASH
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


def fmt_cell(value) -> str:
    """A config / hyper-parameter value as stable text."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def summary_markdown(summary: pd.DataFrame, task: str | None) -> str:
    """Rows of experiments; every shown metric as mean ± std over the n seeds used."""
    shown = [m for m in METRICS if (task is None or task in m.tasks)
             and m.key not in ("trainable_params", "total_params", "units_per_s", "peak_memory_mb")]
    header = ["Experiment", "n"] + [m.label for m in shown] + ["Trainable / total params", "Flags"]
    rows = []
    for _, r in summary.iterrows():
        cells = [fmt_mean_std(r[f"{m.key}_mean"], r[f"{m.key}_std"], r["n"], m.digits) for m in shown]
        params = DASH if r["n"] == 0 else (f"{fmt_count(r['trainable_params_mean'])} / "
                                           f"{fmt_count(r['total_params_mean'])}")
        rows.append([r["experiment"], r["n"], *cells, params, r["flags"] or "ok"])
    return markdown_table(header, rows)


def comparison_markdown(comparison: pd.DataFrame, task: str) -> str:
    """Per variant: the seed-paired difference to the baseline, [95% t-interval], * when it excludes 0."""
    keys = COMPARED[task]
    header = ["Experiment", "Pairs"] + [f"Δ {METRIC_BY_KEY[k].label} [95% CI]" for k in keys]
    header.append(f"{METRIC_BY_KEY[keys[0]].label} as % of baseline")
    rows = []
    for experiment, group in comparison.groupby("experiment", sort=False):
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        cells = [_fmt_difference(by_metric[k]) for k in keys]
        ratio = by_metric[keys[0]]["ratio"]
        pairs = int(by_metric[keys[0]]["n_pairs"])
        rows.append([experiment, pairs, *cells, DASH if not math.isfinite(ratio) else f"{100 * ratio:.1f}%"])
    return markdown_table(header, rows)


def _fmt_difference(row) -> str:
    if row["n_pairs"] == 0 or not math.isfinite(row["diff_mean"]):
        return DASH
    if not math.isfinite(row["ci_low"]):
        return f"{row['diff_mean']:+.3f} [{DASH}]"
    star = " *" if row["interval_excludes_zero"] else ""
    return f"{row['diff_mean']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]{star}"


def reference_runs(collection: Collection, task: str) -> dict[str, Run]:
    """The lowest-seed usable run of each experiment of a task: the source of its settings."""
    return {e: runs[0] for e in collection.experiments(task) if (runs := collection.done(e))}


def hyperparameter_markdown(collection: Collection, task: str) -> str:
    """The "hyperparameters" block of every experiment of a task, one column per key."""
    refs = reference_runs(collection, task)
    if not refs:
        return f"No finished {task.upper()} run yet, so no hyper-parameters to show.\n"
    params = {e: {k: v for k, v in (r.metrics.get("hyperparameters") or {}).items() if k not in CONFIG_IDENTITY}
              for e, r in refs.items()}
    keys = sorted({k for p in params.values() for k in p})
    rows = [[e, *(fmt_cell(p[k]) if k in p else DASH for k in keys)] for e, p in params.items()]
    return markdown_table(["Experiment"] + keys, rows)


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_markdown(collection: Collection, task: str) -> str:
    """The resolved-config fields that differ between the experiments of a task (+ description, hash)."""
    refs = reference_runs(collection, task)
    if not refs:
        return ""
    configs = {e: _flatten(r.metrics.get("config") or {}) for e, r in refs.items()}
    keys = sorted({k for c in configs.values() for k in c} - CONFIG_IDENTITY)
    differing = [k for k in keys if len({fmt_cell(c.get(k, DASH)) for c in configs.values()}) > 1]
    rows = [[e, fmt_cell(c.get("description", "")) or DASH, collection.reference_hash.get(e, DASH),
             *(fmt_cell(c[k]) if k in c else DASH for k in differing)] for e, c in configs.items()]
    return markdown_table(["Experiment", "Description", "Config hash"] + differing, rows)


def status_frame(collection: Collection) -> pd.DataFrame:
    """One row per (experiment, seed) in table order: status, file, and why it is not used."""
    every = collection.with_status(*{r.status for r in collection.runs.values()})
    rows = [{"experiment": r.experiment, "task": collection.scope.tasks[r.experiment], "seed": r.seed,
             "status": r.status, "path": str(r.path or ""), "problem": r.problem} for r in every]
    return pd.DataFrame(rows, columns=["experiment", "task", "seed", "status", "path", "problem"])


# Past this many seeds the status table has one row per experiment with counts, not a column per seed.
STATUS_SEED_COLUMNS = 10


def status_markdown(collection: Collection) -> str:
    """Experiments x seeds grid of run status; past ten seeds, counts per state and the seeds not done."""
    seeds = sorted({s for (_, s) in collection.runs})
    if len(seeds) > STATUS_SEED_COLUMNS:
        return _status_counts(collection)
    rows = [[e, *(collection.runs[(e, s)].status if (e, s) in collection.runs else DASH for s in seeds)]
            for e in collection.scope.tasks]
    return markdown_table(["Experiment"] + [f"seed {s}" for s in seeds], rows)


def _status_counts(collection: Collection) -> str:
    by_experiment: dict[str, list[Run]] = {e: [] for e in collection.scope.tasks}
    for (experiment, _), run in collection.runs.items():
        by_experiment.setdefault(experiment, []).append(run)
    rows = []
    for experiment, runs in by_experiment.items():
        counts = {state: sum(r.status == state for r in runs) for state in STATES}
        not_done = seed_ranges(r.seed for r in runs if r.status != "done") or DASH
        rows.append([experiment, len(runs), ", ".join(f"{n} {s}" for s, n in counts.items() if n) or DASH, not_done])
    return markdown_table(["Experiment", "Seeds", "States", "Seeds not done"], rows)


def per_class_markdown(runs: list[Run]) -> str:
    frame = per_class_frame(runs)
    scores = ("precision", "recall", "f1")
    rows = [[r["class"], *(fmt_mean_std(r[f"{k}_mean"], r[f"{k}_std"], r["n"], 3) for k in scores),
             fmt_number(r["support_mean"], 0)] for _, r in frame.iterrows()]
    return markdown_table(["Class", "Precision", "Recall", "F1", "Support"], rows)


def resource_summary(collection: Collection, experiments: list[str]) -> pd.DataFrame:
    """Per experiment: padding share, s/epoch, peak memory and units/s as mean and std over seeds."""
    rows = []
    for experiment in experiments:
        per_seed = resource_frame(collection.done(experiment))
        row = {"experiment": experiment}
        for column in ("padding_share", "epoch_seconds", "peak_memory_mb", "units_per_s"):
            row["n"], row[f"{column}_mean"], row[f"{column}_std"] = mean_std(per_seed[column])
        rows.append(row)
    return pd.DataFrame(rows)


def resource_markdown(frame: pd.DataFrame, unit: str) -> str:
    columns = (("padding_share", "Padding share", 3), ("epoch_seconds", "Seconds per epoch", 1),
               ("peak_memory_mb", "Peak memory (MB)", 0), ("units_per_s", f"Throughput ({unit}/s)", 0))
    rows = [[r["experiment"], r["n"], *(fmt_mean_std(r[f"{c}_mean"], r[f"{c}_std"], r["n"], d) for c, _, d in columns)]
            for _, r in frame.iterrows()]
    return markdown_table(["Experiment", "n"] + [label for _, label, _ in columns], rows)


def write_table(tables_dir: Path, name: str, frame: pd.DataFrame, markdown: str | None = None) -> None:
    """results/tables/<name>.csv (full precision) and, when given, <name>.md."""
    write_text_atomic(tables_dir / f"{name}.csv", frame.to_csv(index=False, lineterminator="\n"))
    if markdown is not None:
        write_text_atomic(tables_dir / f"{name}.md", markdown)
