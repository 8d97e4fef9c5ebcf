"""Audio loading: decode with soundfile, downmix to mono, resample with soxr (HQ) to 16 kHz; once.

`AudioCache` keeps one .npy per clip, named by a hash of (source path, size, mtime_ns, target rate,
resampler settings), so a second pass never decodes and a changed source file is decoded again.
Bad files (corrupt, empty, not audio, truncated) never stop a pass: every problem is collected and
reported together, with the file name and reason, once the pass is over.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
import soxr

from hw5.errors import DataError
from hw5.io import share_like_umask

TARGET_SR = 16000            # HuBERT's input rate
RESAMPLE_QUALITY = "HQ"      # soxr "HQ": aliasing far below 16-bit audio at a small cost (docs/design.md)
MIN_SAMPLES = 400            # HuBERT's CNN needs 400 samples (25 ms at 16 kHz) for one frame
CACHE_VERSION = 1            # bump when load_clip's output changes, so old cache entries are ignored
DECODE_COUNT = 0             # load_clip calls in this process (tests use it to prove cache hits)
_MAX_LISTED = 20             # problem lines shown in one error before "... and N more"
# libsndfile notes a data chunk shorter than its header declares as "data : 88200 (should be 44078)"
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def load_clip(path: str | os.PathLike, target_sr: int = TARGET_SR,
              quality: str = RESAMPLE_QUALITY) -> np.ndarray:
    """Mono float32 samples at `target_sr`; DataError naming the file if it is not usable audio."""
    global DECODE_COUNT
    DECODE_COUNT += 1
    if os.path.exists(path) and os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (0 bytes); replace it with the original WAV")
    try:
        with sf.SoundFile(path) as audio_file:
            _check_not_truncated(audio_file)
            rate = audio_file.samplerate
            frames = audio_file.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        raise DataError(f"{path}: cannot decode ({reason}); replace it with the original WAV") from None
    if frames.shape[0] == 0:
        raise DataError(f"{path}: empty (0 samples); replace it with the original WAV")
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    if not np.isfinite(mono).all():
        raise DataError(f"{path}: contains NaN or infinite samples; replace it with the original WAV")
    if rate != target_sr:
        mono = soxr.resample(mono, rate, target_sr, quality=quality)
    if len(mono) < MIN_SAMPLES:
        raise DataError(f"{path}: {len(mono)} samples at {target_sr} Hz, shorter than HuBERT's "
                        f"{MIN_SAMPLES}-sample window; remove it from the corpus")
    return np.ascontiguousarray(mono, dtype=np.float32)


def header_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a WAV without decoding it (empty, not audio, truncated), or None."""
    try:
        if os.path.getsize(path) == 0:
            return f"{path}: empty file (0 bytes); replace it with the original WAV"
        with sf.SoundFile(path) as audio_file:
            _check_not_truncated(audio_file)
            if audio_file.frames == 0:
                return f"{path}: empty (0 samples); replace it with the original WAV"
    except DataError as exc:
        return str(exc)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        return f"{path}: cannot decode ({reason}); replace it with the original WAV"
    return None


def _check_not_truncated(audio_file: sf.SoundFile) -> None:
    match = _SHORT_DATA.search(audio_file.extra_info)
    if match and int(match.group(2)) < int(match.group(1)):
        raise DataError(f"{audio_file.name}: truncated (header declares {match.group(1)} data bytes, "
                        f"file holds {match.group(2)}); re-extract it from the release zip")


def progress(items: Iterable, total: int, desc: str) -> Iterator:
    """tqdm on stderr when installed, else a plain line every 10%."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items, total, desc)
    return iter(tqdm(items, total=total, desc=desc, unit="clip", file=sys.stderr, mininterval=1.0))


def _plain_progress(items: Iterable, total: int, desc: str) -> Iterator:
    step = max(1, total // 10)
    for done, item in enumerate(items, 1):
        if done % step == 0 or done == total:
            print(f"{desc}: {done}/{total}", file=sys.stderr, flush=True)
        yield item


def _run_pool(function: Callable, tasks: Sequence, workers: int, desc: str) -> list:
    """function over tasks in `workers` processes (1 = in this process), in order, with progress."""
    if workers <= 1 or len(tasks) < 2:
        return list(progress(map(function, tasks), len(tasks), desc))
    chunk = max(1, min(32, len(tasks) // (8 * workers)))   # few round trips, still a smooth bar
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(progress(pool.map(function, tasks, chunksize=chunk), len(tasks), desc))


def _report_throughput(done: int, seconds: float, workers: int, what: str) -> float:
    rate = done / seconds if seconds > 0 else float("inf")
    print(f"{what}: {done} clips in {seconds:.1f} s ({rate:.0f} clips/s, {workers} worker(s))",
          file=sys.stderr, flush=True)
    return rate


def _problems_error(problems: list[str], total: int, cached: bool) -> DataError:
    shown = problems[:_MAX_LISTED]
    more = [f"... and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
    return DataError(f"{len(problems)} of {total} audio file(s) could not be used:\n  "
                     + "\n  ".join(shown + more)
                     + "\nReplace or remove these files"
                     + (" (the others are decoded and cached)." if cached else "."))


def _decode_task(task: tuple[str, int, str]) -> np.ndarray | str:
    """Decoded samples, or the problem as text (never raises: one bad file must not stop a pass)."""
    path, target_sr, quality = task
    try:
        return load_clip(path, target_sr, quality)
    except Exception as exc:  # noqa: BLE001 - reported with the file name after the pass
        return str(exc) if isinstance(exc, DataError) else f"{path}: {exc!r}"


def decode_all(paths: Sequence[str | os.PathLike], workers: int = 1, target_sr: int = TARGET_SR,
               quality: str = RESAMPLE_QUALITY) -> list[np.ndarray]:
    """Decode + resample every clip (process pool); DataError listing all bad files after the pass."""
    started = time.perf_counter()
    tasks = [(str(p), target_sr, quality) for p in paths]
    results = _run_pool(_decode_task, tasks, workers, "decoding audio")
    problems = [r for r in results if isinstance(r, str)]
    if problems:
        raise _problems_error(problems, len(paths), cached=False)
    _report_throughput(len(paths), time.perf_counter() - started, workers, "decoded")
    return results


@dataclass
class CacheReport:
    """What one AudioCache.ensure pass did."""
    decoded: int          # clips decoded now
    cached: int           # clips found in the cache
    seconds: float        # wall time of the pass
    clips_per_s: float    # decoded clips per second (inf when nothing was decoded)


def _save_npy_atomic(path: Path, samples: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, samples)
        share_like_umask(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _decode_to_cache(task: tuple[str, str, int, str]) -> str | None:
    """Decode one clip into its cache file; the problem as text, or None when it worked."""
    path, cache_file, target_sr, quality = task
    samples = _decode_task((path, target_sr, quality))
    if isinstance(samples, str):
        return samples
    _save_npy_atomic(Path(cache_file), samples)
    return None


class AudioCache:
    """Decoded 16 kHz mono clips, one .npy per clip under `cache_dir`."""

    def __init__(self, cache_dir: str | os.PathLike, target_sr: int = TARGET_SR,
                 quality: str = RESAMPLE_QUALITY):
        self.cache_dir = Path(cache_dir)
        self.target_sr = target_sr
        self.quality = quality

    def entry(self, path: str | os.PathLike) -> Path:
        """The cache file of `path`: changes with the file's size/mtime and the resampling settings."""
        stat = os.stat(path)
        key = json.dumps([os.path.abspath(path), stat.st_size, stat.st_mtime_ns, self.target_sr,
                          "soxr", self.quality, CACHE_VERSION])
        return self.cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"

    def ensure(self, paths: Sequence[str | os.PathLike], workers: int = 1) -> CacheReport:
        """Decode every clip not cached yet; DataError listing all bad files after the pass."""
        started = time.perf_counter()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        problems, todo = [], []
        for path in paths:
            try:
                entry = self.entry(path)
            except OSError as exc:
                problems.append(f"{path}: cannot read ({exc.strerror})")
                continue
            if not entry.is_file():
                todo.append((str(path), str(entry), self.target_sr, self.quality))
        problems += [p for p in _run_pool(_decode_to_cache, todo, workers, "decoding audio") if p]
        if problems:
            raise _problems_error(problems, len(paths), cached=True)
        seconds = time.perf_counter() - started
        rate = _report_throughput(len(todo), seconds, workers, "decoded") if todo else float("inf")
        return CacheReport(decoded=len(todo), cached=len(paths) - len(todo), seconds=seconds,
                           clips_per_s=rate)

    def load(self, path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
        """One clip's samples; decoded (and cached) now if it is not cached yet."""
        entry = self.entry(path)
        if not entry.is_file():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            _save_npy_atomic(entry, load_clip(path, self.target_sr, self.quality))
        return np.load(entry, mmap_mode="r" if mmap else None)

    def load_all(self, paths: Sequence[str | os.PathLike], workers: int = 1) -> list[np.ndarray]:
        self.ensure(paths, workers)
        return [self.load(path) for path in paths]
