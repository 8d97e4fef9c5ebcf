"""Frozen-CNN features on disk, shared by every SER run whose CNN has the same weights.

Every SER experiment and seed loads the same pretrained CNN and freezes it, so a clip's CNN features
are a function of (CNN weights, waveform, device type) only. `FeatureStore` keeps one .npy per clip under
`<cache>/features/<cnn key>/`, named by a hash of the normalized waveform: the grid's first SER run
computes them (one CNN call per clip; its cost: docs/performance.md), every later run loads
them. Concurrent jobs (a SLURM array) walk the clips in their own order, skip what another job already
wrote and write atomically, so they split the work instead of repeating it.

The key holds the device type and torch version because a GPU's and a CPU's convolutions differ in the
last bits; a run therefore reads only features its own kind of device would have computed.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hw5.io import share_like_umask

STORE_VERSION = 1            # bump when clip_features' output changes, so old entries are ignored


def cnn_key(cnn: nn.Module, device: torch.device) -> str:
    """Hash of the CNN's weights + the device type + torch version (a folder name)."""
    digest = hashlib.blake2b(digest_size=10)
    for name, tensor in sorted(cnn.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(f"{device.type}|{torch.__version__}|{STORE_VERSION}".encode())
    return digest.hexdigest()


class FeatureStore:
    """One .npy of float32 (frames, conv_dim) per clip, keyed by the waveform's bytes."""

    def __init__(self, root: str | os.PathLike, key: str):
        self.folder = Path(root) / key

    def entry(self, wave: np.ndarray) -> Path:
        digest = hashlib.blake2b(np.ascontiguousarray(wave, dtype=np.float32).tobytes(), digest_size=16)
        name = digest.hexdigest()
        return self.folder / name[:2] / f"{name}.npy"

    def load(self, wave: np.ndarray, frames: int, dim: int) -> np.ndarray | None:
        """The stored features, or None when absent or unreadable / of the wrong shape (then removed,
        so they are computed again: a job killed mid-write or a full disk must not poison the store)."""
        path = self.entry(wave)
        try:
            features = np.load(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)
            return None
        if features.shape != (frames, dim) or features.dtype != np.float32:
            path.unlink(missing_ok=True)
            return None
        return features

    def save(self, wave: np.ndarray, features: np.ndarray) -> None:
        """Write atomically (temp file + rename): a reader sees the whole array or nothing."""
        path = self.entry(wave)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(features, dtype=np.float32))
            share_like_umask(tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
