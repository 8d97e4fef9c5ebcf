#!/usr/bin/env python
"""Turn every results/<exp>/seed-<n>/metrics.json into the study's tables, plots and report.

Reads JSON and the experiments file only (no torch), so it runs anywhere in seconds. Every seed is
judged against the current experiments file by the run contract (hw5/contract.py), as `hw5 run` and
the launcher judge it: stale seeds are listed, never averaged with current ones.

    python aggregate.py                              # results/ + jobs/experiments.yaml
    python aggregate.py --smoke                      # the smoke tree, results/smoke/ (make demo)
    python aggregate.py --results DIR --seeds 0,1,2  # another folder, only these seeds

Writes (atomically) under the results tree: tables/*.md|csv, plots/*.png, report.md, report.ipynb.
Exit status: 0 all inputs read (missing, partial and stale runs are listed, not errors); 1 some
metrics.json was corrupt (named, skipped, everything else written); 2 nothing written (results folder
or experiments file unusable); 3 an internal error (its traceback is printed; the previous outputs
are kept: a pass replaces tables/, plots/ and the report as a set).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import traceback
from pathlib import Path

try:
    from hw5.config import DEFAULT_GRID, parse_seeds as config_seeds
    from hw5.contract import results_tree
    from hw5.report import sections
    from hw5.report.document import Markdown, render_markdown, render_notebook
    from hw5.io import write_text_atomic
    from hw5.report.findings import findings_section
    from hw5.report.numbers import run_frame
    from hw5.report.references import references_section
    from hw5.report.runs import AggregateError, Collection, collect
    from hw5.report.sweeps import sweeps_section
except ModuleNotFoundError as missing:      # a python without the project's packages
    if (missing.name or "").split(".")[0] == "hw5":
        raise
    sys.exit(f"error: python module '{missing.name}' is not installed here: run aggregate.py with the project's "
             f"environment (make venv, then .venv/bin/python aggregate.py), or pip install -e .")

DEFAULT_RESULTS = Path("results")                       # relative to the working directory, like the jobs
DEFAULT_EXPERIMENTS = DEFAULT_GRID                      # the grid the launcher runs


def parse_seeds(text: str) -> list[int]:
    """The launcher's grammar (hw5.config.parse_seeds): 0,1,2 or 0-4."""
    try:
        return config_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aggregate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, metavar="DIR",
                        help="folder holding <exp>/seed-<n>/metrics.json; outputs go here too (default: results)")
    parser.add_argument("--experiments", type=Path, default=None, metavar="YAML",
                        help="grid file naming the expected experiments and seeds (default: $HW5_EXPERIMENTS, "
                             "else jobs/experiments.yaml when it exists, else the runs found)")
    parser.add_argument("--seeds", type=parse_seeds, default=None, metavar="0,1,2",
                        help="expected seeds; others are ignored (default: the grid file's 'seeds')")
    parser.add_argument("--smoke", action="store_true",
                        help="the smoke runs: read and write <results>/smoke/ and judge them by the smoke configs")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("HW5_DATA_DIR") or "data"),
                        metavar="DIR", help="datasets, to compare each run's data fingerprint (default: "
                                            "$HW5_DATA_DIR or data; absent: runs are judged by config only)")
    return parser.parse_args(argv)


def build_blocks(collection: Collection, outputs: sections.Outputs) -> list:
    """Write every table and plot; return the report as blocks in reading order."""
    runs = run_frame(collection)
    blocks = sections.header(collection, runs)
    blocks += sections.status_section(collection, outputs)
    blocks += findings_section(collection, runs)
    blocks += references_section(collection)
    blocks += sections.method_section()
    blocks += sections.stats_section(outputs)
    blocks += sections.hyperparameter_section(collection)
    for task in ("nli", "ser"):
        print(f"aggregate: {task} tables and plots", flush=True)
        blocks += sections.task_section(collection, task, runs, outputs)
    others = sorted(set(collection.scope.tasks.values()) - {"nli", "ser"})
    if others:
        blocks.append(Markdown(f"Experiments of unknown task(s) {', '.join(others)} appear only in the "
                               "table below."))
    blocks += sweeps_section(collection, outputs)
    blocks += sections.overall_section(collection, runs, outputs)
    blocks += sections.reports_appendix(collection)
    return blocks


OUTPUTS = ("tables", "plots", "report.md", "report.ipynb")   # what one pass writes, replaced as a set


@contextlib.contextmanager
def replaced_as_a_set(tree: Path):
    """The previous outputs are moved aside while a pass writes; kept again if it fails, dropped if not."""
    aside = tree / ".aggregate-previous"
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(parents=True)
    for name in OUTPUTS:
        if (tree / name).exists():
            os.replace(tree / name, aside / name)
    try:
        yield
    except BaseException:
        for name in OUTPUTS:
            _remove(tree / name)
            if (aside / name).exists():
                os.replace(aside / name, tree / name)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def report_problems(collection: Collection) -> int:
    """Print what was skipped; the number of corrupt files decides the exit status."""
    corrupt = collection.with_status("corrupt")
    for run in corrupt:
        print(f"aggregate: skipped corrupt {run.path}: {run.problem} (fix or delete it and rerun "
              f"{run.experiment} seed {run.seed})", file=sys.stderr)
    for run in collection.with_status("stale"):
        print(f"aggregate: excluded stale {run.path}: {run.problem} (rerun it: python jobs/launch.py "
              f"--only {run.experiment} --seeds {run.seed} --force)", file=sys.stderr)
    return len(corrupt)


def write_outputs(collection: Collection, tree: Path) -> None:
    with replaced_as_a_set(tree):
        blocks = build_blocks(collection, sections.Outputs(results=tree))
        write_text_atomic(tree / "report.md", render_markdown(blocks, tree))
        write_text_atomic(tree / "report.ipynb", render_notebook(blocks, tree))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = args.experiments or os.environ.get("HW5_EXPERIMENTS")  # the same override hw5 honours
    grid_path = Path(chosen or DEFAULT_EXPERIMENTS)
    try:
        collection = collect(args.results, grid_path, grid_explicit=bool(chosen), seeds=args.seeds,
                             smoke=args.smoke, data_dir=args.data_dir)
    except AggregateError as exc:
        print(f"aggregate: {exc}", file=sys.stderr)
        return 2
    tree = results_tree(args.results, args.smoke)
    try:
        write_outputs(collection, tree)
    except Exception:   # a bug: its traceback stays visible, and the previous outputs are back in place
        traceback.print_exc()
        print(f"aggregate: internal error (please report it); the previous outputs in {tree} are kept",
              file=sys.stderr)
        return 3
    corrupt = report_problems(collection)
    counts = {s: len(collection.with_status(s)) for s in ("done", "missing", "partial", "stale", "corrupt")}
    expected = len(collection.scope.tasks) * len(collection.scope.seeds)
    print(f"aggregate: {counts['done']}/{expected} runs used; " + ", ".join(
        f"{n} {s}" for s, n in counts.items() if s != "done") + f" -> {tree / 'report.md'}")
    return 1 if corrupt else 0


if __name__ == "__main__":
    sys.exit(main())
