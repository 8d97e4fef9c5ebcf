"""The one training step. The eager loop (train.py), its CUDA-graph capture (graphs.py) and the bench
(bench/core.py) all run this function, so what the bench times is what a run does."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hw5.device import autocast


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: dict[str, torch.Tensor],
               labels: torch.Tensor, loss_sum: torch.Tensor, correct: torch.Tensor, *, device: torch.device,
               precision: str, params: list[torch.Tensor], max_grad_norm: float = 0.0,
               loss_weights: torch.Tensor | None = None, capture: bool = False) -> None:
    """Zero the gradients, forward under autocast, weighted cross-entropy, backward, clip, optimizer step;
    the summed loss and the hits go into `loss_sum` / `correct` on the device (no host sync, so the step
    is capturable). `capture`: gradients are zeroed in place (a graph replays fixed addresses) and the
    autocast cache is off (cast weights must not outlive the graph's pool)."""
    optimizer.zero_grad(set_to_none=not capture)
    with autocast(device, precision, cache=not capture):
        logits = model(**inputs).float()
    loss = F.cross_entropy(logits, labels, weight=loss_weights)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    loss_sum += loss.detach().double() * labels.shape[0]
    correct += (logits.argmax(-1) == labels).sum()
