"""Find every run under the results tree, judge it with the run contract and decide whether it may be averaged.

Every seed is judged against the current experiments file by hw5.contract, the same rule `hw5 run`
and the launcher use (config hash, and the data fingerprint where the data is here):
  done     metrics.json is valid and carries the current run key (used in every table)
  stale    valid, but made from another config or other data (listed, never averaged)
  corrupt  metrics.json exists but is unreadable or breaks the schema (named, excluded, exit 1)
  partial  the seed folder exists without metrics.json: the run died or is still going (excluded)
  missing  no seed folder at all (excluded)
  ignored  a seed outside the requested list, or an experiment the experiments file does not name
(the vocabulary is hw5.contract.STATES).
Without an experiments file there is no current config: the newest run of an experiment stands for
it, and seeds with another config hash are stale.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hw5 import contract
from hw5.config import REPO_ROOT, ConfigError, GridSpec, load_grid
from hw5.report_spec import ReportSpec, first_of_each_task
from hw5.sweep import Sweep, base_of

SEED_DIR = re.compile(r"^seed-(\d+)$")


class AggregateError(Exception):
    """A problem the user must fix before anything can be written; str() is the whole message."""


@dataclass
class Run:
    """One (experiment, seed) cell of the grid."""
    experiment: str
    seed: int
    status: str                    # see the module docstring
    path: Path | None = None       # metrics.json (or the seed folder for partial runs)
    metrics: dict | None = None    # parsed metrics.json for done/stale runs
    problem: str = ""              # why the run is not used, for the report


@dataclass
class Scope:
    """What should exist: experiment -> task (in table order) and the seeds."""
    tasks: dict[str, str]
    seeds: list[int]
    source: str                    # where the grid came from, for the report
    declared: set[str] = field(default_factory=set)  # named in the experiments file (task is given)
    report: ReportSpec = field(default_factory=ReportSpec)  # baselines and questions (the file's report:)
    sweeps: dict[str, Sweep] = field(default_factory=dict)  # experiment -> its sweep (its points are in tasks)

    def is_point(self, experiment: str) -> bool:
        sweep = self.sweeps.get(base_of(experiment))
        return sweep is not None and experiment != sweep.experiment


@dataclass
class Collection:
    """Everything the tables, plots and report need."""
    scope: Scope
    runs: dict[tuple[str, int], Run] = field(default_factory=dict)
    reference_hash: dict[str, str] = field(default_factory=dict)
    data_checked: set[str] = field(default_factory=set)   # experiments whose data fingerprint was compared

    def experiments(self, task: str | None = None, points: bool = False) -> list[str]:
        """The experiments of `task` (all tasks: None), in table order; sweep points only when asked:
        they have a section of their own (hw5/report/sweeps.py)."""
        return [e for e, t in self.scope.tasks.items()
                if (task is None or t == task) and (points or not self.scope.is_point(e))]

    def done(self, experiment: str) -> list[Run]:
        """Runs that may be averaged, ordered by seed."""
        cells = [r for (e, _), r in self.runs.items() if e == experiment and r.status == "done"]
        return sorted(cells, key=lambda r: r.seed)

    def setting(self, experiment: str, key: str):
        """A resolved-config value of the experiment, as its lowest-seed usable run recorded it (None if none)."""
        done = self.done(experiment)
        return (done[0].metrics.get("config") or {}).get(key) if done else None

    def with_status(self, *statuses: str) -> list[Run]:
        """Runs in any of `statuses`, in table order (grid order, then seed)."""
        order = list(self.scope.tasks)
        return sorted((r for r in self.runs.values() if r.status in statuses),
                      key=lambda r: (order.index(r.experiment), r.seed))


def read_grid(path: Path, explicit: bool) -> GridSpec | None:
    """The experiments file, parsed by hw5.config (the one reader of the grid); None when absent and optional."""
    if not path.is_file():
        if explicit:
            raise AggregateError(f"{path}: experiments file not found; pass an existing --experiments file "
                                 "or leave the option out to use the runs found")
        return None
    try:
        return load_grid(path)
    except (ConfigError, UnicodeDecodeError) as exc:
        raise AggregateError(f"{exc}; fix the file or pass another --experiments")


def task_on_disk(per_seed: dict[int, Path]) -> str:
    """An experiment's task as its runs recorded it (for experiments no grid declares); "unknown" if no
    metrics.json says."""
    for seed_dir in per_seed.values():
        metrics, _ = contract.read_metrics(seed_dir / "metrics.json")
        if metrics and isinstance(metrics.get("task"), str):
            return metrics["task"]
    return "unknown"


def scan_results(results_dir: Path) -> dict[str, dict[int, Path]]:
    """{experiment: {seed: seed folder}} for every <tree>/<exp>/seed-<n>/ present."""
    found: dict[str, dict[int, Path]] = {}
    for exp_dir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        seeds = {int(m.group(1)): d for d in exp_dir.iterdir() if d.is_dir() and (m := SEED_DIR.match(d.name))}
        if seeds:
            found[exp_dir.name] = dict(sorted(seeds.items()))
    return found


def display_path(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it (no machine-specific prefix)."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def build_scope(grid_file: GridSpec | None, found: dict[str, dict[int, Path]], seeds: list[int] | None,
               grid_path: Path) -> Scope:
    """Expected experiments and seeds: from the experiments file when present, else from the runs found
    (ordered by task, then name; each task's first experiment is its baseline)."""
    on_disk = {e: task_on_disk(per_seed) for e, per_seed in found.items()
               if grid_file is None or e not in grid_file.tasks}
    if grid_file is not None:
        tasks, source = {**grid_file.tasks, **on_disk}, f"`{display_path(grid_path)}`"   # extras: ignored
        grid_seeds, report = grid_file.seeds, grid_file.report
    else:
        tasks = {e: on_disk[e] for e in sorted(on_disk, key=lambda e: (on_disk[e], e))}
        source = "the runs found (no experiments file)"
        grid_seeds, report = sorted({s for per_seed in found.values() for s in per_seed}), None
    declared = set(grid_file.tasks) if grid_file is not None else set()
    return Scope(tasks=tasks, seeds=list(seeds if seeds is not None else grid_seeds), source=source,
                 declared=declared, report=report or ReportSpec(first_of_each_task(tasks)),
                 sweeps=grid_file.sweeps if grid_file is not None else {})


def collect(results_dir: Path, grid_path: Path, grid_explicit: bool = False, seeds: list[int] | None = None,
            smoke: bool = False, data_dir: Path | None = None) -> Collection:
    """Read every run of the (smoke or full) tree and judge it; raises AggregateError only for unusable inputs.
    data_dir: where the datasets are, to compare data fingerprints (None or absent: config only)."""
    tree = contract.results_tree(results_dir, smoke)
    if not tree.is_dir():
        raise AggregateError(f"{tree}: results folder not found; run the jobs first "
                             f"(python jobs/launch.py --all{' --smoke' if smoke else ''}) or pass --results DIR")
    found = scan_results(tree)
    grid_file = read_grid(Path(grid_path), grid_explicit)
    scope = build_scope(grid_file, found, seeds, Path(grid_path))
    collection = Collection(scope=scope)
    for experiment in scope.tasks:
        per_seed = found.get(experiment, {})
        key = _current_key(experiment, scope, grid_file, smoke, data_dir)
        for seed in sorted(set(scope.seeds) | set(per_seed)):
            collection.runs[(experiment, seed)] = _read_cell(experiment, seed, per_seed.get(seed), scope, key, smoke)
        _settle(collection, experiment, key)
    return collection


def _current_key(experiment: str, scope: Scope, grid_file: GridSpec | None, smoke: bool,
                 data_dir: Path | None) -> contract.RunKey | None:
    """The run key a current result carries (seed 0; the seed is set per cell); None without a grid entry."""
    if grid_file is None or experiment not in scope.declared:
        return None
    cfg = grid_file.resolve(experiment, smoke)
    data = contract.data_fingerprint(cfg, data_dir) if data_dir and Path(data_dir).is_dir() else None
    return contract.run_key(experiment, 0, smoke, cfg, data)


def _read_cell(experiment: str, seed: int, seed_dir: Path | None, scope: Scope,
               key: contract.RunKey | None, smoke: bool) -> Run:
    if seed_dir is None:
        return Run(experiment, seed, "missing", problem="no run folder")
    if seed not in scope.seeds:
        return Run(experiment, seed, "ignored", seed_dir, problem="seed not in the requested seed list")
    if scope.declared and experiment not in scope.declared:
        return Run(experiment, seed, "ignored", seed_dir, problem="experiment not in the experiments file")
    if key is None:   # no experiments file: valid runs are judged against the newest one in _settle
        verdict = contract.judge_folder(seed_dir, experiment, seed, smoke)
    else:
        verdict = contract.judge(seed_dir, contract.RunKey(**{**key.as_dict(), "seed": seed}))
    path = seed_dir / "metrics.json" if verdict.state != "partial" else seed_dir
    return Run(experiment, seed, verdict.state, path, verdict.metrics, problem=verdict.detail)


def _settle(collection: Collection, experiment: str, key: contract.RunKey | None) -> None:
    """Record the experiment's current hash; without a grid, seeds unlike the newest run are stale."""
    runs = collection.done(experiment)
    if key is not None:
        collection.reference_hash[experiment] = key.config_hash
        if key.data is not None:
            collection.data_checked.add(experiment)
        return
    if not runs:
        return
    ref = collection.reference_hash[experiment] = newest_hash(runs)
    for run in runs:
        if run.metrics["config_hash"] != ref:
            run.status = "stale"
            run.problem = (f"config_hash {run.metrics['config_hash']} differs from the newest run's {ref} "
                           "(no experiments file to judge against)")


def newest_hash(runs: list[Run]) -> str:
    """The config hash of the most recently finished run."""
    def finished(run: Run) -> str:
        return str((run.metrics.get("provenance") or {}).get("finished") or "")
    return max(runs, key=lambda r: (finished(r), r.metrics["config_hash"])).metrics["config_hash"]
