"""Find every run under the results folder, read its metrics.json and decide whether it may be averaged.

Status of one (experiment, seed):
  done     metrics.json is valid and its config_hash matches its siblings' (used in every table)
  stale    valid, but its config_hash differs from the experiment's reference hash (excluded)
  corrupt  metrics.json exists but is unreadable or breaks the schema (named, excluded, exit 1)
  partial  the seed folder exists without metrics.json: the run died or is still going (excluded)
  missing  no seed folder at all (excluded)
  ignored  a seed folder for a seed outside the requested list (excluded, listed)
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The study's experiments in the order the assignment's tables use; the first of each is the baseline.
TASK_EXPERIMENTS = {
    "nli": ["nli-full", "nli-freeze9", "nli-lastonly", "nli-first9", "nli-prune50"],
    "ser": ["ser-mean", "ser-attnstats", "ser-fixedpad", "ser-noweight", "ser-speaker"],
}
BASELINES = {task: names[0] for task, names in TASK_EXPERIMENTS.items()}
SEED_DIR = re.compile(r"^seed-(\d+)$")
# Keys every metrics.json must carry for the run to enter a table (schema 1, docs/architecture.md).
REQUIRED_KEYS = ("experiment", "task", "seed", "config_hash", "classes", "test")
REQUIRED_TEST_KEYS = ("accuracy", "macro_f1", "weighted_f1", "uar")


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
class Grid:
    """What should exist: experiment -> task (in table order) and the seeds."""
    tasks: dict[str, str]
    seeds: list[int]
    source: str                    # where the grid came from, for the report
    declared: set[str] = field(default_factory=set)  # named in the experiments file (task is given)


@dataclass
class Collection:
    """Everything the tables, plots and report need."""
    grid: Grid
    runs: dict[tuple[str, int], Run] = field(default_factory=dict)
    reference_hash: dict[str, str] = field(default_factory=dict)

    def experiments(self, task: str | None = None) -> list[str]:
        return [e for e, t in self.grid.tasks.items() if task is None or t == task]

    def done(self, experiment: str) -> list[Run]:
        """Runs that may be averaged, ordered by seed."""
        cells = [r for (e, _), r in self.runs.items() if e == experiment and r.status == "done"]
        return sorted(cells, key=lambda r: r.seed)

    def with_status(self, *statuses: str) -> list[Run]:
        """Runs in any of `statuses`, in table order (grid order, then seed)."""
        order = list(self.grid.tasks)
        return sorted((r for r in self.runs.values() if r.status in statuses),
                      key=lambda r: (order.index(r.experiment), r.seed))


def task_of(name: str) -> str:
    """The task an experiment belongs to, from its `<task>-<variant>` name."""
    return name.split("-", 1)[0]


def read_grid(path: Path, explicit: bool) -> dict | None:
    """The experiments file as {"seeds": [...], "tasks": {name: task}}; None when absent and optional."""
    if not path.is_file():
        if explicit:
            raise AggregateError(f"{path}: experiments file not found; pass an existing --experiments file "
                                 "or leave the option out to use the runs found")
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AggregateError(f"{path}: not valid YAML ({exc}); fix the file or pass another --experiments")
    experiments = data.get("experiments") if isinstance(data, dict) else None
    seeds = data.get("seeds", []) if isinstance(data, dict) else None
    if not isinstance(experiments, dict) or not isinstance(seeds, list) \
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise AggregateError(f"{path}: expected top-level 'seeds' (a list of integers) and 'experiments' "
                             "(a mapping of experiment names); fix the file or pass another --experiments")
    tasks = {str(name): str((spec if isinstance(spec, dict) else {}).get("task") or task_of(str(name)))
             for name, spec in experiments.items()}
    return {"seeds": seeds, "tasks": tasks}


def scan_results(results_dir: Path) -> dict[str, dict[int, Path]]:
    """{experiment: {seed: seed folder}} for every results/<exp>/seed-<n>/ present."""
    found: dict[str, dict[int, Path]] = {}
    for exp_dir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        seeds = {int(m.group(1)): d for d in exp_dir.iterdir() if d.is_dir() and (m := SEED_DIR.match(d.name))}
        if seeds:
            found[exp_dir.name] = dict(sorted(seeds.items()))
    return found


def load_metrics(path: Path, experiment: str, seed: int) -> tuple[dict | None, str]:
    """Parse and check one metrics.json: (metrics, "") or (None, what is wrong with it)."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not readable JSON ({exc})"
    if not isinstance(metrics, dict):
        return None, "top level is not a JSON object"
    missing = [k for k in REQUIRED_KEYS if k not in metrics]
    test = metrics.get("test")
    if isinstance(test, dict):
        missing += [f"test.{k}" for k in REQUIRED_TEST_KEYS if not _is_number(test.get(k))]
    elif "test" in metrics:
        missing.append("test (not an object)")
    if "classes" in metrics and not (isinstance(metrics["classes"], list)
                                     and all(isinstance(c, str) for c in metrics["classes"])):
        missing.append("classes (not a list of names)")
    if missing:
        return None, f"missing or non-numeric keys: {', '.join(missing)}"
    if metrics["experiment"] != experiment or metrics["seed"] != seed:
        return None, (f"says experiment={metrics['experiment']!r} seed={metrics['seed']!r} but sits in "
                      f"{experiment}/seed-{seed}; move it or rerun")
    return metrics, ""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def reference_hash(runs: list[Run]) -> str:
    """The config hash most seeds agree on; a tie goes to the most recently finished run."""
    counts = Counter(r.metrics["config_hash"] for r in runs)
    finished = {}
    for r in runs:
        stamp = str((r.metrics.get("provenance") or {}).get("finished") or "")
        finished[r.metrics["config_hash"]] = max(stamp, finished.get(r.metrics["config_hash"], ""))
    return max(counts, key=lambda h: (counts[h], finished[h], h))


def display_path(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it (no machine-specific prefix)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        return Path(path).resolve().relative_to(repo).as_posix()
    except ValueError:
        return str(path)


def build_grid(grid_file: dict | None, found: dict[str, dict[int, Path]], seeds: list[int] | None,
               grid_path: Path) -> Grid:
    """Expected experiments and seeds: from the experiments file when present, else from the runs found."""
    canonical = [e for names in TASK_EXPERIMENTS.values() for e in names]
    if grid_file is not None:
        tasks, source = dict(grid_file["tasks"]), f"`{display_path(grid_path)}`"
        tasks.update({e: task_of(e) for e in found if e not in tasks})  # runs outside the grid still show
        grid_seeds = grid_file["seeds"]
    else:
        order = sorted(found, key=lambda e: (canonical.index(e) if e in canonical else len(canonical), e))
        tasks, source = {e: task_of(e) for e in order}, "the runs found (no experiments file)"
        grid_seeds = sorted({s for per_seed in found.values() for s in per_seed})
    declared = set(grid_file["tasks"]) if grid_file is not None else set()
    return Grid(tasks=tasks, seeds=list(seeds if seeds is not None else grid_seeds), source=source,
                declared=declared)


def collect(results_dir: Path, grid_path: Path, grid_explicit: bool = False,
            seeds: list[int] | None = None) -> Collection:
    """Read every run and classify it; raises AggregateError only for unusable inputs."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise AggregateError(f"{results_dir}: results folder not found; run the jobs first "
                             "(python jobs/launch.py --all) or pass --results DIR")
    found = scan_results(results_dir)
    grid = build_grid(read_grid(Path(grid_path), grid_explicit), found, seeds, Path(grid_path))
    collection = Collection(grid=grid)
    for experiment in grid.tasks:
        per_seed = found.get(experiment, {})
        for seed in sorted(set(grid.seeds) | set(per_seed)):
            collection.runs[(experiment, seed)] = _read_cell(experiment, seed, per_seed.get(seed), grid.seeds)
        _mark_stale(collection, experiment)
    return collection


def _read_cell(experiment: str, seed: int, seed_dir: Path | None, seeds: list[int]) -> Run:
    if seed_dir is None:
        return Run(experiment, seed, "missing", problem="no run folder")
    if seed not in seeds:
        return Run(experiment, seed, "ignored", seed_dir, problem="seed not in the requested seed list")
    path = seed_dir / "metrics.json"
    if not path.is_file():
        return Run(experiment, seed, "partial", seed_dir, problem="folder without metrics.json (died or running)")
    metrics, problem = load_metrics(path, experiment, seed)
    if metrics is None:
        return Run(experiment, seed, "corrupt", path, problem=problem)
    return Run(experiment, seed, "done", path, metrics)


def _mark_stale(collection: Collection, experiment: str) -> None:
    runs = collection.done(experiment)
    if not runs:
        return
    if experiment not in collection.grid.declared:  # the run knows its task better than its name
        collection.grid.tasks[experiment] = str(runs[0].metrics["task"])
    ref = collection.reference_hash[experiment] = reference_hash(runs)
    for run in runs:
        if run.metrics["config_hash"] != ref:
            run.status = "stale"
            run.problem = f"config_hash {run.metrics['config_hash']} differs from its siblings' {ref}"
