"""Launch the study: one job per experiment x seed, as SLURM job arrays (submitit) or locally.

    python jobs/launch.py --prefetch --all                 # login node: models + data into the shared cache
    python jobs/launch.py --all --profile mysite --dry-run # the sbatch request per array + preflight checks
    python jobs/launch.py --all --profile mysite           # submit every missing run; prints job ids, exits
    python jobs/launch.py --status [--watch]               # each run's state, the scheduler's reasons
    python jobs/launch.py --retry-failed                   # resubmit failed and blocked runs (same profile)
    python jobs/launch.py --all --smoke --cluster local    # the demo: tiny runs here, waits, summary
    python jobs/launch.py --all --profile mysite --pack 5  # five runs of a task per job: one queue wait

A run is done when its metrics.json carries the current run key (config hash + data fingerprint);
done and queued runs are skipped, stale ones (config or data changed) re-run only with --force.
Each job carries its config as resolved at submission. --status and --retry-failed reuse the profile
recorded at submission unless --profile says otherwise. Profiles: slurm/profiles/ (slurm/README.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

if str(Path(__file__).resolve().parent.parent) not in sys.path:   # `python jobs/launch.py` without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    from hw5.config import REPO_ROOT, ConfigError, config_dict, load_grid, parse_seeds as config_seeds
    from hw5.contract import data_fingerprint, run_key
    from hw5.errors import StorageError
    from hw5.io import check_room
    from jobs import container, limits, slurm_site
    from jobs.pack import RunSpec
    from jobs.ledger import Ledger
    from jobs.profiles import Profile, ProfileError, load_profile, wants_gpu
    from jobs.runner import (LocalRunsStopped, SubmissionRefused, make_packs, plan_arrays, run_in_process,
                             run_locally, sbatch_request, submit_to_slurm)
    from jobs.scheduler import wait_for_runs
    from jobs.status import TrackedRun, print_failures, print_table, refresh_states
except ModuleNotFoundError as missing:      # a python without the project's packages
    if (missing.name or "").split(".")[0] in ("hw5", "jobs"):
        raise
    sys.exit(f"error: python module '{missing.name}' is not installed here: run the launcher with the project's "
             f"environment (make venv, then .venv/bin/python jobs/launch.py), or pip install -e '.[launch]'")

WATCH_S = 10.0
MAX_RUNS = 1000            # a launch of more runs than this asks for --yes (a typo in --seeds, say)
DRY_RUN_ARRAYS = 20        # a dry run shows this many arrays' sbatch requests in full, then one line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python jobs/launch.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    what = p.add_argument_group("which runs (experiments x seeds from jobs/experiments.yaml)")
    what.add_argument("--all", action="store_true", help="every experiment of the grid")
    what.add_argument("--only", action="append", metavar="GLOB",
                      help="experiment names matching GLOB (repeatable, or comma-separated): 'nli-*'")
    what.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 0,1,2 or 0-4 (default: the grid's)")
    what.add_argument("--smoke", action="store_true", help="the tiny smoke version of each run (results/smoke/)")
    what.add_argument("--experiments", metavar="PATH", help="experiments file (default: jobs/experiments.yaml,"
                      " or $HW5_EXPERIMENTS)")
    do = p.add_argument_group("what to do (default: submit what is missing)")
    do.add_argument("--status", action="store_true", help="show each run's state and exit (never blocks)")
    do.add_argument("--watch", action="store_true", help="--status, refreshed until no run is queued or running")
    do.add_argument("--dry-run", action="store_true",
                    help="show the plan, the sbatch request per array and the preflight checks; submit nothing")
    do.add_argument("--retry-failed", action="store_true",
                    help="resubmit only failed and blocked runs (a blocked job is cancelled first)")
    do.add_argument("--force", action="store_true", help="also re-run stale and corrupt runs (replacing them)")
    do.add_argument("--yes", action="store_true",
                    help=f"submit a launch of more than {MAX_RUNS:,} runs (without it, such a launch stops to ask)")
    do.add_argument("--no-preflight", action="store_true",
                    help="SLURM: submit without checking the request against the partition first")
    do.add_argument("--prefetch", action="store_true",
                    help="download models and prepare data for the selected runs (login node), then exit")
    do.add_argument("--wait", action="store_true",
                    help="SLURM: wait until the jobs end, with a progress line; exit 1 unless all are done")
    do.add_argument("--pack", type=int, metavar="N",
                    help="up to N runs of one task per job, one after the other, sharing weights and data "
                         "(default: the profile's runs_per_job, 1)")
    do.add_argument("--runs-per-gpu", type=int, metavar="K",
                    help="packed jobs: up to K of a pack's runs at once, each in its own process on the job's "
                         "GPU, started while its memory has room (default: the profile's runs_per_gpu, 1)")
    where = p.add_argument_group("where")
    where.add_argument("--cluster", choices=("auto", "slurm", "local", "debug"), default="auto",
                       help="auto: SLURM when a controller answers; local processes only when no SLURM profile "
                            "was asked for; debug: in this process")
    where.add_argument("--profile", default=os.environ.get("HW5_PROFILE"),
                       help="cluster profile: a name in slurm/profiles/ or a YAML path (default: the one "
                            "recorded at submission, else 'local'; $HW5_PROFILE)")
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
    try:
        return config_seeds(text)
    except ValueError as exc:
        fail(f"--seeds {text}: {exc}")


def select_experiments(names: list[str], only: list[str] | None, grid_file: Path) -> list[str]:
    """The experiments matching any of the globs. A comma separates globs, except inside a sweep point's
    name, where `,field=` goes on with the point (nli-full@lr=2e-05,epochs=4)."""
    if not only:
        return names
    globs = [g.strip() for item in only for g in re.split(r",(?![A-Za-z_]\w*=)", item) if g.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        fail(f"--only {','.join(globs)} matches no experiment in {grid_file} (known: {', '.join(names)})")
    return chosen


def expand_runs(args: argparse.Namespace) -> list[TrackedRun]:
    """The selected runs, each with its config resolved now (what a job will carry) and its key."""
    grid = load_grid(args.experiments)
    names = select_experiments(grid.experiments, args.only, grid.path)
    if not args.status:
        describe_sweeps(grid, names)
    seeds = parse_seeds(args.seeds) if args.seeds else grid.seeds
    results, ckpts = Path(args.results).resolve(), Path(args.checkpoints).resolve()
    data = str(Path(args.data_dir).expanduser().resolve())   # absolute: a node's cwd may differ
    runs = []
    for name in names:
        cfg = grid.resolve(name, args.smoke)
        fingerprint = data_fingerprint(cfg, data)
        for seed in seeds:
            spec = RunSpec(name, seed, args.smoke, str(results), str(grid.path), data,
                           checkpoint_dir=str(ckpts / ("smoke" if args.smoke else "") / name / f"seed-{seed}"),
                           config=config_dict(cfg))
            runs.append(TrackedRun(spec, run_key(name, seed, args.smoke, cfg, fingerprint)))
    return runs


def describe_sweeps(grid, names: list[str]) -> None:
    """One line per sweep the selection touches: how many points it expands to."""
    for experiment, sweep in grid.sweeps.items():
        chosen = [n for n in names if n in sweep.points]
        if not chosen:
            continue
        sizes = " x ".join(f"{field} {len(values)}" for field, values in sweep.values.items())
        default = (f"; {sweep.default_point} is the declared default, run as {experiment}"
                   if sweep.default_point else "")
        print(f"sweep {experiment}: {sweep.size} points ({sizes}){default}; {len(chosen)} selected here")


def choose_profile(args: argparse.Namespace, runs: list[TrackedRun], ledger: Ledger) -> Profile:
    """--profile / $HW5_PROFILE, else the profile these runs were last submitted with, else 'local'."""
    if args.profile:
        return load_profile(args.profile)
    records = ledger.latest()
    used = sorted((r for r in (records.get(run.id) for run in runs) if r and r.profile_path),
                  key=lambda r: r.submitted)
    if not used:
        return load_profile("local")
    recorded = used[-1]
    if not Path(recorded.profile_path).is_file():
        fail(f"these runs were submitted with profile {recorded.profile_path}, which is gone; pass --profile")
    print(f"profile: {recorded.profile} (recorded at submission in {ledger.records_path}; --profile overrides)")
    return load_profile(recorded.profile_path)


def pick_cluster(requested: str, profile: Profile) -> str:
    """Where runs go. A SLURM profile (any but 'local') or --cluster slurm never falls back to local."""
    if requested in ("local", "debug"):
        return requested
    problem = slurm_site.controller_problem()
    if problem is None:
        return "slurm"
    if requested == "slurm" or profile.name != "local":
        asked = "--cluster slurm" if requested == "slurm" else f"profile {profile.name} ({profile.path})"
        fail(slurm_site.no_controller_message(problem, asked))
    print(f"cluster: local (no SLURM controller: {problem}; the runs go to processes on this machine)")
    return "local"


WANTED = {"submit": {"missing", "partial", "interrupted"}, "force": {"stale", "corrupt"},
          "retry": {"failed", "blocked"}}
HINTS = {"done": "done", "running": "running", "pending": "queued", "unknown": "scheduler did not answer",
         "interrupted": "interrupted (resumed from its checkpoint)",
         "blocked": "blocked (fix the profile, then --retry-failed)", "failed": "failed (resubmit with --retry-failed)",
         "stale": "stale (re-run with --force)", "corrupt": "corrupt (re-run with --force)",
         "missing": "missing (not selected by --retry-failed)", "partial": "partial (not selected by --retry-failed)"}


def plan_actions(runs: list[TrackedRun], args: argparse.Namespace) -> list[tuple[TrackedRun, str]]:
    """(run, action) pairs; action is 'submit' or why the run is skipped."""
    wanted = set(WANTED["retry"] if args.retry_failed else WANTED["submit"])
    if args.force:
        wanted |= WANTED["force"]
    return [(run, "submit" if run.state in wanted else f"skip: {HINTS[run.state]}") for run in runs]


def job_specs(todo: list[TrackedRun], profile: Profile, cluster: str) -> list[RunSpec]:
    """What each job carries besides the run: may it replace a result, must it see a GPU."""
    gpu = cluster == "slurm" and wants_gpu(profile) and not profile.slurm["allow_cpu"]
    return [dataclasses.replace(run.spec, replace=run.state in WANTED["force"], require_cuda=gpu,
                                signal_delay_s=profile.slurm["signal_delay_s"]) for run in todo]


def submit(runs: list[TrackedRun], args: argparse.Namespace, ledger: Ledger, profile: Profile) -> int:
    actions = plan_actions(runs, args)
    todo = [run for run, action in actions if action == "submit"]
    cluster = pick_cluster(args.cluster, profile)
    print(f"cluster: {cluster}, profile: {profile.name} ({profile.path})")
    print_table(runs, {run.id: action for run, action in actions})
    if not todo:
        print("nothing to submit")
        return 0
    specs = job_specs(todo, profile, cluster)
    runs_per_job = args.pack or profile.runs_per_job
    lanes = args.runs_per_gpu or profile.runs_per_gpu
    if lanes > 1 and runs_per_job < 2:
        fail(f"{lanes} runs per GPU need packed jobs: add --pack N (N >= {lanes}) or set runs_per_job "
             f"in {profile.path}")
    keys = {run.id: run.key for run in todo}
    paths = container.JobPaths.of_launch(Path(args.results), Path(args.checkpoints),
                                         Path(args.data_dir).expanduser(), Path(specs[0].config_path),
                                         ledger.root / "steps")
    if cluster != "slurm":
        if args.dry_run:
            print("dry run: nothing submitted")
            return 0
        return (run_locally if cluster == "local" else run_in_process)(make_packs(specs, runs_per_job), keys,
                                                                       profile, ledger, paths, lanes)
    image = check_image(profile) if profile.container["kind"] != "none" else None
    if profile.container["kind"] != "none" and image is None:
        print("nothing submitted (the image check above)")
        return 2
    arrays = plan_arrays(specs, profile, ledger, paths, runs_per_job, lanes, image)
    per_task = Counter(str((spec.config or {}).get("task", spec.experiment)) for spec in specs).values()
    code = show_and_check(arrays, profile, args, lambda n: sum(-(-count // n) for count in per_task), len(specs))
    if code or args.dry_run:
        print("dry run: nothing submitted" if args.dry_run else "nothing submitted (fix the profile, or --no-preflight)")
        return code
    cancel_blocked(todo)
    try:
        submit_to_slurm(arrays, keys, profile, ledger, paths, image)
    except SubmissionRefused as exc:
        fail(str(exc), code=1)
    return 0


def check_image(profile: Profile) -> "container.Image | None":
    """A container profile's image, read and checked against the checkout before anything is submitted:
    the Image, or None after printing why it may not run."""
    c = profile.container
    try:
        image = container.inspect_image(c, c["kind"])
    except container.ContainerError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return None
    print(f"image: {image.describe()}; the job runs {image.run_as}")
    problems = container.code_problems(image, c["code"], REPO_ROOT, profile.path, c["engine"])
    if problems:
        print("image check: the image may not run this checkout's jobs:", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return None
    said = ("the checkout's code runs (container.code: checkout), on the image's stack" if c["code"] == "checkout"
            else f"its revision is the checkout's HEAD ({image.revision[:12]}), both clean: the image's code runs")
    print(f"image check: ok ({said})")
    return image


def show_and_check(arrays, profile: Profile, args: argparse.Namespace, jobs_with_pack, runs: int) -> int:
    """Print each array's sbatch request (dry run) and the preflight problems; 2 when there are any."""
    if args.dry_run:
        for array in arrays[:DRY_RUN_ARRAYS]:
            print(f"\nsbatch request for {array.name} ({len(array.specs)} run(s)):")
            print("\n".join(f"  {flag}" for flag in sbatch_request(array.script)))
        if len(arrays) > DRY_RUN_ARRAYS:
            print(f"\n... and {len(arrays) - DRY_RUN_ARRAYS} more arrays alike: "
                  + ", ".join(f"{a.name} ({len(a.packs)} jobs)" for a in arrays[DRY_RUN_ARRAYS:]))
    if args.no_preflight:
        print("preflight: skipped (--no-preflight)")
        return 0
    problems = slurm_site.preflight(profile.slurm, profile.path, [a.script for a in arrays])
    site = limits.read_limits(profile.slurm["account"], profile.slurm["qos"], profile.slurm["partition"])
    problems += limits.limit_problems(site, [len(a.packs) for a in arrays], jobs_with_pack,
                                      limits.queued_jobs(), runs)
    if not problems:
        at_once = f"; at most {site.max_jobs} run at once (MaxJobs)" if site.max_jobs else ""
        print(f"preflight: ok (partition {profile.slurm['partition'] or 'default'}, "
              f"sbatch --test-only accepted {len(arrays)} request(s), {sum(len(a.packs) for a in arrays)} job(s) "
              f"within the site's limits{at_once})")
        return 0
    print(f"preflight: {len(problems)} problem(s); these jobs could never start:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def cancel_blocked(todo: list[TrackedRun]) -> None:
    """--retry-failed resubmits a blocked run: its job would never start, so it is cancelled first."""
    blocked = [run for run in todo if run.state == "blocked" and run.record]
    if blocked:
        slurm_site.run_command(["scancel", *[run.record.job_id for run in blocked]])
        for run in blocked:
            print(f"cancelled blocked job {run.record.job_id} ({run.spec.name})")


def show_status(runs: list[TrackedRun], ledger: Ledger, args: argparse.Namespace) -> int:
    if not args.watch:
        print_table(refresh_states(runs, ledger))
        print_failures(runs, ledger)
        return 0
    def show(final):
        print_table(final)
        print_failures(final, ledger)
    return wait_for_runs(lambda: refresh_states(runs, ledger), show, poll_s=WATCH_S)


def main(argv: list[str] | None = None) -> int:
    """The CLI; Ctrl-C or SIGTERM is one line and exit status 130 (local runs stop with a checkpoint)."""
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        return launch(argv)
    except LocalRunsStopped as stop:
        print(str(stop), file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopped (SLURM jobs already submitted go on: python jobs/launch.py --status)", file=sys.stderr)
    return 130


def _stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def launch(argv: list[str] | None) -> int:
    args = parse_args(argv)
    args.status = args.status or args.watch
    if args.pack is not None and args.pack < 1:
        fail(f"--pack {args.pack}: give the runs per job, 1 or more (1: one job per run)")
    if args.runs_per_gpu is not None and args.runs_per_gpu < 1:
        fail(f"--runs-per-gpu {args.runs_per_gpu}: give the runs at once per job, 1 or more")
    if not (args.all or args.only or args.status or args.retry_failed or args.prefetch):
        fail("say which runs: --all, or --only GLOB (see --help)")
    try:
        runs = expand_runs(args)
        if len(runs) > MAX_RUNS and not (args.yes or args.dry_run or args.status):
            experiments = len({r.spec.experiment for r in runs})
            fail(f"this launch plans {len(runs):,} runs ({experiments} experiment(s) x {len(runs) // experiments:,} "
                 f"seed(s)), more than {MAX_RUNS:,}: check --seeds, look first with --dry-run, or pass --yes")
        ledger = Ledger(Path(args.results))
        if args.status:
            return show_status(runs, ledger, args)
        if args.prefetch:
            from jobs.prefetch import prefetch_runs
            return prefetch_runs(list(dict.fromkeys((r.spec.experiment, r.spec.smoke, r.spec.config_path)
                                                     for r in runs)), args.data_dir)
        check_room(Path(args.results), 10, "results")   # records and results, before anything is submitted
        profile = choose_profile(args, runs, ledger)
        with ledger.lock():   # check-and-submit is atomic across launchers
            code = submit(refresh_states(runs, ledger), args, ledger, profile)
        if args.wait and not args.dry_run and code == 0:
            time.sleep(1)     # let the controller list what was just submitted
            code = wait_for_runs(lambda: refresh_states(runs, ledger), print_table)
        return code
    except (ConfigError, ProfileError, StorageError) as exc:
        fail(str(exc))
    return 2


if __name__ == "__main__":
    sys.exit(main())
