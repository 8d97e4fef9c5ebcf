"""The background batch builder: same items, same order; errors surface where they belong."""
from __future__ import annotations

import threading

import pytest
import torch

from hw5.data.loader import prefetched


def test_items_arrive_in_order_built_on_another_thread():
    threads = set()

    def make(i):
        threads.add(threading.current_thread().name)
        return {"x": torch.full((2,), i)}
    out = [batch["x"][0].item() for batch in prefetched(range(10), make, depth=3)]
    assert out == list(range(10)) and threads == {"hw5-prefetch"}


def test_an_error_in_a_batch_is_raised_at_that_batch():
    def make(i):
        if i == 3:
            raise ValueError("bad batch 3")
        return i
    seen = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for item in prefetched(range(6), make):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_leaving_early_stops_the_worker():
    built = []
    for item in prefetched(range(1000), lambda i: built.append(i) or i, depth=2):
        if item == 1:
            break
    threading.Event().wait(0.3)
    assert len(built) < 10
