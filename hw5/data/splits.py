"""Train/val/test splits: stratified by class, or speaker-independent; saved with the run.

`stratified_split` rounds every class's share in one pass (largest remainder), so each class is
within one clip of its target in every part and a class with at least as many members as parts
appears in all of them; sklearn's two-stage train_test_split compounds the rounding of two splits.
`speaker_split` keeps each speaker in one part and searches for the assignment whose per-class
counts are closest to the targets (randomized greedy + local moves, best of several tries).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Sequence

import numpy as np

from hw5.data.shemo import DataError
from hw5.io import write_json_atomic

FRACTIONS = (0.8, 0.1, 0.1)   # train / val / test shares (the study's 80/10/10)
PART_NAMES = ("train", "val", "test")
SPEAKER_TRIES = 20            # random restarts of the speaker assignment; the best one is kept
MISSING_CLASS_PENALTY = 10.0  # cost of a class absent from a part that should hold some of it


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) < 2 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions {tuple(fractions)}: need 2+ positive shares summing to 1")


def class_quotas(n: int, fractions: Sequence[float]) -> list[int]:
    """Split n members by fractions (largest remainder); every part gets one if n allows."""
    exact = np.asarray(fractions) * n
    quotas = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: n - quotas.sum()]] += 1
    for part in np.flatnonzero(quotas == 0):
        if n >= len(fractions):          # borrow from the largest part
            quotas[np.argmax(quotas)] -= 1
            quotas[part] += 1
    return quotas.tolist()


def stratified_split(labels: Sequence, fractions: Sequence[float] = FRACTIONS,
                     seed: int = 0) -> tuple[np.ndarray, ...]:
    """Index arrays (sorted) of each part; each class's share kept within one item of its target."""
    _check_fractions(fractions)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for cls in sorted(set(labels.tolist())):
        members = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.cumsum(class_quotas(len(members), fractions))[:-1]
        for part, chunk in zip(parts, np.split(members, bounds)):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.asarray(part, dtype=int)) for part in parts)


def _cost(part_counts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Distance of (..., parts, classes) counts to the target: relative error, missing classes."""
    relative = (part_counts - target) / (target + 1.0)     # +1: tiny targets (fear in val) stay finite
    missing = (part_counts == 0) & (target >= 0.5)
    return (relative ** 2).sum(axis=(-2, -1)) + MISSING_CLASS_PENALTY * missing.sum(axis=(-2, -1))


def _greedy(counts: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign speakers, roughly largest first (randomized), each to the part that helps most."""
    n_parts = target.shape[0]
    order = np.argsort(-counts.sum(axis=1) * rng.uniform(0.5, 1.5, len(counts)))
    assign = np.zeros(len(counts), dtype=int)
    state = np.zeros_like(target)
    options = np.eye(n_parts)[:, :, None]                  # (choice, part, 1)
    for speaker in order:
        choice = int(np.argmin(_cost(state + options * counts[speaker], target)))
        assign[speaker] = choice
        state[choice] += counts[speaker]
    return assign


def _improve(counts: np.ndarray, target: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """Best-improvement local search: move one speaker, or swap two, while the cost drops."""
    n_parts = target.shape[0]
    for _ in range(10 * len(counts)):                      # bound; converges in a few dozen steps
        member = np.eye(n_parts)[assign]                     # (speaker, part) one-hot
        state = member.T @ counts                            # (part, class)
        current = float(_cost(state, target))
        # move speaker s to part q: state - c_s e_(a_s) + c_s e_q
        moves = (state[None, None] - member[:, None, :, None] * counts[:, None, None, :]
                 + np.eye(n_parts)[None, :, :, None] * counts[:, None, None, :])
        move_costs = _cost(moves, target)                    # (speaker, part)
        # swap speakers i and j: state + (c_i - c_j) (e_(a_j) - e_(a_i))
        swaps = state + ((member[None, :, :] - member[:, None, :])[..., None]
                         * (counts[:, None, :] - counts[None, :, :])[:, :, None, :])
        swap_costs = _cost(swaps, target)                    # (speaker, speaker)
        if min(move_costs.min(), swap_costs.min()) >= current - 1e-12:
            break
        if move_costs.min() <= swap_costs.min():
            speaker, part = np.unravel_index(np.argmin(move_costs), move_costs.shape)
            assign[speaker] = part
        else:
            i, j = np.unravel_index(np.argmin(swap_costs), swap_costs.shape)
            assign[i], assign[j] = assign[j], assign[i]
    return assign


def speaker_split(labels: Sequence, speakers: Sequence, fractions: Sequence[float] = FRACTIONS,
                  seed: int = 0, tries: int = SPEAKER_TRIES) -> tuple[np.ndarray, ...]:
    """Index arrays (sorted) of each part; no speaker in two parts, class mix as close as possible."""
    _check_fractions(fractions)
    labels, speakers = np.asarray(labels), np.asarray(speakers)
    if len(labels) != len(speakers):
        raise DataError(f"speaker_split: {len(labels)} labels but {len(speakers)} speakers")
    speaker_ids, speaker_of = np.unique(speakers, return_inverse=True)
    if len(speaker_ids) < len(fractions):
        raise DataError(f"speaker_split: {len(speaker_ids)} speaker(s) cannot fill "
                        f"{len(fractions)} parts without sharing")
    _, label_of = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(speaker_ids), label_of.max() + 1))
    np.add.at(counts, (speaker_of, label_of), 1)
    target = np.asarray(fractions)[:, None] * counts.sum(axis=0)[None, :]
    rng = np.random.default_rng(seed)
    best_cost, best = np.inf, None
    for _ in range(tries):
        assign = _improve(counts, target, _greedy(counts, target, rng))
        state = np.stack([counts[assign == p].sum(axis=0) for p in range(len(fractions))])
        cost = float(_cost(state, target))
        if cost < best_cost:
            best_cost, best = cost, assign.copy()
    part_of_item = best[speaker_of]
    return tuple(np.flatnonzero(part_of_item == p) for p in range(len(fractions)))


def class_shares(labels: Sequence, parts: Sequence[np.ndarray],
                 names: Sequence[str] = PART_NAMES) -> dict[str, dict[str, dict[str, float]]]:
    """{part: {class: {"count", "share_of_class"}}}: how each class spread over the parts."""
    labels = np.asarray(labels)
    totals = {cls: int((labels == cls).sum()) for cls in sorted(set(labels.tolist()))}
    return {name: {cls: {"count": int((labels[part] == cls).sum()),
                         "share_of_class": round(float((labels[part] == cls).sum()) / total, 4)}
                   for cls, total in totals.items()}
            for name, part in zip(names, parts)}


def save_split(path: str | os.PathLike, **parts: Sequence[str]) -> None:
    """Write the file lists, e.g. save_split(run_dir / "split.json", train=[...], val=..., test=...)."""
    seen = Counter(name for names in parts.values() for name in names)
    repeated = sorted(name for name, times in seen.items() if times > 1)
    if repeated:
        raise DataError(f"save_split: {len(repeated)} name(s) listed twice, e.g. {repeated[0]}")
    write_json_atomic(path, {part: list(names) for part, names in parts.items()})
