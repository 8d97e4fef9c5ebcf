"""What was submitted, and what became of it: <results>/.launch/ (records, lock, per-run logs).

- `submissions.jsonl`: one line per submitted job (run, job id, config hash, time, submitit folder);
  the newest line of a run wins. It is what lets `--status` work from another shell, later.
- `lock`: `fcntl.flock` held while a launcher checks and submits, so two launchers started at once
  never submit the same run twice.
- `logs/[smoke/]<exp>/seed-<n>` -> a link to the run's latest job folder (stdout, stderr, submitit pickles).

A job's state comes from the scheduler (squeue for live jobs, sacct after) and from submitit's result
pickle, which holds the traceback of a failed run. Nothing here blocks: every command has a timeout.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jobs.slurm_site import NOT_ANSWERED, classify, run_command

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
    profile: str = ""    # the profile's name ...
    profile_path: str = ""  # ... and file: --status and --retry-failed reuse it
    data: str | None = None  # the data fingerprint at submission
    pack: int = 1            # runs in its job (jobs/job.py runs them one after the other)

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

    @property
    def name(self) -> str:
        return f"{self.experiment}/seed-{self.seed}"

    def packed_state(self) -> dict:
        """This run's line in its pack's book ({} for a lone run, or before the pack reached it)."""
        return read_pack_book(pack_book_path(self.folder, self.job_id)).get(self.name, {}) if self.pack > 1 else {}


def pack_book_path(folder: str | os.PathLike, job_id: str) -> Path:
    return Path(folder) / f"{job_id}_pack.json"


def stop_note_path(folder: str | os.PathLike, job_id: str) -> Path:
    """Where a job notes that the user stopped it (jobs/job.py:StopNote)."""
    return Path(folder) / f"{job_id}_stopped.json"


def read_stop_note(record: "Record") -> str | None:
    """Why the user stopped the record's job ("by SIGINT during ..."), or None when nobody did."""
    try:
        note = json.loads(stop_note_path(record.folder, record.job_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return f"stopped {note.get('stopped', '')} at {note.get('at', '?')}" if isinstance(note, dict) else None


def read_pack_book(path: Path) -> dict:
    """{run name: {"state", "error", "at"}}; empty when absent or unreadable (a job killed mid-write)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("runs", {}) if isinstance(data, dict) else {}


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
        """The newest record of every run; unreadable lines (a line cut short, bytes that are not text)
        are skipped with one warning naming them."""
        out: dict[tuple, Record] = {}
        if not self.records_path.exists():
            return out
        skipped = []
        for number, raw in enumerate(self.records_path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = Record(**json.loads(raw.decode("utf-8")))
            except (ValueError, TypeError):      # UnicodeDecodeError is a ValueError
                skipped.append(number)
                continue
            out[record.key] = record
        if skipped:
            lines = ", ".join(map(str, skipped[:10])) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
            print(f"warning: {self.records_path}: line(s) {lines} unreadable, skipped (the runs they named count "
                  f"as not submitted)", file=sys.stderr)
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

    def log_link(self, experiment: str, seed: int, smoke: bool = False) -> Path:
        return self.root / "logs" / ("smoke" if smoke else "") / experiment / f"seed-{seed}"

    def _link_logs(self, record: Record) -> None:
        link = self.log_link(record.experiment, record.seed, record.smoke)
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
    code, out, err = run_command(command, timeout=SCHEDULER_TIMEOUT_S)
    if code == NOT_ANSWERED:
        print(f"warning: {' '.join(command[:2])} did not answer ({err}); scheduler states unknown")
        return None
    return out if code == 0 else None


def slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """(SLURM state, detail, partition) per job id ('123' or array task '123_4'): squeue's state, reason
    and partition for live jobs, then sacct's state for ended ones (detail "never started" when it never ran)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    states: dict[str, tuple[str, str, str]] = {}
    # -r: one line per array task, so pending tasks show as 123_4 and not 123_[4-9]
    queue = _run(["squeue", "-h", "-r", "-o", "%i|%T|%P|%r", "-u", _user()])
    if queue is None:
        return {j: (NO_ANSWER, "", "") for j in job_ids}
    for line in queue.splitlines():
        job_id, state, partition, reason = (line.split("|", 3) + ["", "", ""])[:4]
        states[job_id.strip()] = (state.strip(), reason.strip(), partition.strip())
    rest = [j for j in job_ids if j not in states]
    if rest and shutil.which("sacct"):
        acct = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Start", "-j", ",".join(_arrays(rest))])
        for line in (acct or "").splitlines():
            job_id, state, start = (line.split("|") + ["", ""])[:3]
            detail = "never started" if start in ("None", "Unknown") else ""
            state = state.split()[0] if state else "UNKNOWN"    # "CANCELLED by 0"
            # squeue is the authority on live jobs: a task it does not list has ended (sacct lags, and an
            # array's pending line still covers tasks cancelled since)
            state = "ENDED" if state in LIVE else state
            for task in _expand(job_id):
                states.setdefault(task, (state, detail, ""))
    return {j: states[j] for j in job_ids if j in states}


def _arrays(job_ids: list[str]) -> list[str]:
    """Ask sacct for whole arrays: tasks cancelled while pending exist only in the array's line."""
    return sorted({j.split("_")[0] for j in job_ids})


def _expand(job_id: str) -> list[str]:
    """sacct's '123_[1-3,5%2]' -> ['123_1', '123_2', '123_3', '123_5']; other ids as they are."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    tasks = []
    for part in match.group(2).split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            tasks += [f"{match.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return tasks


def local_states(records: list[Record]) -> dict[str, str]:
    """Local executor jobs: the controller process (its pid is the job id) alive -> RUNNING."""
    states = {}
    for record in records:
        cmdline = Path(f"/proc/{record.job_id}/cmdline")
        alive = record.job_id.isdigit() and cmdline.exists() and b"submitit" in cmdline.read_bytes()
        states[record.job_id] = ("RUNNING" if alive else "FINISHED", "", "")
    return states


def _user() -> str:
    import getpass
    return getpass.getuser()


def scheduler_states(records: list[Record]) -> dict[str, tuple[str, str, str]]:
    slurm = [r.job_id for r in records if r.cluster == "slurm"]
    states = slurm_states(slurm)
    states.update(local_states([r for r in records if r.cluster == "local"]))
    return states


def job_state(record: Record, scheduler: tuple[str, str, str] | None) -> tuple[str, str]:
    """(state, detail) of a submitted run whose metrics.json is not (yet) there.

    state: pending | blocked | running | interrupted | failed | missing | unknown; detail: the
    scheduler's reason, the traceback of a failed run, or what became of a job that never ran.
    """
    state, reason, partition = scheduler or (None, "", "")
    packed = record.packed_state()
    if packed.get("state") == "failed":          # its pack goes on (or went on) without it
        return "failed", packed.get("error") or f"failed in pack job {record.job_id}; log: {record.stderr}"
    if state in LIVE and LIVE[state] == "running" and record.pack > 1 and packed.get("state") != "running":
        return "pending", f"packed in job {record.job_id} (running): starts when the runs before it end"
    if state in LIVE:
        if LIVE[state] == "pending":
            return classify(reason if state == "PENDING" else state, partition, record.profile_path)
        return LIVE[state], state
    stopped = read_stop_note(record)
    if stopped:
        return "interrupted", f"{stopped}; its checkpoint is kept: launch again to resume it"
    outcome = job_result(record)
    if outcome and outcome[0] == "error":
        return "failed", outcome[1]
    if outcome and outcome[0] == "success":
        return "missing", f"job {record.job_id} succeeded but its metrics.json is gone (deleted?)"
    if state == NO_ANSWER:
        return "unknown", "the scheduler did not answer (squeue/sacct); try again"
    if not record.stdout.exists() and (state is None or reason == "never started" or state == "CANCELLED"):
        # nothing ran, so there is no log to point to (tasks cancelled while pending leave no trace)
        return "missing", f"job {record.job_id} was cancelled before it started: nothing ran"
    if state is None:
        return "failed", f"job {record.job_id} is unknown to the scheduler and left no result; log: {record.stderr}"
    if state == "CANCELLED":     # scancel after it started: the user's stop, not the run's failure
        return "interrupted", (f"job {record.job_id} was cancelled while running; its checkpoint is kept: "
                               "launch again to resume it")
    ended = {"ENDED": "ended"}.get(state, f"ended {state}")
    return "failed", f"job {record.job_id} {ended} without a result; log: {record.stderr}"
