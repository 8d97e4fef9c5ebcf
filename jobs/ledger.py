"""What was submitted, and what became of it: <results>/.launch/ (records, lock, per-run logs).

- `submissions.jsonl`: one line per submitted job (run, job id, config hash, time, submitit folder);
  the newest line of a run wins. It is what lets `--status` work from another shell, later.
- `lock`: `fcntl.flock` held while a launcher checks and submits, so two launchers started at once
  never submit the same run twice.
- `logs/<exp>/seed-<n>` -> a link to the run's latest job folder (stdout, stderr, submitit pickles).

A job's state comes from the scheduler (squeue for live jobs, sacct after) and from submitit's result
pickle, which holds the traceback of a failed run. Nothing here blocks: every command has a timeout.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LIVE = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
        "CONFIGURING": "pending", "RESV_DEL_HOLD": "pending", "SUSPENDED": "pending",
        "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running",
        "RESIZING": "running"}
SCHEDULER_TIMEOUT_S = 30
NO_ANSWER = "NO_ANSWER"   # squeue failed: states unknown, which is not the same as "failed"


@dataclass
class Record:
    experiment: str
    seed: int
    smoke: bool
    config_hash: str
    job_id: str
    cluster: str
    folder: str          # the job's own submitit folder (logs, pickles)
    submitted: str       # local time, ISO 8601
    profile: str = ""

    @property
    def key(self) -> tuple:
        return (self.experiment, self.seed, self.smoke)

    @property
    def stdout(self) -> Path:
        return Path(self.folder) / f"{self.job_id}_0_log.out"

    @property
    def stderr(self) -> Path:
        return Path(self.folder) / f"{self.job_id}_0_log.err"

    @property
    def result_pickle(self) -> Path:
        return Path(self.folder) / f"{self.job_id}_0_result.pkl"


class Ledger:
    def __init__(self, results_dir: Path):
        self.root = Path(results_dir) / ".launch"
        self.records_path = self.root / "submissions.jsonl"
        self.submitit_folder = self.root / "jobs" / "%j"

    @contextlib.contextmanager
    def lock(self):
        """Exclusive lock on the results folder; waits (and says so) for another launcher."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another launcher (lock {self.root / 'lock'}) ...", flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def latest(self) -> dict[tuple, Record]:
        """The newest record of every run; unreadable lines are skipped with a warning."""
        out: dict[tuple, Record] = {}
        if not self.records_path.exists():
            return out
        for number, line in enumerate(self.records_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = Record(**json.loads(line))
            except (ValueError, TypeError) as exc:
                print(f"warning: {self.records_path}:{number}: unreadable record skipped ({exc})")
                continue
            out[record.key] = record
        return out

    def add(self, records: list[Record]) -> None:
        """Append records (one write + fsync; a crash loses at most this batch, never older lines)."""
        if not records:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records)
        with open(self.records_path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for record in records:
            self._link_logs(record)

    def log_link(self, experiment: str, seed: int) -> Path:
        return self.root / "logs" / experiment / f"seed-{seed}"

    def _link_logs(self, record: Record) -> None:
        link = self.log_link(record.experiment, record.seed)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(record.folder).resolve())
        os.replace(tmp, link)   # atomic switch to the newest job


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def job_result(record: Record) -> tuple[str, str] | None:
    """submitit's result pickle: ("success", value) or ("error", traceback text); None if absent."""
    try:
        with open(record.result_pickle, "rb") as handle:
            # our own file, written by submitit in our own job (not untrusted input)
            outcome, payload = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception as exc:   # half-written or from another submitit version
        return ("error", f"unreadable result file {record.result_pickle}: {exc}")
    return (outcome, payload if isinstance(payload, str) else repr(payload))


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"warning: {' '.join(command[:2])} did not answer ({exc}); scheduler states unknown")
        return None
    return done.stdout if done.returncode == 0 else None


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state per job id ('123' or array task '123_4'): squeue for live jobs, then sacct."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    states: dict[str, str] = {}
    # -r: one line per array task, so pending tasks show as 123_4 and not 123_[4-9]
    queue = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-u", _user()])
    if queue is None:
        return {j: NO_ANSWER for j in job_ids}
    for line in queue.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id.strip()] = state.strip()
    rest = [j for j in job_ids if j not in states]
    if rest and shutil.which("sacct"):
        acct = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(rest)])
        for line in (acct or "").splitlines():
            job_id, _, state = line.partition("|")
            if job_id in rest:
                states[job_id] = state.split()[0] if state else "UNKNOWN"   # "CANCELLED by 0"
    return {j: states[j] for j in job_ids if j in states}


def local_states(records: list[Record]) -> dict[str, str]:
    """Local executor jobs: the controller process (its pid is the job id) alive -> RUNNING."""
    states = {}
    for record in records:
        cmdline = Path(f"/proc/{record.job_id}/cmdline")
        alive = record.job_id.isdigit() and cmdline.exists() and b"submitit" in cmdline.read_bytes()
        states[record.job_id] = "RUNNING" if alive else "FINISHED"
    return states


def _user() -> str:
    import getpass
    return getpass.getuser()


def scheduler_states(records: list[Record]) -> dict[str, str]:
    slurm = [r.job_id for r in records if r.cluster == "slurm"]
    states = slurm_states(slurm)
    states.update(local_states([r for r in records if r.cluster == "local"]))
    return states


def job_state(record: Record, scheduler_state: str | None) -> tuple[str, str]:
    """(state, detail) of a submitted run whose metrics.json is not (yet) there.

    state: pending | running | failed | missing | unknown; detail: the SLURM state, or the traceback
    of a failed run.
    """
    if scheduler_state in LIVE:
        return LIVE[scheduler_state], scheduler_state
    outcome = job_result(record)
    if outcome and outcome[0] == "error":
        return "failed", outcome[1]
    if outcome and outcome[0] == "success":
        return "missing", f"job {record.job_id} succeeded but its metrics.json is gone (deleted?)"
    if scheduler_state == NO_ANSWER:
        return "unknown", "the scheduler did not answer (squeue/sacct); try again"
    if scheduler_state is None:
        return "failed", (f"job {record.job_id} is unknown to the scheduler and left no result; "
                          f"see {record.stderr}")
    return "failed", f"job {record.job_id} ended {scheduler_state} without a result; see {record.stderr}"
