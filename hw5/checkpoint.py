"""Checkpoints: written atomically, read back with torch.load(weights_only=True) (tensors and plain
numbers only, never arbitrary pickles), tied to a config hash so a changed config never resumes."""
from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from hw5.errors import StorageError
from hw5.io import atomic_path


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors / plain numbers (weights_only-loadable)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """`last.pt` (model, optimizer, scheduler, RNG, loop position) and `best.pt` (best weights)."""

    def __init__(self, folder: str | Path, config_hash: str):
        self.folder = Path(folder)
        self.config_hash = config_hash

    def save(self, model, optimizer, scheduler, state: dict) -> None:
        self._write("last.pt", {"config_hash": self.config_hash, "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "rng": rng_state(), "state": state})

    def save_best(self, weights: dict) -> None:
        self._write("best.pt", {"config_hash": self.config_hash, "model": weights})

    def load(self) -> dict | None:
        return self._read("last.pt")

    def load_best(self) -> dict | None:
        saved = self._read("best.pt")
        return None if saved is None else saved["model"]

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _write(self, name: str, payload: dict) -> None:
        try:
            with atomic_path(self.folder / name) as tmp:
                torch.save(payload, tmp)
        except (OSError, RuntimeError) as exc:
            # torch reports a failed write (a full disk) as RuntimeError from its zip writer
            if isinstance(exc, RuntimeError) and "inline_container" not in str(exc) and "write" not in str(exc):
                raise
            free = shutil.disk_usage(self.folder).free / 2**20 if self.folder.exists() else 0
            raise StorageError(f"{self.folder / name}: the checkpoint could not be written ({free:.0f} MB free "
                               f"there): free some space or set HW5_CHECKPOINT_DIR / --checkpoint-dir elsewhere; "
                               f"the previous checkpoint is kept") from None

    def _read(self, name: str) -> dict | None:
        path = self.folder / name
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:        # truncated file, foreign pickle, ...: never resume from it
            # torch's own text advises weights_only=False (running the file's code): not repeated here
            why = ("it holds more than tensors and numbers (refused, never executed)"
                   if "Unsupported global" in str(exc) else f"damaged or not a checkpoint ({type(exc).__name__})")
            print(f"warning: ignoring unreadable checkpoint {path}: {why}", file=sys.stderr, flush=True)
            return None
        if not isinstance(saved, dict) or saved.get("config_hash") != self.config_hash:
            got = saved.get("config_hash") if isinstance(saved, dict) else None
            print(f"warning: ignoring checkpoint {path}: config hash {got} != {self.config_hash} "
                  f"(the experiment changed); starting over", file=sys.stderr, flush=True)
            return None
        return saved
