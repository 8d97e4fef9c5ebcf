"""Which examples go into which batch: dynamic, fixed or length-bucketed, reproducible per (seed, epoch).

The order of an epoch is a pure function of (seed, epoch), so a run resumed mid-epoch replays exactly
the batches it had not seen yet.
"""
from __future__ import annotations

import torch

BUCKET_CHUNK = 64   # batches per sorting chunk: big enough to group lengths, small enough to stay random


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_batches(lengths: list[int], batch_size: int, mode: str, seed: int, epoch: int,
                  budget: int = 0) -> list[list[int]]:
    """Shuffled batches of indices; "bucket" sorts each chunk of 64 batches by length first, or, with a
    budget, fills length-sorted batches to `budget` padded units (`budget_batches`)."""
    if budget and mode == "bucket":
        return budget_batches(lengths, budget, seed, epoch)
    gen = epoch_generator(seed, epoch)
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    if mode != "bucket":
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    chunk = batch_size * BUCKET_CHUNK
    batches = []
    for start in range(0, len(perm), chunk):
        part = sorted(perm[start:start + chunk], key=lambda j: lengths[j])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def budget_batches(lengths: list[int], budget: int, seed: int, epoch: int) -> list[list[int]]:
    """Length-bucketed batches filled up to `budget` padded units (tokens or samples): many short
    examples or few long ones per step, so padding stays small and memory per step stays flat."""
    gen = epoch_generator(seed, epoch)
    order = sorted(torch.randperm(len(lengths), generator=gen).tolist(), key=lambda j: lengths[j])
    batches, current, widest = [], [], 0
    for j in order:
        if current and max(widest, lengths[j]) * (len(current) + 1) > budget:
            batches.append(current)
            current, widest = [], 0
        current.append(j)
        widest = max(widest, lengths[j])
    if current:
        batches.append(current)
    shuffled = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in shuffled]


def eval_batches(lengths: list[int], batch_size: int, mode: str) -> list[list[int]]:
    """Deterministic evaluation batches; length-sorted unless fixed padding is being measured."""
    order = list(range(len(lengths)))
    if mode != "fixed":
        order.sort(key=lambda j: lengths[j])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def round_width(width: int, step: int, cap: int = 0) -> int:
    """`width` rounded up to a multiple of `step` (0 = unchanged), at most `cap` (0 = no cap): batches
    then come in a few shapes, which is what a captured CUDA graph per shape needs."""
    if step <= 0:
        return width
    rounded = -(-width // step) * step
    return min(rounded, cap) if cap else rounded


def pad_2d(rows: list[list[int]], width: int, value: int = 0) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row[:width], dtype=torch.long)
    return out


def pad_rows(rows: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of at most `width` steps (waveforms (T,) or CNN features (T, dim)) zero-padded into
    (B, width, ...) + a (B, width) 0/1 mask, built where the rows live (no host round trip for
    features cached on the GPU)."""
    out = rows[0].new_zeros(len(rows), width, *rows[0].shape[1:])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=out.device)
    for row, x in enumerate(rows):
        out[row, :len(x)] = x
        mask[row, :len(x)] = 1
    return out, mask
