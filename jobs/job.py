"""The callable every SLURM / local job runs (submitit's hand-off): signals, requeue, the time-out judgement.

A job is one run or a pack of them (jobs/pack.py runs them). submitit pickles a `Job` by reference
(module `jobs.job`), so the node must import this repository (installed venv, PYTHONPATH or the
container image; see slurm/README.md).

Preemption / time limit: SLURM sends USR2 (submitit's `--signal=USR2@delay`; in the image, through the
batch shell). submitit has already installed its handler, which would call `checkpoint()`, requeue and
exit at once - in the middle of an optimizer step. So `Job` puts its own handler in front: it only sets
`hw5.train.STOP`; the training loop saves a checkpoint at the next step boundary and raises
`hw5.train.Interrupted`; then `Job` calls submitit's handler, which calls `checkpoint()` (the same pack
again: it resumes from the on-disk checkpoints), requeues the job and exits. Whether that USR2 was the
time limit (counted against max_num_timeout) or a preemption (not counted) is decided from the job's
time left, not from submitit's elapsed-time rule, which calls every USR2 a time-out when the limit is
10 minutes or less. SIGINT / SIGTERM (the user: Ctrl-C, scancel) also checkpoint, but stop the job
without a requeue and leave a stop note: its runs are then `interrupted`, and a relaunch resumes them.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import submitit

from jobs.pack import PackBook, RunSpec, StopNote, in_order, pack_failed, run_lanes, take_runs


def _say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[job {stamp}] {message}", flush=True)


class RunStopped(RuntimeError):
    """The user stopped the job (Ctrl-C, SIGTERM, scancel): checkpoints saved, no requeue; the job's
    stop note makes its unfinished runs `interrupted`, and a relaunch resumes them."""


class Job(submitit.helpers.Checkpointable):
    """A pack of RunSpecs (usually one) in this process or in lanes (jobs/pack.py); checkpoint and requeue
    on USR2, checkpoint and stop on SIGINT/SIGTERM. A packed run that fails does not stop the others;
    the job fails at the end, naming them."""

    def __init__(self, specs: RunSpec | Sequence[RunSpec], lanes: int = 1) -> None:
        self.specs = (specs,) if isinstance(specs, RunSpec) else tuple(specs)
        self.lanes = lanes          # runs at once on the job's GPU; 1 = one after the other

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

    def _in_turn(self, book: PackBook | None, stopped_by: list[str]) -> dict:
        """The runs one after the other in this process."""
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, _stop_training)    # for the whole pack: a USR2 between runs counts
        try:
            outcome = take_runs(list(self.specs), book, in_order(), _say)
        finally:
            signal.signal(signal.SIGUSR2, submitit_handler)
        if outcome.shared and len(self.specs) > 1:
            _say("shared within the pack: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.shared.items())))
        if outcome.interrupted:
            if stopped_by:        # the user, not the scheduler: no requeue
                raise RunStopped(f"by {stopped_by[0]} during {outcome.interrupted}")
            self._requeue(f"{outcome.interrupted}: checkpoint saved after USR2", submitit_handler)
        if outcome.failed:
            raise pack_failed(outcome.failed, len(self.specs))
        return outcome.done[0] if len(self.specs) == 1 else {"runs": outcome.done}

    def _in_lanes(self, book: PackBook | None) -> dict:
        """The runs in up to `lanes` processes at once (jobs/pack.py: run_lanes)."""
        book = book or PackBook(Path(tempfile.mkdtemp(prefix="hw5-pack-")) / "pack.json")
        interrupted, failed, received = run_lanes(list(self.specs), self.lanes, book, _say)
        if {"SIGINT", "SIGTERM"} & set(received):
            raise RunStopped(f"by {received[0]}; the lanes saved their checkpoints")
        if interrupted:
            self._requeue("the lanes saved their checkpoints after USR2", signal.getsignal(signal.SIGUSR2))
        if failed:
            raise pack_failed(failed, len(self.specs))
        return {"runs": [{"experiment": s.experiment, "seed": s.seed} for s in self.specs if s.name not in failed]}

    def _requeue(self, what: str, submitit_handler) -> None:
        """Hand over to submitit's handler (checkpoint() -> requeue -> exit); without one (plain python),
        the interruption is the result."""
        import hw5.train
        _say(f"{what}; handing over to submitit to requeue")
        hand_over_to_submitit(submitit_handler, self.specs[0].signal_delay_s)
        raise hw5.train.Interrupted(what)

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
