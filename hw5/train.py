"""One training loop for both tasks: AdamW + warm-up/linear decay, eval per epoch, best-on-val,
checkpoint/resume, per-epoch history.

Preemption: whoever catches the scheduler's signal sets `STOP`; at the next step boundary the loop
writes a checkpoint and raises `Interrupted`. Calling `fit` again with the same checkpointer resumes
and ends with the same metrics as an uninterrupted run (on CPU).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hw5.checkpoint import Checkpointer, restore_rng
from hw5.config import TrainConfig
from hw5.curves import Curves
from hw5.device import autocast
from hw5.metrics import classification_metrics
from hw5.step import train_step

STOP = threading.Event()


class Interrupted(Exception):
    """Raised after a requested checkpoint is safely on disk."""


@contextlib.contextmanager
def stop_on_signals(who: str):
    """SIGTERM or a first Ctrl-C (the user stopping a run, or scancel): finish the step, save a
    checkpoint, stop (STOP); a second Ctrl-C stops at once. Yields the names of the signals received."""
    received: list[str] = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if name == "SIGINT" and "SIGINT" in received:
            raise KeyboardInterrupt
        received.append(name)
        print(f"\n{who}: {name}: saving a checkpoint at the next step (Ctrl-C again stops at once)",
              file=sys.stderr, flush=True)
        STOP.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)
        STOP.clear()


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]    # keyword arguments of model.forward
    labels: torch.Tensor
    units: float                       # real tokens / audio seconds in the batch
    padded_units: float                # the same including padding


class TaskData(Protocol):
    classes: list[str]
    unit: str                          # "tokens" or "audio_seconds"
    def prepare(self) -> None: ...     # one-off work on the model's device, before the first timed epoch
    def train_batches(self, epoch: int) -> list[list[int]]: ...
    def eval_batches(self, split: str) -> list[list[int]]: ...
    def collate(self, indices: list[int], split: str) -> Batch: ...


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; our head gets head_lr; no weight decay on biases and norms."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (not name.startswith("encoder."), p.ndim < 2)
            groups.setdefault(key, []).append(p)
    params = [{"params": ps, "lr": (cfg.head_lr or cfg.lr) if is_head else cfg.lr,
               "weight_decay": 0.0 if no_decay else cfg.weight_decay}
              for (is_head, no_decay), ps in sorted(groups.items())]
    return torch.optim.AdamW(params, fused=device.type == "cuda")


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate(model: nn.Module, data: TaskData, split: str, device: torch.device, precision: str,
             loss_weights: torch.Tensor | None = None) -> dict:
    """Loss, predictions and metrics of one split (no grads, deterministic order)."""
    model.eval()
    losses, preds, labels, order = [], [], [], []
    with torch.no_grad(), autocast(device, precision):
        for indices in data.eval_batches(split):
            batch = data.collate(indices, split)
            logits = model(**{k: v.to(device) for k, v in batch.inputs.items()}).float()
            y = batch.labels.to(device)
            losses.append(F.cross_entropy(logits, y, weight=loss_weights, reduction="sum"))
            preds.append(logits.argmax(-1))
            labels.append(y)
            order += indices
    # back to dataset order (batches are length-sorted), so predictions line up with the examples
    position = np.argsort(order)
    y_true = torch.cat(labels).cpu().numpy()[position]
    y_pred = torch.cat(preds).cpu().numpy()[position]
    out = classification_metrics(y_true, y_pred, data.classes)
    out["loss"] = float(torch.stack(losses).sum()) / max(1, len(y_true))
    out["predictions"] = y_pred.tolist()
    return out


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux reports KiB


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    train_seconds: float
    units: float
    padded_units: float
    examples: int
    cuda_graphs: dict | None = None    # StepGraphs.stats() of this process, when cfg.cuda_graphs


def _new_state() -> dict[str, Any]:
    return {"epoch": 0, "step": 0, "history": [], "best_epoch": 0, "best_score": -1.0,
            "seconds": 0.0, "units": 0.0, "padded": 0.0, "examples": 0,
            "epoch_sums": {"loss": 0.0, "correct": 0, "count": 0, "units": 0.0, "padded": 0.0, "seconds": 0.0}}


def _resumable(ckpt: Checkpointer) -> tuple[dict | None, dict | None]:
    """(last, best) to resume from, or (None, None): a last.pt whose best epoch's weights (best.pt) are
    unreadable cannot finish with the right model, so the run starts over instead."""
    saved = ckpt.load()
    if saved is None or not saved["state"].get("best_epoch"):
        return saved, None
    best = ckpt.load_best()
    if best is None:
        print(f"warning: {ckpt.folder / 'best.pt'} is missing or unreadable, so the best epoch's weights are "
              f"lost; training from scratch", file=sys.stderr, flush=True)
        return None, None
    return saved, best


def fit(model: nn.Module, data: TaskData, cfg: TrainConfig, ckpt: Checkpointer, device: torch.device,
        loss_weights: torch.Tensor | None = None, curves: Curves | None = None) -> FitResult:
    """Train cfg.epochs epochs, choosing the best epoch by validation macro-F1."""
    curves = curves or Curves(None)
    optimizer = make_optimizer(model, cfg, device)
    steps_per_epoch = len(data.train_batches(0))
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    state, best_state = _new_state(), None
    saved, best = _resumable(ckpt)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng(saved["rng"])
        state, best_state = saved["state"], best
        print(f"resumed from {ckpt.folder} at epoch {state['epoch'] + 1} step {state['step']}", flush=True)
    graphs = None
    if cfg.cuda_graphs:               # after a resume: the loaded optimizer state gets the graph-safe form
        from hw5.graphs import StepGraphs
        graphs = StepGraphs(model, optimizer, device, cfg.precision, cfg.max_grad_norm, loss_weights)
    curves.start(state.get("global_step", 0), state["epoch_sums"]["units"])
    while state["epoch"] < cfg.epochs:
        _train_epoch(model, data, cfg, ckpt, device, optimizer, scheduler, state, loss_weights, graphs, curves)
        val = evaluate(model, data, "val", device, cfg.precision, loss_weights)
        row = _close_epoch(state, val, optimizer, device)
        curves.epoch(state.get("global_step", 0), row)
        if val["macro_f1"] > state["best_score"]:
            state["best_score"], state["best_epoch"] = val["macro_f1"], row["epoch"]
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            ckpt.save_best(best_state)
        ckpt.save(model, optimizer, scheduler, state)
        print(_epoch_line(row, cfg.epochs, data.unit), flush=True)
    return FitResult(state["history"], state["best_epoch"], best_state, state["seconds"], state["units"],
                     state["padded"], state["examples"], graphs.stats() if graphs else None)


def _train_epoch(model, data, cfg, ckpt, device, optimizer, scheduler, state, loss_weights, graphs, curves) -> None:
    model.train()
    batches = data.train_batches(state["epoch"])
    sums = state["epoch_sums"]
    # Running sums stay on the device: no host sync per step.
    loss_sum = graphs.loss_sum if graphs else torch.zeros((), dtype=torch.float64, device=device)
    correct = graphs.correct if graphs else torch.zeros((), dtype=torch.long, device=device)
    loss_sum.zero_(), correct.zero_()
    trainable = [p for p in model.parameters() if p.requires_grad]
    started, unfolded = time.perf_counter(), 0          # examples in the device sums
    for step in range(state["step"], len(batches)):
        batch = data.collate(batches[step], "train")
        y = batch.labels.to(device, non_blocking=True)
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
        if graphs:
            graphs.step(inputs, y)
        else:
            train_step(model, optimizer, inputs, y, loss_sum, correct, device=device, precision=cfg.precision,
                       params=trainable, max_grad_norm=cfg.max_grad_norm, loss_weights=loss_weights)
        scheduler.step()
        sums["count"] += len(y)
        sums["units"] += batch.units
        sums["padded"] += batch.padded_units
        unfolded += len(y)
        state["step"] = step + 1
        state["global_step"] = state.get("global_step", 0) + 1     # across epochs: the curves' x
        if cfg.log_every and state["step"] % cfg.log_every == 0:      # one host sync per log line
            loss = float(loss_sum) / unfolded
            print(f"  epoch {state['epoch'] + 1} step {state['step']}/{len(batches)} mean loss {loss:.4f}", flush=True)
            curves.step(state["global_step"], loss, float(optimizer.param_groups[0]["lr"]), sums["units"])
        periodic = cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0
        if STOP.is_set() or periodic:
            _fold(sums, loss_sum, correct, started, device)
            loss_sum.zero_(), correct.zero_()
            started, unfolded = time.perf_counter(), 0
            ckpt.save(model, optimizer, scheduler, state)
            if STOP.is_set():
                raise Interrupted(f"checkpoint saved at epoch {state['epoch'] + 1} step {state['step']}")
    _fold(sums, loss_sum, correct, started, device)


def _fold(sums: dict, loss_sum: torch.Tensor, correct: torch.Tensor, started: float, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sums["loss"] += float(loss_sum)
    sums["correct"] += int(correct)
    sums["seconds"] += time.perf_counter() - started


def _close_epoch(state: dict, val: dict, optimizer, device) -> dict:
    sums = state["epoch_sums"]
    row = {"epoch": state["epoch"] + 1,
           "train_loss": sums["loss"] / max(1, sums["count"]),
           "train_acc": sums["correct"] / max(1, sums["count"]),
           "val_loss": val["loss"], "val_acc": val["accuracy"], "val_macro_f1": val["macro_f1"],
           "lr": float(optimizer.param_groups[0]["lr"]), "seconds": sums["seconds"],
           "padding_share": 1 - sums["units"] / sums["padded"] if sums["padded"] else 0.0,
           "units_per_s": sums["units"] / sums["seconds"] if sums["seconds"] else 0.0,
           "peak_memory_mb": peak_memory_mb(device)}
    state["history"].append(row)
    state["seconds"] += sums["seconds"]
    state["units"] += sums["units"]
    state["padded"] += sums["padded"]
    state["examples"] += sums["count"]
    state["epoch"] += 1
    state["step"] = 0
    state["epoch_sums"] = _new_state()["epoch_sums"]
    return row


def _epoch_line(row: dict, epochs: int, unit: str) -> str:
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} macro-F1 {row['val_macro_f1']:.3f}  "
            f"{row['seconds']:.1f}s  {row['units_per_s']:.0f} {unit}/s  pad {row['padding_share']:.1%}")


def set_seed(seed: int) -> None:
    """Seed every RNG the run touches, once, before anything random."""
    import random
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

