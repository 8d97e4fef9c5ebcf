"""What every bench row times with and reports: device sync, peak memory, the row itself (a leaf, so the
bench modules form no circle)."""
from __future__ import annotations

import resource
from dataclasses import dataclass

import torch


@dataclass
class PathResult:
    task: str
    path: str
    steps: int
    seconds: float
    units_per_s: float
    examples_per_s: float
    padding_share: float
    peak_memory_mb: float
    prep_seconds: float          # one-off work: CNN features once per clip (SER); peers: the Trainer's set-up
    warmup_seconds: float        # each new step shape's first step (kernel loading, plans, compiling);
                                 # peers: the whole first epoch
    note: str = ""               # graphs: how many were captured, or why capturing failed; peers: workers


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device, rss0: int) -> float:
    """CUDA: peak allocated; CPU: growth of the process's peak RSS (the first path pays for pools)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
