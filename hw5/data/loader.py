"""Batches built ahead of the device: a background thread collates the next batches (and pins them,
so their host-to-device copy is asynchronous) while the device runs the current step."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def pin(batch):
    """Page-locked copies of a batch's CPU tensors (a dict of tensors or an object with .inputs/.labels)."""
    if isinstance(batch, dict):
        return {k: v.pin_memory() if v.device.type == "cpu" else v for k, v in batch.items()}
    batch.inputs = pin(batch.inputs)
    if batch.labels.device.type == "cpu":
        batch.labels = batch.labels.pin_memory()
    return batch


def prefetched(items: Iterable[T], make: Callable[[T], object], depth: int = 2,
               pinned: bool = False) -> Iterator[object]:
    """make(item) for each item, computed up to `depth` items ahead on one worker thread, in order.

    An exception in `make` is raised here, at the item it belongs to. Leaving the loop early is safe:
    the worker stops at its next put."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                out = make(item)
                out = pin(out) if pinned else out
                while not stop.is_set():
                    try:
                        ahead.put((out, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put((_DONE, None))
        except BaseException as exc:          # handed to the consumer, raised where it reads
            ahead.put((None, exc))

    worker = threading.Thread(target=work, name="hw5-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            out, exc = ahead.get()
            if exc is not None:
                raise exc
            if out is _DONE:
                return
            yield out
    finally:
        stop.set()

