"""The callable that every SLURM / local job runs: one experiment x seed, preemptible.

submitit pickles a `Job` by reference (module `jobs.job`), so the node must import this repository
(installed venv, PYTHONPATH or the container image; see slurm/README.md).

Preemption / time limit: SLURM sends USR2 (submitit's `--signal=USR2@delay`). submitit has already
installed its handler, which would call `checkpoint()`, requeue and exit at once - in the middle of an
optimizer step. So `Job` puts its own handler in front: it only sets `hw5.train.STOP`; the training
loop saves a checkpoint at the next step boundary and raises `hw5.train.Interrupted`; then `Job` calls
submitit's handler, which calls `checkpoint()` (the same run again: it resumes from the on-disk
checkpoint), requeues the job and exits.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass

import submitit


@dataclass(frozen=True)
class RunSpec:
    """Everything a job needs to (re)start one run; plain values so the pickle stays tiny."""
    experiment: str
    seed: int
    smoke: bool = False
    results_dir: str = "results"
    config_path: str | None = None      # experiments file; None = hw5's default / HW5_EXPERIMENTS
    data_dir: str | None = None         # None = hw5's default (HW5_DATA_DIR)
    checkpoint_dir: str | None = None   # this run's folder; None = hw5's default checkpoints/<exp>/seed-<n>/

    @property
    def name(self) -> str:
        return f"{self.experiment}/seed-{self.seed}"


def _say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[job {stamp}] {message}", flush=True)


class Job(submitit.helpers.Checkpointable):
    """Run `hw5.run.run_experiment` for one RunSpec; checkpoint and requeue on USR2."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict:
        import hw5.run    # imported on the node only: the launcher never loads torch
        import hw5.train

        spec = self.spec
        hw5.train.STOP.clear()   # a DebugExecutor runs several jobs in one process
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, _stop_training)
        _say(f"{spec.name} starting on {socket.gethostname()} (slurm job "
             f"{os.environ.get('SLURM_JOB_ID', '-')}, restart {os.environ.get('SLURM_RESTART_COUNT', '0')})")
        try:
            metrics = hw5.run.run_experiment(**_run_kwargs(spec))
        except hw5.train.Interrupted:
            _say(f"{spec.name} checkpoint saved after USR2; handing over to submitit to requeue")
            signal.signal(signal.SIGUSR2, submitit_handler)
            if callable(submitit_handler):
                submitit_handler(signal.SIGUSR2, None)   # checkpoint() -> requeue -> sys.exit
            raise   # no submitit handler (e.g. plain python): the interruption is the result
        finally:
            signal.signal(signal.SIGUSR2, submitit_handler)
        _say(f"{spec.name} finished: results in {spec.results_dir}/{spec.experiment}/seed-{spec.seed}")
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


def _run_kwargs(spec: RunSpec) -> dict:
    kwargs = asdict(spec)
    kwargs["name"] = kwargs.pop("experiment")
    return kwargs


if __name__ == "__main__":
    sys.exit("jobs/job.py is run by submitit; use: python jobs/launch.py --help")
