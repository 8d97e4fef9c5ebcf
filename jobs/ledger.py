"""What was submitted: <results>/.launch/ (the submission records, the lock, per-run log links).

- `submissions.jsonl`: one line per submitted job (run, job id, config hash, time, submitit folder);
  the newest line of a run wins. It is what lets `--status` work from another shell, later.
- `lock`: `fcntl.flock` held while a launcher checks and submits, so two launchers started at once
  never submit the same run twice.
- `logs/[smoke/]<exp>/seed-<n>` -> a link to the run's latest job folder (stdout, stderr, submitit pickles).

What became of a job is the scheduler's side (jobs/scheduler.py).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

@dataclass
class Record:
    experiment: str
    seed: int
    smoke: bool
    config_hash: str
    job_id: str
    cluster: str
    folder: str          # the job's own submitit folder (logs, pickles)
    submitted: str       # when, ISO 8601 (UTC)
    profile: str = ""    # the profile's name ...
    profile_path: str = ""  # ... and file: --status and --retry-failed reuse it
    data: str | None = None  # the data fingerprint at submission
    pack: int = 1            # runs in its job (jobs/job.py runs them one after the other)

    @property
    def id(self) -> tuple:
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
            out[record.id] = record
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


