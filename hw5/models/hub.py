"""Loading a model by hub id or local directory; one clear error when it is neither cached nor reachable.

A cached model loads without touching the network. An uncached hub id on a machine that cannot reach
the hub fails at once (a TCP probe) instead of after the hub client's retries.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from hw5.errors import DataError
from hw5.reuse import reused

PROBE_TIMEOUT_S = 3.0


def hub_kwargs(cfg) -> dict:
    """from_pretrained kwargs: the cache dir and offline mode (compute nodes have no internet)."""
    kwargs = {"cache_dir": cfg.cache_dir or None}
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        kwargs["local_files_only"] = True
    return kwargs


def from_pretrained(loader, path: str, cfg, **kwargs):
    """loader.from_pretrained(path) from a local directory, the cache, or the hub, in that order
    (once per packed job: hw5.reuse; each run gets its own copy)."""
    import torch
    options = {**hub_kwargs(cfg), **kwargs}
    key = (f"{loader.__module__}.{loader.__qualname__}", str(path), json.dumps(options, sort_keys=True, default=str))
    # Loading draws nothing from the run's random stream (HuBERT's constructor draws before its weights
    # are overwritten): a run's head and batches see the same draws whether its weights come from disk
    # or from a pack's copy.
    with torch.random.fork_rng(devices=[]):
        return reused("pretrained", key, lambda: _find(loader, path, cfg, options), private=True)


def _find(loader, path: str, cfg, options: dict):
    if Path(path).expanduser().is_dir() or options.get("local_files_only"):
        return _load(loader, path, options)
    try:
        return loader.from_pretrained(path, **{**options, "local_files_only": True})
    except OSError:
        pass            # not cached (completely): the hub must be asked
    host = _hub_host()
    if not _reachable(host):
        raise DataError(_missing(path, cfg, f"{host[0]} cannot be reached from {socket.gethostname()}"))
    return _load(loader, path, options)


def _load(loader, path: str, options: dict):
    try:
        return loader.from_pretrained(path, **options)
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(_missing(path, None, first, options.get("local_files_only"))) from None


def _missing(path: str, cfg, why: str, offline: bool = False) -> str:
    where = (getattr(cfg, "cache_dir", "") if cfg else "") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    mode = " (HF_HUB_OFFLINE=1)" if offline else ""
    return (f"model {path}: not in the local cache{mode} ({where}) and {why}; run `python jobs/launch.py "
            f"--prefetch --all` where the hub is reachable (same HF_HOME), or set model_name to a local directory")


def _hub_host() -> tuple[str, int]:
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _reachable(host: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(host, timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
