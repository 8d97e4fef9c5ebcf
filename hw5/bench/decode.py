"""`hw5 bench --decode N`: decode + resample throughput on a synthetic ShEMO-format corpus.

N clips with ShEMO-like durations (mean ~4 s, 44.1 kHz 16-bit WAV, made once and cached) are decoded
and resampled to 16 kHz by one process per CPU: once into memory (decode + resample alone), once into a
fresh audio cache (+ one .npy write per clip), then read again the way the next run does: that second
pass must decode nothing.
"""
from __future__ import annotations

import os
import tempfile
import time

from hw5.data.audio import AudioCache, decode_all
from hw5.data.shemo import list_corpus
from hw5.data.synthetic import generate_corpus
from hw5.io import cache_dir


def decode_bench(n_clips: int, workers: int | None = None) -> dict:
    workers = workers or len(os.sched_getaffinity(0))
    corpus = generate_corpus(cache_dir() / "synthetic" / f"shemo-{n_clips}-shemo-durations", n_clips=n_clips,
                             durations="shemo")
    paths = [clip.path for clip in list_corpus(corpus)]
    started = time.perf_counter()
    decode_all(paths, workers)                       # decode + resample only, into memory
    decode_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="hw5-decode-bench-") as tmp:
        cache = AudioCache(tmp)
        first = cache.ensure(paths, workers)
        second = cache.ensure(paths, workers)
        audio_seconds = sum(len(cache.load(p, mmap=True)) for p in paths) / cache.target_sr
    result = {"clips": len(paths), "workers": workers, "audio_seconds": audio_seconds,
              "decode_seconds": decode_seconds, "decode_clips_per_s": len(paths) / decode_seconds,
              "first_pass_seconds": first.seconds, "first_pass_clips_per_s": first.clips_per_s,
              "first_pass_audio_s_per_s": audio_seconds / first.seconds,
              "second_pass_decoded": second.decoded, "second_pass_seconds": second.seconds}
    print(f"bench decode: {len(paths)} clips ({audio_seconds / 3600:.2f} h of audio), {workers} process(es): "
          f"decode + resample {result['decode_clips_per_s']:.0f} clips/s; with the cache writes "
          f"{first.clips_per_s:.0f} clips/s; second pass decoded {second.decoded} in {second.seconds:.2f} s",
          flush=True)
    return result
