"""PNG figures: learning curves, confusion matrices, metric bars, per-class recall, padding cost."""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display: works on login and compute nodes alike
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hw5.io import write_bytes_atomic  # noqa: E402
from .numbers import METRIC_BY_KEY, history_frame  # noqa: E402
from .runs import Run  # noqa: E402

DPI = 100          # sharp on screen, small files (~40-100 kB), quick to render
BAND_ALPHA = 0.2   # the ±std band stays behind the mean line
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def new_figure(width: float, height: float) -> Figure:
    """A figure whose layout engine keeps every label inside it (no pyplot state, nothing shown)."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return write_bytes_atomic(path, buffer.getvalue())


def _seeds_note(n: int) -> str:
    return f"mean ± std over {n} seeds" if n > 1 else "1 seed, no spread"


def plot_curves(experiment: str, runs: list[Run], path: Path) -> Path | None:
    """Train / val loss and accuracy per epoch, averaged over seeds with a ±std band."""
    history = history_frame(runs)
    if history.empty:
        return None
    fig = new_figure(10, 3.8)
    panels = (("loss", "cross-entropy loss"), ("acc", "accuracy (fraction correct)"))
    names = {"loss": "loss", "acc": "accuracy"}
    for ax, (kind, ylabel) in zip(fig.subplots(1, 2), panels):
        for split, style in (("train", "-"), ("val", "--")):
            column = f"{split}_{kind}"
            if column not in history:
                continue
            values = pd.to_numeric(history[column], errors="coerce")
            stats = values.groupby(history["epoch"]).agg(["mean", "std"]).sort_index()
            ax.plot(stats.index, stats["mean"], style, marker="o", label=split)
            ax.fill_between(stats.index, stats["mean"] - stats["std"].fillna(0),
                            stats["mean"] + stats["std"].fillna(0), alpha=BAND_ALPHA)
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{experiment}: {names[kind]} ({_seeds_note(len(runs))})")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def mean_confusion(runs: list[Run]) -> tuple[np.ndarray | None, list[str]]:
    """Test confusion counts averaged over seeds (rows: true class); runs of another shape are skipped."""
    if not runs:
        return None, []
    classes = list(runs[0].metrics["classes"])
    size = (len(classes), len(classes))
    matrices = [np.asarray(r.metrics["test"].get("confusion_matrix") or [], dtype=float) for r in runs]
    matrices = [m for m in matrices if m.shape == size]
    return (np.mean(matrices, axis=0) if matrices else None), classes


def plot_confusion(experiment: str, runs: list[Run], path: Path) -> Path | None:
    """Mean counts and row-normalized rates (recall on the diagonal) side by side."""
    counts, classes = mean_confusion(runs)
    if counts is None:
        return None
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    width = 3.0 + 0.7 * len(classes)  # inches per panel: room for the cells and the class names
    fig = new_figure(2 * width, 0.9 * width)
    fontsize = 10 if len(classes) <= 4 else 9
    panels = ((counts, "{:.1f}", "test counts"), (rates, "{:.2f}", "share of true class (recall on diagonal)"))
    for ax, (matrix, fmt, title) in zip(fig.subplots(1, 2), panels):
        # every cell is annotated, so no colour bar; aspect "auto" lets the layout engine fit the labels
        ax.imshow(matrix, cmap="Blues", vmin=0, aspect="auto")
        for (i, j), value in np.ndenumerate(matrix):
            dark = value > 0.6 * (matrix.max() or 1)
            ax.text(j, i, fmt.format(value), ha="center", va="center", color="white" if dark else "black",
                    fontsize=fontsize)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set(xlabel="predicted class", ylabel="true class",
               title=f"{experiment}: {title}\n(averaged over {len(runs)} seed{'s' if len(runs) > 1 else ''})")
    return save_figure(fig, path)


def _grouped_bars(ax, labels: list[str], series: dict[str, tuple[list, list]]) -> None:
    """Bars per label, one colour per series, error bars = std (absent where NaN)."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(labels))
    for k, (name, (means, stds)) in enumerate(series.items()):
        errors = [s if math.isfinite(s) else 0.0 for s in stds]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, np.nan_to_num(means), width, yerr=errors,
               capsize=3, label=name, color=COLORS[k % len(COLORS)])
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def plot_metric_bars(task: str, summary: pd.DataFrame, keys: tuple[str, ...], path: Path) -> Path | None:
    """The task's main metrics per experiment, mean with ±std error bars."""
    shown = summary[summary["n"] > 0]
    if shown.empty:
        return None
    series = {METRIC_BY_KEY[k].label: (list(shown[f"{k}_mean"]), list(shown[f"{k}_std"])) for k in keys}
    fig = new_figure(max(6, 1.4 * len(shown) + 2), 4.2)
    ax = fig.subplots()
    _grouped_bars(ax, [f"{e}\n(n={n})" for e, n in zip(shown["experiment"], shown["n"])], series)
    ax.set(ylabel="test score (0-1)", ylim=(0, 1.05),
           title=f"{task.upper()}: test metrics per experiment (mean ± std over seeds)")
    return save_figure(fig, path)


def plot_class_recall(frames: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """Per-class test recall of several experiments (e.g. with / without class weights)."""
    frames = {name: f for name, f in frames.items() if not f.empty}
    if not frames:
        return None
    classes = list(next(iter(frames.values()))["class"])
    series = {}
    for name, frame in frames.items():
        by_class = frame.set_index("class").reindex(classes)
        series[f"{name} (n={int(frame['n'].max())})"] = (list(by_class["recall_mean"]), list(by_class["recall_std"]))
    fig = new_figure(1.1 * len(classes) + 3, 4.2)
    ax = fig.subplots()
    _grouped_bars(ax, classes, series)
    ax.set(xlabel="true class", ylabel="test recall (0-1)", ylim=(0, 1.05),
           title="SER per-class recall (mean ± std over seeds)")
    return save_figure(fig, path)


def plot_resources(frame: pd.DataFrame, padding: dict[str, str], path: Path) -> Path | None:
    """Padding share, seconds per epoch and peak memory per experiment, side by side.

    `padding` names each experiment's padding scheme for the tick labels, e.g. {"ser-mean": "dynamic"}."""
    shown = frame[frame["n"] > 0]
    if shown.empty:
        return None
    panels = (("padding_share", "padding share (fraction of frames)"), ("epoch_seconds", "seconds per epoch (s)"),
              ("peak_memory_mb", "peak memory (MB)"))
    fig = new_figure(13, 4)
    labels = [f"{e}\n({padding.get(e, '?')}, n={n})" for e, n in zip(shown["experiment"], shown["n"])]
    for ax, (column, label) in zip(fig.subplots(1, 3), panels):
        stds = [s if math.isfinite(s) else 0.0 for s in shown[f"{column}_std"]]
        ax.bar(labels, np.nan_to_num(list(shown[f"{column}_mean"])), yerr=stds, capsize=4,
               color=COLORS[: len(shown)])
        ax.set(ylabel=label, title=label.split(" (")[0])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Dynamic vs fixed padding (mean ± std over seeds)")
    return save_figure(fig, path)


def _as_number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def plot_sweep(name: str, frame: pd.DataFrame, fields: list[str], path: Path) -> Path | None:
    """Validation and test macro-F1 against the first swept field (one line per value of the others),
    mean with ±std error bars; the chosen point ringed."""
    shown = frame[frame["n"] > 0]
    if shown.empty:
        return None
    x_field, others = fields[0], fields[1:]
    ticks = sorted(shown[x_field].unique(), key=lambda v: (isinstance(_as_number(v), str), _as_number(v)))
    fig = new_figure(max(6, 1.2 * len(ticks) + 3), 4.2)
    ax = fig.subplots()
    groups = shown.groupby(others, sort=False) if others else [((), shown)]
    for k, (key, group) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{f}={v}" for f, v in zip(others, key))
        group = group.assign(x=[ticks.index(v) for v in group[x_field]]).sort_values("x")
        for split, style in (("val", "-o"), ("test", "--s")):
            ax.errorbar(group["x"], group[f"{split}_mean"], yerr=group[f"{split}_std"].fillna(0), fmt=style,
                        capsize=3, color=COLORS[k % len(COLORS)], label=f"{split}" + (f" ({label})" if label else ""))
        chosen = group[group["chosen"]]
        ax.scatter(chosen["x"], chosen["val_mean"], s=160, facecolors="none", edgecolors="black", zorder=3)
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set(xlabel=x_field, ylabel="macro-F1", title=f"{name}: sweep (mean ± std over seeds; ring: chosen on val)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
