"""Sweeps in the report: each swept experiment's points in one table, the point chosen by validation
macro-F1 (mean over seeds) and never by test, a plot of the score against the swept values, and a
Findings paragraph comparing the chosen point with the experiment's declared default on test.

Choosing by test and reporting that test score is the quiet error of many hyper-parameter tables: the
test split then took part in the choice. Here the choice reads validation only; the test score of the
chosen point is reported after the fact, beside the default's, with its seed-paired interval.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hw5.sweep import Sweep, value_text

from .numbers import mean_std, paired_difference
from .runs import Collection
from .tables import fmt_mean_std, markdown_table, write_table

CHOSEN_BY = ("val", "macro_f1")      # what picks the point (validation: never the test split)
REPORTED = ("test", "macro_f1")      # what the table and the Findings report of it


def _scores(collection: Collection, experiment: str, where: tuple[str, str]) -> dict[int, float]:
    out = {}
    for run in collection.done(experiment):
        value = (run.metrics.get(where[0]) or {}).get(where[1])
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[run.seed] = float(value)
    return out


def sweep_frame(collection: Collection, sweep: Sweep) -> pd.DataFrame:
    """One row per point (the declared default as its own point): the swept values, validation and test
    macro-F1 (mean, std, n) and which point validation chooses."""
    values = {sweep.experiment: sweep.points.get(sweep.default_point) or
              {k: collection.setting(sweep.experiment, k) for k in sweep.values}}
    values.update({p: v for p, v in sweep.points.items() if p in collection.scope.tasks})
    rows = []
    for experiment, swept in values.items():
        row = {"experiment": experiment, "default": experiment == sweep.experiment,
               **{k: value_text(v) if v is not None else "?" for k, v in swept.items()}}
        for label, where in (("val", CHOSEN_BY), ("test", REPORTED)):
            row["n"], row[f"{label}_mean"], row[f"{label}_std"] = mean_std(list(_scores(collection, experiment,
                                                                                          where).values()))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        measured = frame[frame["n"] > 0]
        frame["chosen"] = False
        if not measured.empty:
            frame.loc[measured["val_mean"].idxmax(), "chosen"] = True
    return frame


def sweep_markdown(frame: pd.DataFrame, sweep: Sweep) -> str:
    header = [*sweep.values, "experiment", "val macro-F1", "test macro-F1", "n", "chosen"]
    rows = [[*(r[k] for k in sweep.values), f"`{r['experiment']}`" + (" (default)" if r["default"] else ""),
             fmt_mean_std(r["val_mean"], r["val_std"], r["n"], 3), fmt_mean_std(r["test_mean"], r["test_std"], r["n"], 3),
             r["n"], "**chosen** (validation)" if r["chosen"] else ""] for r in frame.to_dict("records")]
    return markdown_table(header, rows)


def sweeps_section(collection: Collection, outputs) -> list:
    """## Sweeps: a table and a plot per swept experiment that has runs."""
    from hw5.report.document import Markdown
    from .plots import plot_sweep
    blocks = []
    for name, sweep in collection.scope.sweeps.items():
        frame = sweep_frame(collection, sweep)
        if frame.empty or not (frame["n"] > 0).any():
            continue
        table = sweep_markdown(frame, sweep)
        write_table(outputs.tables, f"sweep_{name}", frame, table)
        blocks.append(Markdown(f"### Sweep `{name}`\n\n{sweep.size} points over {' × '.join(sweep.values)}; "
                               f"the point is chosen by validation macro-F1 (mean over seeds), never by test "
                               f"({outputs.link(outputs.tables / f'sweep_{name}.csv', 'CSV')}):\n\n{table}"))
        blocks += outputs.figure(plot_sweep(name, frame, list(sweep.values), outputs.plots / f"sweep_{name}.png"),
                                 f"{name}: macro-F1 against the swept values (mean ± std over seeds)")
    return [Markdown("## Sweeps"), *blocks] if blocks else []


def sweep_findings(collection: Collection) -> list[str]:
    """A Findings paragraph per sweep: the chosen point against the declared default, on test."""
    out = []
    for name, sweep in collection.scope.sweeps.items():
        frame = sweep_frame(collection, sweep)
        if frame.empty or not frame["chosen"].any():
            continue
        chosen = frame[frame["chosen"]].iloc[0]
        out.append(_finding(collection, sweep, frame, chosen))
    return out


def _finding(collection: Collection, sweep: Sweep, frame: pd.DataFrame, chosen) -> str:
    tried = int((frame["n"] > 0).sum())
    what = ", ".join(f"{k}={chosen[k]}" for k in sweep.values)
    head = (f"**Sweep `{sweep.experiment}`** ({tried} of {len(frame)} points with results). Validation "
            f"macro-F1 chooses {what} ({fmt_mean_std(chosen['val_mean'], chosen['val_std'], chosen['n'], 3)}); "
            f"on test it scores {fmt_mean_std(chosen['test_mean'], chosen['test_std'], chosen['n'], 3)}")
    if chosen["default"]:
        comparison = ": the declared default itself, so the sweep found nothing better on validation."
    else:
        base = _scores(collection, sweep.experiment, REPORTED)
        diff = paired_difference(base, _scores(collection, chosen["experiment"], REPORTED))
        default = frame[frame["default"]]
        said = (fmt_mean_std(default.iloc[0]["test_mean"], default.iloc[0]["test_std"], default.iloc[0]["n"], 3)
                if not default.empty else "no result")
        interval = (f" [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}], 95% t-interval over {diff['n_pairs']} "
                    "seed pairs" if not np.isnan(diff["ci_low"]) else "")
        comparison = (f", against {said} for the declared default `{sweep.experiment}`: "
                      f"{diff['diff_mean']:+.3f}{interval}.") if diff["n_pairs"] else \
            f"; the declared default `{sweep.experiment}` has no seeds to pair with."
    return (head + comparison + f" The test score of the chosen point was not used to choose it; with {tried} "
            "points tried, its validation score is the best of several and flatters it a little.")
