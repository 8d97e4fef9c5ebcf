"""Several runs of one packed job at once on its GPU (`runs_per_gpu`): one process per lane.

Why: an eager training step is host-bound on a fast GPU (Python and kernel launches), so one run leaves
the GPU idle much of the time; a second process's kernels fill those gaps. Each lane is its own process
(its own CUDA context and Python interpreter: threads would share one GIL) that takes the pack's next
run until none is left, sharing loads within itself (hw5.reuse). A lane beyond the first starts only
when the GPU has room for one more lane as big as the running ones (nvidia-smi, so this process never
opens a CUDA context of its own). On a CPU the lanes split the job's cores.

USR2 is forwarded to every lane: each saves its checkpoint at the next step and stops taking runs; the
job then requeues as a whole. SIGINT and SIGTERM (the user) stop the lanes the same way, without a
requeue. Per-run states go to the pack book, as in a one-lane pack.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LANE_INTERRUPTED = 3        # a lane's exit code: it stopped for USR2 (checkpoint saved)
LANE_FAILED = 1             # ... some of its runs failed (the others finished)
SETTLE_S = 20.0             # a lane's first steps reach its peak memory by then
HEADROOM = 1.25             # room asked for a lane: 1.25x what each running lane uses now


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


def run_lanes(specs: list, lanes: int, book_path: Path, say) -> tuple[bool, list[str], list[str]]:
    """Run the pack over up to `lanes` processes; (a lane stopped after a signal, names of failed runs,
    the signals received: USR2 from the scheduler, SIGINT/SIGTERM from the user)."""
    from jobs.job import PackBook
    context = multiprocessing.get_context("spawn")     # CUDA cannot be forked
    position, lock = context.Value("i", 0), context.Lock()
    threads = max(1, (int(os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1)) // lanes)
    procs: list = []
    received: list[str] = []
    forwarded = (signal.SIGUSR2, signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _: _forward(procs, signum, received, say)) for s in forwarded}
    try:
        for k in range(min(lanes, len(specs))):
            if k and not _wait_for_room(k, position, len(specs), book_path, say):
                break
            proc = context.Process(target=lane_main, args=(k, specs, position, lock, str(book_path), threads),
                                   name=f"hw5-lane-{k}")
            proc.start()
            procs.append(proc)
            say(f"lane {k} started (pid {proc.pid}, {threads} CPU thread(s))")
        for proc in procs:
            proc.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    book = PackBook(book_path)
    failed = [s.name for s in specs if book.state(s) == "failed"]
    return any(p.exitcode == LANE_INTERRUPTED for p in procs), failed, received


def _forward(procs: list, signum: int, received: list[str], say) -> None:
    name = signal.Signals(signum).name
    received.append(name)
    say(f"got {name}: every lane saves a checkpoint at its next step")
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signum)


def _wait_for_room(k: int, position, total: int, book_path: Path, say) -> bool:
    """Lane k may start: runs are left and (on a GPU) the running lanes leave room for one more."""
    from jobs.job import read_pack_book
    if gpu_memory_mb() is None:
        return position.value < total
    deadline = time.time() + 600
    while sum(e.get("state") == "running" for e in read_pack_book(book_path).values()) < k:
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


def lane_main(k: int, specs: list, position, lock, book_path: str, threads: int) -> None:
    """One lane: take the pack's next run until none is left; exit LANE_INTERRUPTED / LANE_FAILED / 0."""
    sys.stdout = _Prefixed(sys.stdout, f"[lane {k}] ")
    os.environ["HW5_NUM_THREADS"] = str(threads)
    import hw5.reuse
    import hw5.train
    from jobs.job import PackBook, run_in_pack
    for stop in (signal.SIGUSR2, signal.SIGINT, signal.SIGTERM):    # the job passes each one on
        signal.signal(stop, lambda *_: hw5.train.STOP.set())
    book, code = PackBook(Path(book_path)), 0
    with hw5.reuse.session():
        while not hw5.train.STOP.is_set():
            with lock:
                i = position.value
                position.value += 1
            if i >= len(specs):
                break
            spec = specs[i]
            if book.state(spec) == "failed":         # failed in an earlier attempt of this job
                code = LANE_FAILED
                continue
            try:
                if run_in_pack(spec, book, lambda message: print(message, flush=True)) is None:
                    code = LANE_FAILED
            except hw5.train.Interrupted:
                print(f"{spec.name}: checkpoint saved after USR2", flush=True)
                sys.exit(LANE_INTERRUPTED)
    sys.exit(LANE_INTERRUPTED if hw5.train.STOP.is_set() else code)
