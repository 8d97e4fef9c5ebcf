"""Live training curves: TensorBoard event files under the results tree (`tensorboard --logdir results`).

Each run writes to `<tree>/tensorboard/<exp>/seed-<n>/` (hw5.contract.curves_dir), apart from its run
folder, so a run that stops early still leaves that folder absent (state "missing", not "partial").
Step lines come at the loop's log points (their host sync is already paid there); epoch lines hold
every history field. A resumed run purges the events written after its checkpoint, a run that starts
from scratch removes an earlier attempt's events, so each curve is one run's curve.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

# history fields drawn per epoch, under "epoch/"; their x is the global step, like the step lines
EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "units_per_s",
                "padding_share", "seconds", "peak_memory_mb")


class Curves:
    """A SummaryWriter opened as training starts (a run refused or failing before that writes nothing)."""

    def __init__(self, folder: Path | None):
        self.folder = folder               # None: write nothing (tensorboard: false)
        self._writer = None
        self._mark: tuple[float, float] | None = None   # (time, epoch units) at the last line written
        self.last_step = 0                 # where final() puts the chosen model's scores

    def start(self, global_step: int, units: float) -> None:
        """Called as training (re)starts at `global_step`, with the epoch's units so far."""
        if self.folder is None:
            return
        from torch.utils.tensorboard import SummaryWriter   # lazy: tensorboard is heavy to import
        if global_step == 0 and self.folder.exists():
            shutil.rmtree(self.folder)          # an earlier attempt's curves are not this run's
        self.folder.mkdir(parents=True, exist_ok=True)
        # a resumed run drops what an earlier attempt wrote after its checkpoint (a step's line comes before
        # that step's checkpoint, so the checkpoint's own step stays)
        self._writer = SummaryWriter(str(self.folder), purge_step=global_step + 1 if global_step else None)
        self._mark = (time.perf_counter(), units)

    def step(self, global_step: int, loss: float, lr: float, units: float) -> None:
        """A step line: the epoch's running mean loss, the learning rate, units/s since the last line."""
        if self._writer is None:
            return
        now = time.perf_counter()
        self._writer.add_scalar("train/loss", loss, global_step)
        self._writer.add_scalar("train/lr", lr, global_step)
        if self._mark is not None and now > self._mark[0] and units >= self._mark[1]:
            self._writer.add_scalar("train/units_per_s", (units - self._mark[1]) / (now - self._mark[0]),
                                    global_step)
        self._mark, self.last_step = (now, units), global_step

    def epoch(self, global_step: int, row: dict) -> None:
        if self._writer is None:
            return
        for name in EPOCH_FIELDS:
            if isinstance(row.get(name), (int, float)):
                self._writer.add_scalar(f"epoch/{name}", row[name], global_step)
        self._writer.flush()
        self._mark = (time.perf_counter(), 0.0)   # the next epoch's units count from 0
        self.last_step = global_step

    def final(self, split: str, metrics: dict) -> None:
        """The chosen model's scores on a split, as one point at the last step."""
        if self._writer is None:
            return
        for name in ("accuracy", "macro_f1", "uar", "loss"):
            if isinstance(metrics.get(name), (int, float)):
                self._writer.add_scalar(f"{split}/{name}", metrics[name], self.last_step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
