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
from dataclasses import asdict, dataclass, field
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


@dataclass
class EpochSums:
    """The epoch in progress, as host numbers (folded from the device sums at log and checkpoint points)."""
    loss: float = 0.0
    correct: int = 0
    count: int = 0            # training examples seen
    units: float = 0.0        # real tokens / audio seconds
    padded: float = 0.0       # the same, padding included
    seconds: float = 0.0


@dataclass
class TrainState:
    """Where training stands; every checkpoint holds it (as a plain dict) and a resume starts from it."""
    epoch: int = 0            # epochs finished
    step: int = 0             # steps finished in the current epoch
    global_step: int = 0      # steps finished over all epochs: the curves' x
    history: list = field(default_factory=list)   # one row per finished epoch
    best_epoch: int = 0       # 1-based; 0 before the first epoch ends
    best_score: float = -1.0  # its validation macro-F1
    seconds: float = 0.0      # training time of the finished epochs
    units: float = 0.0
    padded: float = 0.0
    examples: int = 0
    sums: EpochSums = field(default_factory=EpochSums)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "TrainState":
        """A checkpoint's state; one written before global_step existed resumes with the steps counted."""
        fields = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__ and k != "sums"}
        sums = saved.get("sums") or saved.get("epoch_sums") or {}
        return cls(**fields, sums=EpochSums(**sums))


@dataclass
class Loop:
    """What every epoch of one fit uses (one argument instead of ten)."""
    model: nn.Module
    data: TaskData
    cfg: TrainConfig
    ckpt: Checkpointer
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_weights: torch.Tensor | None
    graphs: Any                      # hw5.graphs.StepGraphs with cfg.cuda_graphs, else None
    curves: Curves


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
    state, best_state = TrainState(), None
    saved, best = _resumable(ckpt)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng(saved["rng"])
        state, best_state = TrainState.from_dict(saved["state"]), best
        print(f"resumed from {ckpt.folder} at epoch {state.epoch + 1} step {state.step}", flush=True)
    graphs = None
    if cfg.cuda_graphs:               # after a resume: the loaded optimizer state gets the graph-safe form
        from hw5.graphs import StepGraphs
        graphs = StepGraphs(model, optimizer, device, cfg.precision, cfg.max_grad_norm, loss_weights)
    loop = Loop(model, data, cfg, ckpt, device, optimizer, scheduler, loss_weights, graphs, curves)
    curves.start(state.global_step, state.sums.units)
    while state.epoch < cfg.epochs:
        _train_epoch(loop, state)
        val = evaluate(model, data, "val", device, cfg.precision, loss_weights)
        row = _close_epoch(state, val, optimizer, device)
        curves.epoch(state.global_step, row)
        if val["macro_f1"] > state.best_score:
            state.best_score, state.best_epoch = val["macro_f1"], row["epoch"]
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            ckpt.save_best(best_state)
        ckpt.save(model, optimizer, scheduler, state.as_dict())
        print(_epoch_line(row, cfg.epochs, data.unit), flush=True)
    return FitResult(state.history, state.best_epoch, best_state, state.seconds, state.units,
                     state.padded, state.examples, graphs.stats() if graphs else None)


def _train_epoch(loop: Loop, state: TrainState) -> None:
    model, cfg, device, graphs = loop.model, loop.cfg, loop.device, loop.graphs
    model.train()
    batches = loop.data.train_batches(state.epoch)
    sums = state.sums
    # Running sums stay on the device: no host sync per step.
    loss_sum = graphs.loss_sum if graphs else torch.zeros((), dtype=torch.float64, device=device)
    correct = graphs.correct if graphs else torch.zeros((), dtype=torch.long, device=device)
    loss_sum.zero_(), correct.zero_()
    trainable = [p for p in model.parameters() if p.requires_grad]
    started, unfolded = time.perf_counter(), 0          # examples in the device sums
    for step in range(state.step, len(batches)):
        batch = loop.data.collate(batches[step], "train")
        y = batch.labels.to(device, non_blocking=True)
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
        if graphs:
            graphs.step(inputs, y)
        else:
            train_step(model, loop.optimizer, inputs, y, loss_sum, correct, device=device, precision=cfg.precision,
                       params=trainable, max_grad_norm=cfg.max_grad_norm, loss_weights=loop.loss_weights)
        loop.scheduler.step()
        sums.count += len(y)
        sums.units += batch.units
        sums.padded += batch.padded_units
        unfolded += len(y)
        state.step, state.global_step = step + 1, state.global_step + 1
        if cfg.log_every and state.step % cfg.log_every == 0:      # one host sync per log line
            loss = float(loss_sum) / unfolded
            print(f"  epoch {state.epoch + 1} step {state.step}/{len(batches)} mean loss {loss:.4f}", flush=True)
            loop.curves.step(state.global_step, loss, float(loop.optimizer.param_groups[0]["lr"]), sums.units)
        periodic = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
        if STOP.is_set() or periodic:
            _fold(sums, loss_sum, correct, started, device)
            loss_sum.zero_(), correct.zero_()
            started, unfolded = time.perf_counter(), 0
            loop.ckpt.save(model, loop.optimizer, loop.scheduler, state.as_dict())
            if STOP.is_set():
                raise Interrupted(f"checkpoint saved at epoch {state.epoch + 1} step {state.step}")
    _fold(sums, loss_sum, correct, started, device)


def _fold(sums: EpochSums, loss_sum: torch.Tensor, correct: torch.Tensor, started: float, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sums.loss += float(loss_sum)
    sums.correct += int(correct)
    sums.seconds += time.perf_counter() - started


def _close_epoch(state: TrainState, val: dict, optimizer, device) -> dict:
    sums = state.sums
    row = {"epoch": state.epoch + 1,
           "train_loss": sums.loss / max(1, sums.count),
           "train_acc": sums.correct / max(1, sums.count),
           "val_loss": val["loss"], "val_acc": val["accuracy"], "val_macro_f1": val["macro_f1"],
           "lr": float(optimizer.param_groups[0]["lr"]), "seconds": sums.seconds,
           "padding_share": 1 - sums.units / sums.padded if sums.padded else 0.0,
           "units_per_s": sums.units / sums.seconds if sums.seconds else 0.0,
           "peak_memory_mb": peak_memory_mb(device)}
    state.history.append(row)
    state.seconds += sums.seconds
    state.units += sums.units
    state.padded += sums.padded
    state.examples += sums.count
    state.epoch, state.step, state.sums = state.epoch + 1, 0, EpochSums()
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

