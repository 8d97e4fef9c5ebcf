"""Atomic writes, environment paths and provenance (git sha, versions, device, SLURM ids)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from hw5.errors import StorageError


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022   # no /proc (not Linux): the common default


def share_like_umask(path: str | os.PathLike, recursive: bool = False) -> None:
    """Give temp-made files/dirs (mkstemp/mkdtemp: 0600/0700) the modes a normal write would have,
    so other users of a shared cache or results folder (Apptainer runs as any uid) can read them."""
    path = Path(path)
    mask = _umask()
    for p in [path, *(path.rglob("*") if recursive and path.is_dir() else [])]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; it replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        share_like_umask(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime): a changed file is hashed again."""
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """A staged folder takes target's place in one rename; an older target is renamed aside, then removed."""
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n",
                       encoding="utf-8")
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))    # Unix newlines on every platform


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):          # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def check_room(folder: Path, need_mb: int, what: str) -> None:
    """The folder (or the nearest part of it that exists) is a writable directory with need_mb free."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(f"{existing}: is a file, so the {what} folder {folder} cannot be made there; "
                           f"pass a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"{existing}: not writable (read-only filesystem or permissions), so no {what} can be "
                           f"written to {folder}; pass a writable location")
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < need_mb:
        raise StorageError(f"{existing}: {free_mb:.0f} MB free, a run's {what} needs about {need_mb} MB; "
                           f"free some space or pass another location")


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Where datasets live: --data-dir, else $HW5_DATA_DIR, else ./data."""
    return Path(override or os.environ.get("HW5_DATA_DIR") or "data").expanduser()


def cache_dir() -> Path:
    """Where built artefacts live (tiny models, decoded audio, synthetic corpus): $HW5_CACHE_DIR or ./cache."""
    return Path(os.environ.get("HW5_CACHE_DIR") or "cache").expanduser()


def checkpoint_root(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("HW5_CHECKPOINT_DIR") or "checkpoints").expanduser()


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "numpy", "scikit-learn", "soundfile", "soxr"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def slurm_ids() -> dict[str, str | None]:
    keys = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
            "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_restart_count": "SLURM_RESTART_COUNT"}
    return {k: os.environ.get(v) for k, v in keys.items()}


def provenance(device: str) -> dict:
    """Which code ran (read from the code itself), in which container, on what, when."""
    from hw5.identity import code_identity, container_identity
    code = code_identity()
    return {"git_sha": code["git_sha"], "git_dirty": code["git_dirty"],
            "code": {"source": code["source"], "path": code["path"]}, "container": container_identity(),
            "versions": package_versions(), "device": device, "host": socket.gethostname(), **slurm_ids(),
            "started": now_iso()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
