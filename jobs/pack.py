"""A job's runs: what one run needs (RunSpec), the pack book that keeps each packed run's state, the
stop note a job leaves when the user stops it, and the one loop that takes a pack's next run.

A job holds one run or a pack of them (`--pack N`). The loop runs them in the job's own process, one
after the other, or in K lane processes at once on the job's GPU (`--runs-per-gpu K`); each lane is
that same loop over a shared position. A packed run that fails is written to the pack book (its
traceback) and the pack goes on; a lone run's error is the job's. A stop request (USR2, SIGINT,
SIGTERM: hw5.train.STOP) ends the loop after the running run saved its checkpoint.

Why lanes: an eager training step is host-bound on a fast GPU (Python and kernel launches), so one run
leaves the GPU idle much of the time; a second process's kernels fill those gaps. Each lane is its own
process (its own CUDA context and interpreter: threads would share one GIL) and shares loads within
itself (hw5.reuse). A lane beyond the first starts only when the GPU has room for one more lane as big
as the running ones (nvidia-smi, so the job never opens a CUDA context of its own); on a CPU the lanes
split the job's cores.
"""
from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LANE_INTERRUPTED = 3        # a lane's exit code: it stopped after a signal (checkpoint saved)
LANE_FAILED = 1             # ... some of its runs failed (the others finished)
# A new lane is judged by the GPU memory the running lanes hold; their first steps (model, optimizer
# state, the first batches' activations) reach that peak within about this long.
SETTLE_S = 20.0
HEADROOM = 1.25             # room asked for a lane: 1.25x what each running lane uses now (batches vary)
LANE_START_WAIT_S = 600     # a lane gives up starting when the lanes before it never train


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
    def id(self) -> tuple:
        """(experiment, seed, smoke): the run's identity, as records and tables name it."""
        return (self.experiment, self.seed, self.smoke)


# ---------------------------------------------------------------- what a job leaves beside its log

def pack_book_path(folder: str | os.PathLike, job_id: str) -> Path:
    return Path(folder) / f"{job_id}_pack.json"


def stop_note_path(folder: str | os.PathLike, job_id: str) -> Path:
    return Path(folder) / f"{job_id}_stopped.json"


def _this_job() -> tuple[Path, str] | None:
    """(job folder, job id) inside a submitit job; None elsewhere (DebugExecutor, plain python)."""
    import submitit
    try:
        env = submitit.JobEnvironment()
        return Path(env.paths.folder), str(env.job_id)
    except (RuntimeError, KeyError):
        return None


class PackBook:
    """<job folder>/<job id>_pack.json: each packed run's state (running, done, failed + traceback), so
    --status can say which run of a running pack is training and why one failed."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of_this_job(cls) -> "PackBook | None":
        here = _this_job()
        return cls(pack_book_path(*here)) if here else None

    def read(self) -> dict:
        """{run name: {"state", "error", "at"}}; empty when absent or unreadable (a job killed mid-write)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data.get("runs", {}) if isinstance(data, dict) else {}

    def state(self, spec: RunSpec) -> str | None:
        return (self.read().get(spec.name) or {}).get("state")

    def mark(self, spec: RunSpec, state: str, error: str = "") -> None:
        """Read, change, write under a lock: the lanes of a job write it at once."""
        from hw5.io import now_iso, write_json_atomic
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            runs = self.read()
            runs[spec.name] = {"state": state, "error": error, "at": now_iso()}
            write_json_atomic(self.path, {"runs": runs})


class StopNote:
    """<job folder>/<job id>_stopped.json: the user stopped this job (Ctrl-C, SIGTERM, scancel), so its
    unfinished runs are `interrupted`, not failed."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of_this_job(cls) -> "StopNote | None":
        here = _this_job()
        return cls(stop_note_path(*here)) if here else None

    def write(self, why: str) -> None:
        from hw5.io import now_iso, write_json_atomic
        write_json_atomic(self.path, {"stopped": why, "at": now_iso()})

    def read(self) -> str | None:
        """Why and when ("by SIGINT during ... at ..."), or None when nobody stopped the job."""
        try:
            note = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return f"stopped {note.get('stopped', '')} at {note.get('at', '?')}" if isinstance(note, dict) else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the loop

class PackFailed(RuntimeError):
    """Some runs of a packed job failed (the others finished); each one's traceback is in the pack book."""


def pack_failed(failed: list[str], total: int) -> PackFailed:
    return PackFailed(f"{len(failed)} of {total} packed runs failed ({', '.join(failed)}); "
                      "python jobs/launch.py --status shows each one's traceback")


@dataclass
class Outcome:
    """What a loop over a pack ended with."""
    done: list = field(default_factory=list)          # {"experiment", "seed", "config_hash"} per finished run
    failed: list = field(default_factory=list)        # names of runs that failed (this attempt or an earlier one)
    interrupted: str | None = None                    # the run that saved a checkpoint and stopped
    shared: dict = field(default_factory=dict)        # what the pack's runs loaded once (hw5.reuse)


def take_runs(specs: list[RunSpec], book: PackBook | None, next_index: Callable[[], int], say) -> Outcome:
    """Take the pack's next run (next_index() >= len(specs): none left) until none is left or a stop was
    asked. A lone run (no book) raises its error; a packed one's goes to the book and the next starts."""
    import hw5.reuse
    import hw5.train
    outcome = Outcome()
    with hw5.reuse.session() as outcome.shared:
        while not hw5.train.STOP.is_set():
            i = next_index()
            if i >= len(specs):
                break
            spec = specs[i]
            if book and book.state(spec) == "failed":        # failed in an earlier attempt of this job
                outcome.failed.append(spec.name)
                continue
            try:
                metrics = run_one(spec, book, say)
            except hw5.train.Interrupted as exc:
                outcome.interrupted = f"{spec.name} ({exc})"
                break
            if metrics is None:
                outcome.failed.append(spec.name)
            else:
                outcome.done.append({"experiment": spec.experiment, "seed": spec.seed,
                                     "config_hash": metrics.get("config_hash")})
    return outcome


def in_order() -> Callable[[], int]:
    """next_index for one process: 0, 1, 2, ..."""
    counter = iter(range(sys.maxsize))
    return lambda: next(counter)


def run_one(spec: RunSpec, book: PackBook | None, say) -> dict | None:
    """One run, its state kept in the pack book: its metrics, or None when a packed run failed
    (traceback to the book and the log). A lone run's error, and hw5.train.Interrupted, pass through."""
    import hw5.train
    from hw5.contract import run_dir
    if book is None:
        metrics = _run(spec)
    else:
        say(f"{spec.name} starting")
        book.mark(spec, "running")
        try:
            metrics = _run(spec)
        except hw5.train.Interrupted:
            raise
        except Exception:
            error = traceback.format_exc()
            book.mark(spec, "failed", error)
            say(f"{spec.name} FAILED (the pack goes on):\n{error}")
            return None
        book.mark(spec, "done")
    say(f"{spec.name} finished: results in {run_dir(spec.results_dir, spec.experiment, spec.seed, spec.smoke)}")
    return metrics


def _run(spec: RunSpec) -> dict:
    import hw5.run
    where = dict(smoke=spec.smoke, results_dir=spec.results_dir, data_dir=spec.data_dir,
                 checkpoint_dir=spec.checkpoint_dir, config_path=spec.config_path)
    if spec.config is None:
        return hw5.run.run_experiment(spec.experiment, spec.seed, force=spec.replace, **where)
    return hw5.run.run_submitted(spec.config, spec.experiment, spec.seed, replace=spec.replace,
                                 require_cuda=spec.require_cuda, **where)


# ---------------------------------------------------------------- lanes: the loop in K processes

def run_lanes(specs: list[RunSpec], lanes: int, book: PackBook, say) -> tuple[bool, list[str], list[str]]:
    """Run the pack over up to `lanes` processes; (a lane stopped after a signal, names of failed runs,
    the signals received: USR2 from the scheduler, SIGINT/SIGTERM from the user). Each signal is passed
    to every lane, which saves its checkpoint at the next step and stops taking runs."""
    context = multiprocessing.get_context("spawn")     # CUDA cannot be forked
    position, lock = context.Value("i", 0), context.Lock()
    threads = max(1, (int(os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1)) // lanes)
    procs: list = []
    received: list[str] = []
    forwarded = (signal.SIGUSR2, signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _: _forward(procs, signum, received, say)) for s in forwarded}
    try:
        for k in range(min(lanes, len(specs))):
            if k and not _wait_for_room(k, position, len(specs), book, say):
                break
            proc = context.Process(target=lane_main, args=(k, specs, position, lock, str(book.path), threads),
                                   name=f"hw5-lane-{k}")
            proc.start()
            procs.append(proc)
            say(f"lane {k} started (pid {proc.pid}, {threads} CPU thread(s))")
        for proc in procs:
            proc.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = [s.name for s in specs if book.state(s) == "failed"]
    return any(p.exitcode == LANE_INTERRUPTED for p in procs), failed, received


def _forward(procs: list, signum: int, received: list[str], say) -> None:
    name = signal.Signals(signum).name
    received.append(name)
    say(f"got {name}: every lane saves a checkpoint at its next step")
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signum)


def lane_main(k: int, specs: list, position, lock, book_path: str, threads: int) -> None:
    """One lane: the loop over the shared position; exit LANE_INTERRUPTED / LANE_FAILED / 0."""
    sys.stdout = _Prefixed(sys.stdout, f"[lane {k}] ")
    os.environ["HW5_NUM_THREADS"] = str(threads)
    import hw5.train
    received: list[str] = []

    def stop(signum, frame) -> None:
        received.append(signal.Signals(signum).name)
        hw5.train.STOP.set()
    for passed_on in (signal.SIGUSR2, signal.SIGINT, signal.SIGTERM):    # the job passes each one on
        signal.signal(passed_on, stop)

    def next_index() -> int:
        with lock:
            position.value += 1
            return position.value - 1
    outcome = take_runs(specs, PackBook(Path(book_path)), next_index, lambda message: print(message, flush=True))
    if outcome.interrupted:
        why = {"SIGUSR2": "USR2"}.get(received[0], received[0]) if received else "a stop request"
        print(f"{outcome.interrupted}: checkpoint saved after {why}", flush=True)
    sys.exit(LANE_INTERRUPTED if hw5.train.STOP.is_set() else LANE_FAILED if outcome.failed else 0)


def room_for_another(used_mb: float, total_mb: float, lanes_running: int) -> bool:
    """Another lane fits when the free memory holds one more lane of the running lanes' mean size."""
    per_lane = used_mb / max(lanes_running, 1)
    return total_mb - used_mb >= HEADROOM * per_lane


def gpu_memory_mb() -> tuple[float, float] | None:
    """(used, total) MiB of this job's first visible GPU from nvidia-smi; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    device = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device}", "--query-gpu=memory.used,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
        used, total = (float(x) for x in out.stdout.strip().splitlines()[0].split(","))
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    return used, total


def _wait_for_room(k: int, position, total: int, book: PackBook, say) -> bool:
    """Lane k may start: runs are left and (on a GPU) the running lanes leave room for one more."""
    if gpu_memory_mb() is None:
        return position.value < total
    deadline = time.time() + LANE_START_WAIT_S
    while sum(e.get("state") == "running" for e in book.read().values()) < k:
        if time.time() > deadline or position.value >= total:
            return False
        time.sleep(2)
    time.sleep(SETTLE_S)
    used, total_mb = gpu_memory_mb() or (0.0, 0.0)
    if position.value >= total or not room_for_another(used, total_mb, k):
        say(f"lane {k} not started: {used:.0f} of {total_mb:.0f} MiB in use by {k} lane(s)")
        return False
    return True


class _Prefixed:
    """stdout with every line prefixed by its lane, so the job log stays readable."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.start = stream, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            self.stream.write((self.prefix if self.start else "") + piece)
            self.start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
