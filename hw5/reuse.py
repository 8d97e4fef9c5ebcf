"""What the runs of one packed job load once and share: weights, tokenizers, FarsTail, tokenized pairs,
decoded audio and CNN features, kept in memory for the job's lifetime.

Off unless a job opens `session()` (jobs/job.py does for a pack of several runs): a lone `hw5 run`
loads as it always did. Every key holds everything that decides the value (path, options, texts,
sample rate, the CNN's own key), so a run gets exactly what it would have loaded itself; what could be
changed by a run (a model, a tokenizer) is handed out as a deep copy, and what is shared as is (pairs,
waveforms) is never written to by a run.
"""
from __future__ import annotations

import contextlib
import copy
from collections import Counter
from typing import Callable, Hashable, Iterator, TypeVar

T = TypeVar("T")

_cache: dict[tuple[str, Hashable], object] | None = None
_counts: Counter = Counter()


@contextlib.contextmanager
def session() -> Iterator[Counter]:
    """Share loads between the runs inside the block; yields the counts ("<kind> hit|load")."""
    global _cache
    outer = _cache
    if outer is None:
        _cache = {}
        _counts.clear()
    try:
        yield _counts
    finally:
        if outer is None:
            _cache = None


def active() -> bool:
    return _cache is not None


def reused(kind: str, key: Hashable, build: Callable[[], T], private: bool = False) -> T:
    """build() once per session and key; `private`: each caller gets its own deep copy (it may change it).
    Outside a session: build()."""
    if _cache is None:
        return build()
    slot = (kind, key)
    if slot in _cache:
        _counts[f"{kind} hit"] += 1
    else:
        _cache[slot] = build()
        _counts[f"{kind} load"] += 1
    value = _cache[slot]
    return copy.deepcopy(value) if private else value   # type: ignore[return-value]
