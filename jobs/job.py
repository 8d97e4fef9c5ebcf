"""The callable that every SLURM / local job runs: one experiment x seed, or a pack of them, preemptible.

submitit pickles a `Job` by reference (module `jobs.job`), so the node must import this repository
(installed venv, PYTHONPATH or the container image; see slurm/README.md).

Preemption / time limit: SLURM sends USR2 (submitit's `--signal=USR2@delay`). submitit has already
installed its handler, which would call `checkpoint()`, requeue and exit at once - in the middle of an
optimizer step. So `Job` puts its own handler in front: it only sets `hw5.train.STOP`; the training
loop saves a checkpoint at the next step boundary and raises `hw5.train.Interrupted`; then `Job` calls
submitit's handler, which calls `checkpoint()` (the same run again: it resumes from the on-disk
checkpoint), requeues the job and exits. Whether that USR2 was the time limit (counted against
max_num_timeout) or a preemption (not counted) is decided from the job's time left, not from submitit's
elapsed-time rule, which calls every USR2 a time-out when the limit is 10 minutes or less.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import submitit

from jobs.ledger import pack_book_path, read_pack_book, stop_note_path


@dataclass(frozen=True)
class RunSpec:
    """Everything a job needs to (re)start one run; plain values so the pickle stays small."""
    experiment: str
    seed: int
    smoke: bool = False
    results_dir: str = "results"
    config_path: str | None = None      # experiments file; None = hw5's default / HW5_EXPERIMENTS
    data_dir: str | None = None         # None = hw5's default (HW5_DATA_DIR)
    checkpoint_dir: str | None = None   # this run's folder; None = hw5's default checkpoints/<exp>/seed-<n>/
    # the resolved config, frozen at submission: the node runs it even if the YAML changes meanwhile
    # (None = resolve the YAML on the node). Not part of hash(): a dict is not hashable.
    config: dict | None = field(default=None, hash=False)
    replace: bool = False               # a stale or corrupt result may be replaced (launched with --force)
    require_cuda: bool = False          # the profile asks for GPUs: no CUDA on the node is an error
    signal_delay_s: int = 0             # USR2 comes this long before the time limit (tells it from preemption)

    @property
    def name(self) -> str:
        return f"{self.experiment}/seed-{self.seed}"

    @property
    def key(self) -> tuple:
        """(experiment, seed, smoke): how the ledger's records and the launcher's tables name a run."""
        return (self.experiment, self.seed, self.smoke)


def _say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[job {stamp}] {message}", flush=True)


class PackFailed(RuntimeError):
    """Some runs of a packed job failed (the others finished); each one's traceback is in the pack book."""


class RunStopped(RuntimeError):
    """The user stopped the job (Ctrl-C, SIGTERM, scancel): checkpoints saved, no requeue; the job's
    stop note makes its unfinished runs `interrupted`, and a relaunch resumes them."""


class Job(submitit.helpers.Checkpointable):
    """Run a pack of RunSpecs (usually one) in this process, one after the other; checkpoint and requeue
    on USR2, checkpoint and stop on SIGINT/SIGTERM. A pack shares what its runs load (hw5.reuse); a run
    that fails is written to the pack book and the next run goes on; the job fails at the end, naming them."""

    def __init__(self, specs: RunSpec | Sequence[RunSpec], lanes: int = 1) -> None:
        self.specs = (specs,) if isinstance(specs, RunSpec) else tuple(specs)
        self.lanes = lanes          # runs at once on the job's GPU (jobs/lanes.py); 1 = one after the other

    def __call__(self) -> dict:
        import hw5.train   # imported on the node only: the launcher never loads torch

        book = PackBook.of_this_job() if len(self.specs) > 1 else None
        note = StopNote.of_this_job()
        _say(f"{self!r} starting on {socket.gethostname()} (slurm job {os.environ.get('SLURM_JOB_ID', '-')}, "
             f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')})")
        hw5.train.STOP.clear()   # a DebugExecutor runs several jobs in one process
        _note_pid_for_the_host()
        if note:
            note.clear()         # an earlier attempt's: this one starts afresh
        try:
            if self.lanes > 1 and len(self.specs) > 1:
                return self._in_lanes(book)
            with hw5.train.stop_on_signals("job") as stopped_by:
                return self._in_turn(book, stopped_by)
        except RunStopped as stop:
            if note:
                note.write(str(stop))
            _say(f"{self!r} stopped {stop}: launching it again resumes it")
            raise

    def _in_turn(self, book: "PackBook | None", stopped_by: list[str]) -> dict:
        import hw5.reuse
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, _stop_training)    # for the whole pack: a USR2 between runs counts
        done, failed = [], []
        try:
            with hw5.reuse.session() if len(self.specs) > 1 else contextlib.nullcontext() as shared:
                for spec in self.specs:
                    if book and book.state(spec) == "failed":    # failed in an earlier attempt of this job
                        failed.append(spec.name)
                        continue
                    metrics = self._one(spec, book, submitit_handler, stopped_by)
                    if metrics is None:
                        failed.append(spec.name)
                    else:
                        done.append({"experiment": spec.experiment, "seed": spec.seed,
                                     "config_hash": metrics.get("config_hash")})
        finally:
            signal.signal(signal.SIGUSR2, submitit_handler)
        if shared:
            _say("shared within the pack: " + ", ".join(f"{k} {v}" for k, v in sorted(shared.items())))
        if failed:
            raise pack_failed(failed, len(self.specs))
        return done[0] if len(self.specs) == 1 else {"runs": done}

    def _in_lanes(self, book: "PackBook | None") -> dict:
        from jobs.lanes import run_lanes
        path = book.path if book else Path(tempfile.mkdtemp(prefix="hw5-pack-")) / "pack.json"
        interrupted, failed, received = run_lanes(list(self.specs), self.lanes, path, _say)
        if {"SIGINT", "SIGTERM"} & set(received):
            raise RunStopped(f"by {received[0]}; the lanes saved their checkpoints")
        if interrupted:
            _say(f"{self!r}: checkpoints saved after USR2; handing over to submitit to requeue")
            hand_over_to_submitit(signal.getsignal(signal.SIGUSR2), self.specs[0].signal_delay_s)
            import hw5.train
            raise hw5.train.Interrupted("lanes stopped after USR2")
        if failed:
            raise pack_failed(failed, len(self.specs))
        return {"runs": [{"experiment": s.experiment, "seed": s.seed} for s in self.specs if s.name not in failed]}

    def _one(self, spec: RunSpec, book: "PackBook | None", submitit_handler, stopped_by: list[str]) -> dict | None:
        """One run: its metrics; None when it failed inside a pack (a lone run raises)."""
        import hw5.train
        packed = len(self.specs) > 1
        if packed:
            _say(f"{spec.name} starting")
        try:
            metrics = run_in_pack(spec, book, _say) if packed else _run(spec)
        except hw5.train.Interrupted as exc:
            if stopped_by:        # the user, not the scheduler: no requeue
                raise RunStopped(f"by {stopped_by[0]} during {spec.name} ({exc})") from None
            _say(f"{spec.name} checkpoint saved after USR2; handing over to submitit to requeue")
            signal.signal(signal.SIGUSR2, submitit_handler)
            hand_over_to_submitit(submitit_handler, spec.signal_delay_s)
            raise   # no submitit handler (e.g. plain python): the interruption is the result
        if metrics is not None:
            from hw5.contract import run_dir
            _say(f"{spec.name} finished: results in "
                 f"{run_dir(spec.results_dir, spec.experiment, spec.seed, spec.smoke)}")
        return metrics

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # the training state lives in the on-disk checkpoints; the same pack resumes: finished runs are
        # done already, the interrupted one resumes, the rest start
        _say(f"{self!r} requeued: will resume from its checkpoint")
        return submitit.helpers.DelayedSubmission(Job(self.specs, self.lanes))

    def __repr__(self) -> str:
        smoke = " smoke" if self.specs[0].smoke else ""
        if len(self.specs) == 1:
            return f"Job({self.specs[0].name}{smoke})"
        lanes = f", {self.lanes} at once" if self.lanes > 1 else ""
        return f"Job(pack of {len(self.specs)}{smoke}{lanes}: {', '.join(s.name for s in self.specs)})"


class StopNote:
    """<job folder>/<job id>_stopped.json: the user stopped this job (its unfinished runs are
    `interrupted`, not failed); written by the job, read by jobs/ledger.py."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def of_this_job(cls) -> "StopNote | None":
        try:
            env = submitit.JobEnvironment()
            return cls(stop_note_path(env.paths.folder, env.job_id))
        except (RuntimeError, KeyError):       # not inside a submitit job (DebugExecutor, plain python)
            return None

    def write(self, why: str) -> None:
        from hw5.io import now_iso, write_json_atomic
        write_json_atomic(self.path, {"stopped": why, "at": now_iso()})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class PackBook:
    """<job folder>/<job id>_pack.json: each packed run's state (running, done, failed + traceback), so
    --status can say which run of a running pack is training and why one failed."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def of_this_job(cls) -> "PackBook | None":
        try:
            env = submitit.JobEnvironment()
            return cls(pack_book_path(env.paths.folder, env.job_id))
        except (RuntimeError, KeyError):       # not inside a submitit job (DebugExecutor, plain python)
            return None

    def read(self) -> dict:
        return read_pack_book(self.path)

    def state(self, spec: RunSpec) -> str | None:
        return (self.read().get(spec.name) or {}).get("state")

    def mark(self, spec: RunSpec, state: str, error: str = "") -> None:
        """Read, change, write under a lock: the lanes of a job (jobs/lanes.py) write it at once."""
        from hw5.io import now_iso, write_json_atomic
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            runs = self.read()
            runs[spec.name] = {"state": state, "error": error, "at": now_iso()}
            write_json_atomic(self.path, {"runs": runs})


def pack_failed(failed: list[str], total: int) -> PackFailed:
    return PackFailed(f"{len(failed)} of {total} packed runs failed ({', '.join(failed)}); "
                      "python jobs/launch.py --status shows each one's traceback")


def run_in_pack(spec: RunSpec, book: "PackBook | None", say) -> dict | None:
    """One run of a pack (in the job's process or in a lane), its state kept in the pack book: its
    metrics, or None when it failed (traceback to the book and the log; the pack goes on).
    hw5.train.Interrupted (USR2) passes through."""
    import hw5.train
    if book:
        book.mark(spec, "running")
    try:
        metrics = _run(spec)
    except hw5.train.Interrupted:
        raise
    except Exception:
        error = traceback.format_exc()
        if book:
            book.mark(spec, "failed", error)
        say(f"{spec.name} FAILED (the pack goes on):\n{error}")
        return None
    if book:
        book.mark(spec, "done")
    return metrics


def hand_over_to_submitit(handler, signal_delay_s: int) -> None:
    """Call submitit's USR2 handler: checkpoint() -> requeue -> sys.exit (nothing without one)."""
    if callable(handler):
        _judge_timeouts_by_time_left(handler, signal_delay_s)
        _requeue_through_the_host(handler)
        handler(signal.SIGUSR2, None)


def _note_pid_for_the_host() -> None:
    """In the image, the batch script passes SLURM's USR2 to this pid (jobs/container.py: apptainer's
    step has other processes, which the signal must not reach)."""
    folder, job_id = os.environ.get("HW5_STEP_DIR"), os.environ.get("SLURM_JOB_ID")
    if folder and job_id:
        from hw5.io import write_text_atomic
        write_text_atomic(Path(folder) / f"{job_id}.pid", f"{os.getpid()}\n")


def _requeue_through_the_host(handler) -> None:
    """Inside the hw5 image there is no SLURM client to requeue with. The launcher then sets
    HW5_STEP_DIR: the job leaves a request file there instead, and the batch script requeues it
    from the host once the step has ended (jobs/container.py's teardown lines)."""
    folder, job_id = os.environ.get("HW5_STEP_DIR"), os.environ.get("SLURM_JOB_ID")
    env = getattr(getattr(handler, "__self__", None), "env", None)
    if not folder or not job_id or env is None:
        return

    def leave_request(countdown: int) -> None:
        from hw5.io import write_text_atomic
        write_text_atomic(Path(folder) / f"{job_id}.requeue", f"requeue job {job_id}: {countdown} time-out(s) left\n")
        _say(f"asked the host to requeue job {job_id} after this step (the image has no SLURM client)")
    env._requeue = leave_request


def _stop_training(signum, frame) -> None:
    import hw5.train
    _say(f"got {signal.Signals(signum).name}: saving a checkpoint at the next step")
    hw5.train.STOP.set()


def _run(spec: RunSpec) -> dict:
    import hw5.run
    where = dict(smoke=spec.smoke, results_dir=spec.results_dir, data_dir=spec.data_dir,
                 checkpoint_dir=spec.checkpoint_dir, config_path=spec.config_path)
    if spec.config is None:
        return hw5.run.run_experiment(spec.experiment, spec.seed, force=spec.replace, **where)
    return hw5.run.run_submitted(spec.config, spec.experiment, spec.seed, replace=spec.replace,
                                 require_cuda=spec.require_cuda, **where)


# SLURM sends the signal once the time left is at most the delay; it looks about every 30-60 s.
SIGNAL_SLACK_S = 60


def _judge_timeouts_by_time_left(handler, signal_delay_s: int) -> None:
    """Tell submitit whether this USR2 is the time limit or a preemption from the job's time left.

    submitit's own rule (elapsed >= min(0.8 T, T - 10 min)) calls every USR2 a time-out when
    T <= 10 min, so on a partition with a short MaxTime each preemption would use up one of the
    max_num_timeout requeues. squeue knows the time left; without an answer submitit's rule stays.
    """
    owner = getattr(handler, "__self__", None)
    left = _seconds_left(os.environ.get("SLURM_JOB_ID"))
    if owner is None or left is None or not hasattr(owner, "has_timed_out"):
        return
    timed_out = left <= signal_delay_s + SIGNAL_SLACK_S
    _say(f"{left} s left before the time limit: {'time-out' if timed_out else 'preemption'}")
    owner.has_timed_out = lambda: timed_out


def _seconds_left(job_id: str | None) -> int | None:
    """squeue's time left (%L) of this job, in seconds; None when unknown (no SLURM, UNLIMITED). Inside
    the image, without squeue, from the end time the batch script read on the host (HW5_JOB_END)."""
    if not job_id:
        return None
    from jobs.slurm_site import NOT_ANSWERED, parse_seconds, run_command
    code, out, _ = run_command(["squeue", "-h", "-j", job_id, "-o", "%L"], timeout=20)
    end = os.environ.get("HW5_JOB_END", "")
    if code == NOT_ANSWERED and end.isdigit():      # seconds since the epoch
        return max(0, int(end) - int(time.time()))
    return parse_seconds(out) if code == 0 else None


if __name__ == "__main__":
    sys.exit("jobs/job.py is run by submitit; use: python jobs/launch.py --help")
