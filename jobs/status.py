"""Every run's state, from disk (hw5.contract), the submission records and the scheduler; the table.

The vocabulary is hw5.contract.STATES. What is on disk decides first (done, stale, corrupt); a run's
newest job then says pending (with squeue's reason), blocked (a reason that waiting cannot fix, with the
profile key to change), running or failed (with its traceback); a job that never ran says so.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hw5.config import seed_ranges
from hw5.contract import STATES, RunKey, judge, run_dir
from jobs import scheduler
from jobs.ledger import Ledger, Record
from jobs.pack import RunSpec


@dataclass
class TrackedRun:
    """One (experiment, seed) as the launcher tracks it: what to run, its key, its state and newest job."""
    spec: RunSpec
    key: RunKey
    state: str = "missing"
    detail: str = ""
    record: Record | None = None

    @property
    def id(self) -> tuple:
        return self.spec.id

    @property
    def folder(self) -> Path:
        return run_dir(self.spec.results_dir, self.spec.experiment, self.spec.seed, self.spec.smoke)


def refresh_states(runs: list[TrackedRun], ledger: Ledger) -> list[TrackedRun]:
    """Fill each run's state from disk, the submission records and the scheduler (never blocks)."""
    records = ledger.latest()
    for run in runs:
        verdict = judge(run.folder, run.key)
        run.state, run.detail, run.record = verdict.state, verdict.detail, records.get(run.id)
    asked = [r.record for r in runs if r.record and r.state != "done"]
    said = scheduler.scheduler_states(asked)
    for run in runs:
        if run.state == "done" or run.record is None or run.record.cluster == "debug":
            continue
        live = said.get(run.record.job_id)
        current = run.record.config_hash == run.key.config_hash and run.record.data in (run.key.data, None)
        if (live and live[0] in scheduler.SLURM_LIVE) or current:
            # a live job blocks resubmission even when it runs an older config
            state, detail = scheduler.job_state(run.record, live)
            if not (state == "missing" and run.state in ("stale", "corrupt", "partial")):
                run.state, run.detail = state, detail
    return runs


# One line per experiment instead of one per run past this many seeds in an experiment, or runs in all:
# a table a terminal (or a log) still shows whole.
SUMMARY_SEEDS = 10
SUMMARY_RUNS = 200


def print_table(runs: list[TrackedRun], actions: dict[tuple, str] | None = None) -> None:
    per_experiment = Counter(r.spec.experiment for r in runs)
    if per_experiment and (max(per_experiment.values()) > SUMMARY_SEEDS or len(runs) > SUMMARY_RUNS):
        print_summary(runs, actions)
        return
    last = "action" if actions else "detail"
    width = max([18, *map(len, per_experiment)])
    print(f"{'experiment':<{width}} {'seed':>4}  {'state':<11} {'job':<12} {'config':<8}  {last}")
    for run in runs:
        job = run.record.job_id if run.record else "-"
        extra = actions[run.id] if actions else last_line(run.detail)
        print(f"{run.spec.experiment:<{width}} {run.spec.seed:>4}  {run.state:<11} {job:<12} "
              f"{run.key.config_hash:<8}  {extra}".rstrip())
    counts = {s: sum(r.state == s for r in runs) for s in STATES}
    print("total: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" (of {len(runs)} runs)")


def print_summary(runs: list[TrackedRun], actions: dict[tuple, str] | None = None) -> None:
    """One line per experiment: how many runs are in each state (and what this launch does with them),
    and which seeds are not done."""
    groups: dict[str, list[TrackedRun]] = {}
    for run in runs:
        groups.setdefault(run.spec.experiment, []).append(run)
    width = max([18, *map(len, groups)])
    print(f"{'experiment':<{width}} {'runs':>6}  states" + ("; actions" if actions else "") + "; seeds not done")
    for experiment, group in groups.items():
        states = Counter(r.state for r in group)
        said = ", ".join(f"{states[s]} {s}" for s in STATES if states[s])
        if actions:
            done = Counter(actions[r.id].split(":")[0] for r in group)
            said += "; " + ", ".join(f"{n} {a}" for a, n in sorted(done.items()))
        missing = seed_ranges(r.spec.seed for r in group if r.state != "done") or "-"
        print(f"{experiment:<{width}} {len(group):>6}  {said}; {missing}")
    counts = {s: sum(r.state == s for r in runs) for s in STATES}
    print("total: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" (of {len(runs)} runs)")


def last_line(text: str, width: int = 240) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:width] if lines else ""


def print_failures(runs: list[TrackedRun], ledger: Ledger) -> None:
    """The tail of each failed run's traceback, and where its log is."""
    for run in (r for r in runs if r.state == "failed"):
        log = ledger.log_link(run.spec.experiment, run.spec.seed, run.spec.smoke)
        where = f"; logs: {log}/" if log.exists() else ""
        print(f"\n--- {run.spec.name} failed (job {run.record.job_id}){where}")
        lines = run.detail.rstrip().splitlines()
        head = lines[:1] + ["  ..."] if len(lines) > 25 and lines[0].startswith("Traceback") else []
        print("\n".join(head + lines[-25:]))
