"""The callable that every SLURM / local job runs: one experiment x seed, preemptible.

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

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import submitit


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


class Job(submitit.helpers.Checkpointable):
    """Run one RunSpec (its frozen config through `hw5.run.run_submitted`); checkpoint and requeue on USR2."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict:
        import hw5.train   # imported on the node only: the launcher never loads torch

        spec = self.spec
        hw5.train.STOP.clear()   # a DebugExecutor runs several jobs in one process
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, _stop_training)
        _say(f"{spec.name} starting on {socket.gethostname()} (slurm job "
             f"{os.environ.get('SLURM_JOB_ID', '-')}, restart {os.environ.get('SLURM_RESTART_COUNT', '0')})")
        try:
            metrics = _run(spec)
        except hw5.train.Interrupted:
            _say(f"{spec.name} checkpoint saved after USR2; handing over to submitit to requeue")
            signal.signal(signal.SIGUSR2, submitit_handler)
            if callable(submitit_handler):
                _judge_timeouts_by_time_left(submitit_handler, spec.signal_delay_s)
                submitit_handler(signal.SIGUSR2, None)   # checkpoint() -> requeue -> sys.exit
            raise   # no submitit handler (e.g. plain python): the interruption is the result
        finally:
            signal.signal(signal.SIGUSR2, submitit_handler)
        from hw5.contract import run_dir
        _say(f"{spec.name} finished: results in {run_dir(spec.results_dir, spec.experiment, spec.seed, spec.smoke)}")
        return {"experiment": spec.experiment, "seed": spec.seed,
                "config_hash": metrics.get("config_hash")}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # the training state lives in the on-disk checkpoint; the same spec resumes from it
        _say(f"{self.spec.name} requeued: will resume from its checkpoint")
        return submitit.helpers.DelayedSubmission(Job(self.spec))

    def __repr__(self) -> str:
        return f"Job({self.spec.name}{' smoke' if self.spec.smoke else ''})"


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
    """squeue's time left (%L) of this job, in seconds; None when unknown (no SLURM, UNLIMITED)."""
    if not job_id:
        return None
    from jobs.slurm_site import parse_seconds, run_command
    code, out, _ = run_command(["squeue", "-h", "-j", job_id, "-o", "%L"], timeout=20)
    return parse_seconds(out) if code == 0 else None


if __name__ == "__main__":
    sys.exit("jobs/job.py is run by submitit; use: python jobs/launch.py --help")
