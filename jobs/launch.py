"""Launch the study: one job per experiment x seed, as SLURM job arrays (submitit) or locally.

    python jobs/launch.py --prefetch --all           # login node: models + data into the shared cache
    python jobs/launch.py --all                      # submit every missing run; prints job ids, exits
    python jobs/launch.py --status                   # done / running / pending / failed / missing / stale
    python jobs/launch.py --retry-failed             # resubmit only the failed runs
    python jobs/launch.py --all --smoke --cluster local   # the demo: tiny runs here, waits, summary

A run is done when results/<exp>/seed-<n>/metrics.json carries the current config hash; done runs are
skipped, queued/running ones too, stale ones (config changed) are re-run only with --force.
Cluster settings come from a profile in slurm/profiles/ (see slurm/README.md).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:   # `python jobs/launch.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from hw5.config import ConfigError, config_hash, load_grid, resolve_config  # noqa: E402
from jobs import ledger as ledger_mod  # noqa: E402
from jobs.job import RunSpec  # noqa: E402
from jobs.ledger import Ledger, Record  # noqa: E402
from jobs.profiles import ProfileError, load_profile  # noqa: E402
from jobs.runner import run_in_process, run_locally, submit_to_slurm, wait_for_runs  # noqa: E402

STATES = ("done", "running", "pending", "failed", "missing", "stale", "unknown")


@dataclass
class Run:
    spec: RunSpec
    config_hash: str
    state: str = "missing"
    detail: str = ""
    record: Record | None = None

    @property
    def key(self) -> tuple:
        return (self.spec.experiment, self.spec.seed, self.spec.smoke)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python jobs/launch.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    what = p.add_argument_group("which runs (experiments x seeds from jobs/experiments.yaml)")
    what.add_argument("--all", action="store_true", help="every experiment of the grid")
    what.add_argument("--only", action="append", metavar="GLOB",
                      help="experiment names matching GLOB (repeatable, or comma-separated): 'nli-*'")
    what.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 0,1,2 or 0-4 (default: the grid's)")
    what.add_argument("--smoke", action="store_true", help="the tiny smoke version of each run")
    what.add_argument("--experiments", metavar="PATH", help="experiments file (default: jobs/experiments.yaml,"
                      " or $HW5_EXPERIMENTS)")
    do = p.add_argument_group("what to do (default: submit what is missing)")
    do.add_argument("--status", action="store_true", help="show each run's state and exit (never blocks)")
    do.add_argument("--dry-run", action="store_true", help="show what would be submitted; submit nothing")
    do.add_argument("--retry-failed", action="store_true", help="resubmit only the failed runs")
    do.add_argument("--force", action="store_true", help="also re-run stale runs (config changed since)")
    do.add_argument("--prefetch", action="store_true",
                    help="download models and prepare data for the selected runs (login node), then exit")
    do.add_argument("--wait", action="store_true", help="SLURM: wait until the submitted jobs end")
    where = p.add_argument_group("where")
    where.add_argument("--cluster", choices=("auto", "slurm", "local", "debug"), default="auto",
                       help="auto: SLURM when sbatch answers, else local processes; debug: in this process")
    where.add_argument("--profile", default=os.environ.get("HW5_PROFILE", "local"),
                       help="cluster profile: a name in slurm/profiles/ or a YAML path (default: %(default)s)")
    where.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    where.add_argument("--data-dir", metavar="DIR", default=os.environ.get("HW5_DATA_DIR", "data"),
                       help="datasets folder (default: $HW5_DATA_DIR or data)")
    where.add_argument("--checkpoints", metavar="DIR", default=os.environ.get("HW5_CHECKPOINT_DIR", "checkpoints"),
                       help="checkpoint root, outside results (default: $HW5_CHECKPOINT_DIR or checkpoints)")
    return p.parse_args(argv)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        fail(f"--seeds '{text}': expected integers like 0,1,2 or a range like 0-4")
    return list(dict.fromkeys(seeds))


def select_experiments(names: list[str], only: list[str] | None, grid_file: Path) -> list[str]:
    if not only:
        return names
    globs = [g.strip() for item in only for g in item.split(",") if g.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        fail(f"--only {','.join(globs)} matches no experiment in {grid_file} (known: {', '.join(names)})")
    return chosen


def expand_runs(args: argparse.Namespace) -> list[Run]:
    grid = load_grid(args.experiments)
    names = select_experiments(grid.experiments, args.only, grid.path)
    seeds = parse_seeds(args.seeds) if args.seeds else grid.seeds
    results, ckpts = Path(args.results).resolve(), Path(args.checkpoints).resolve()
    data = str(Path(args.data_dir).expanduser().resolve())   # absolute: a node's cwd may differ
    runs = []
    for name in names:
        chash = config_hash(resolve_config(name, args.smoke, grid.path))
        for seed in seeds:
            spec = RunSpec(name, seed, args.smoke, str(results), str(grid.path), data,
                           checkpoint_dir=str(ckpts / name / f"seed-{seed}"))
            runs.append(Run(spec, chash))
    return runs


def disk_state(run: Run) -> tuple[str, str]:
    """hw5.run.run_status's rule, without importing torch (--status stays instant on a login node)."""
    path = Path(run.spec.results_dir) / run.spec.experiment / f"seed-{run.spec.seed}" / "metrics.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("config_hash")
    except FileNotFoundError:
        return "missing", ""
    except (OSError, ValueError, AttributeError) as exc:
        return "stale", f"{path} is unreadable ({type(exc).__name__}); re-run with --force"
    if old == run.config_hash:
        return "done", ""
    return "stale", f"metrics.json has config {old}, the config is now {run.config_hash}"


def refresh_states(runs: list[Run], ledger: Ledger) -> list[Run]:
    """Fill each run's state from disk, the submission records and the scheduler (non-blocking)."""
    records = ledger.latest()
    for run in runs:
        run.state, run.detail = disk_state(run)
        run.record = records.get(run.key)
    asked = [r.record for r in runs if r.record and r.state != "done"]
    scheduler = ledger_mod.scheduler_states(asked)
    for run in runs:
        if run.state == "done" or run.record is None or run.record.cluster == "debug":
            continue
        live = scheduler.get(run.record.job_id)
        if live in ledger_mod.LIVE or run.record.config_hash == run.config_hash:
            # a live job blocks resubmission even when it runs an older config
            state, detail = ledger_mod.job_state(run.record, live)
            if not (state == "missing" and run.state == "stale"):
                run.state, run.detail = state, detail
    return runs


def plan(runs: list[Run], args: argparse.Namespace) -> list[tuple[Run, str]]:
    """(run, action) pairs; action is 'submit' or why the run is skipped."""
    wanted = {"failed"} if args.retry_failed else {"missing"}
    if args.force:
        wanted.add("stale")
    hints = {"done": "done", "running": "running", "pending": "queued", "unknown": "scheduler did not answer",
             "failed": "failed (resubmit with --retry-failed)", "stale": "stale (re-run with --force)",
             "missing": "missing (not selected by --retry-failed)"}
    return [(run, "submit" if run.state in wanted else f"skip: {hints[run.state]}") for run in runs]


def print_table(runs: list[Run], actions: dict[tuple, str] | None = None) -> None:
    last = "action" if actions else "detail"
    print(f"{'experiment':<18} {'seed':>4}  {'state':<8} {'job':<12} {'config':<8}  {last}")
    for run in runs:
        job = run.record.job_id if run.record else "-"
        extra = actions[run.key] if actions else _first_line(run.detail)
        print(f"{run.spec.experiment:<18} {run.spec.seed:>4}  {run.state:<8} {job:<12} {run.config_hash:<8}  {extra}")
    counts = {s: sum(r.state == s for r in runs) for s in STATES}
    print("total: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" (of {len(runs)} runs)")


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:100] if lines else ""


def print_failures(runs: list[Run], ledger: Ledger) -> None:
    for run in (r for r in runs if r.state == "failed"):
        log = ledger.log_link(run.spec.experiment, run.spec.seed)
        print(f"\n--- {run.spec.name} failed (job {run.record.job_id}); logs: {log}/")
        print("\n".join(run.detail.rstrip().splitlines()[-25:]))


def pick_cluster(requested: str) -> str:
    if requested == "slurm" and shutil.which("sbatch") is None:
        fail("--cluster slurm: sbatch not found (run on a login node, or start one: "
             "bash slurm/local_cluster.sh start)")
    if requested != "auto":
        return requested
    if shutil.which("sbatch") is None:
        return "local"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return "local"
    return "slurm" if "UP" in ping.stdout else "local"


def submit(runs: list[Run], args: argparse.Namespace, ledger: Ledger) -> int:
    cluster = pick_cluster(args.cluster)
    profile = load_profile(args.profile)
    actions = plan(runs, args)
    todo = [run.spec for run, action in actions if action == "submit"]
    print(f"cluster: {cluster}, profile: {profile.path}")
    print_table(runs, {run.key: action for run, action in actions})
    if args.dry_run or not todo:
        print("dry run: nothing submitted" if args.dry_run else "nothing to submit")
        return 0
    hashes = {run.key: run.config_hash for run in runs}
    shared = [REPO_ROOT, Path(args.results).resolve(), Path(args.checkpoints).resolve(),
              Path(args.data_dir).expanduser().resolve()]
    if cluster == "slurm":
        submit_to_slurm(todo, hashes, profile, ledger, shared)
        return 0
    runner = run_locally if cluster == "local" else run_in_process
    return runner(todo, hashes, profile, ledger, shared)


def prefetch(runs: list[Run], data_dir: str) -> int:
    from jobs.prefetch import prefetch_runs
    return prefetch_runs(list(dict.fromkeys((r.spec.experiment, r.spec.smoke, r.spec.config_path) for r in runs)),
                         data_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.all or args.only or args.status or args.retry_failed or args.prefetch):
        fail("say which runs: --all, or --only GLOB (see --help)")
    try:
        runs = expand_runs(args)
        ledger = Ledger(Path(args.results))
        if args.status:
            print_table(refresh_states(runs, ledger))
            print_failures(runs, ledger)
            return 0
        if args.prefetch:
            return prefetch(runs, args.data_dir)
        with ledger.lock():   # check-and-submit is atomic across launchers
            code = submit(refresh_states(runs, ledger), args, ledger)
        if args.wait and not args.dry_run:
            code = max(code, wait_for_runs(lambda: refresh_states(runs, ledger), print_table))
        return code
    except (ConfigError, ProfileError) as exc:
        fail(str(exc))
    return 2


if __name__ == "__main__":
    sys.exit(main())
