"""A synthetic corpus in ShEMO's exact format whose six emotions are learnable from acoustics.

It keeps the release's file names, speakers, genders and label mix (from the packaged
shemo_files.csv) and writes `<out_dir>/{female,male}/*.wav`, 16-bit mono at each file's rate in the
release (44.1 kHz, or 22.05 kHz for the files the EmoBox fold lists at that rate), so every corpus
exercises resampling from both. Each clip is a
voiced source (a smooth glottal-like pulse train) with an emotion-specific pitch level and contour,
jitter, syllable rate, loudness and brightness, shaped by per-speaker formants (timbre) and a little
breath noise. Emotions differ on several cues at once so that a tiny model separates them; speakers
vary modestly around their gender's voice. Numpy + soxr only (the synthesis runs at 11.025 kHz,
where the FFT is cheap, and is upsampled to the file's rate).

    python -m hw5.data.synthetic OUT_DIR --clips 300
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from hw5.data.audio import progress
from hw5.data.shemo import EMOTIONS, PACKAGE_FILES_CSV, DataError, read_files_table
from hw5.io import share_like_umask

SAMPLE_RATE = 44100          # ShEMO's rate (most files; see file_rates)
SYNTH_RATE = 11025           # synthesis rate (content up to 5.5 kHz covers voice formants)
CONTROL_RATE = 200           # pitch and loudness contours are computed at this rate, then interpolated
GENERATOR_VERSION = 2        # bump when the sound changes, so cached corpora are rebuilt
MANIFEST = "synthetic_manifest.json"   # beside female/ and male/; its presence marks a finished corpus
MIN_PER_EMOTION = 10         # a subset keeps at least this many clips of every emotion (fear has 38)
# "short": 1-3 s (unit tests); "shemo": ShEMO's spread, ~4 s mean, 0.4-33 s (benchmarks); "smoke": the same
# spread at SMOKE_SCALE of the length (smoke runs: padding behaves as on ShEMO, at a fraction of the audio)
DURATIONS = ("short", "shemo", "smoke")
SMOKE_SCALE = 0.3


class Style(NamedTuple):
    """How an emotion sounds; pitch in semitones relative to the speaker's neutral voice."""
    pitch: float      # mean pitch offset (semitones)
    glide: float      # pitch change from start to end of the clip (semitones; + rising)
    swing: float      # depth of slow pitch undulation (fraction of f0)
    jitter: float     # fast random pitch perturbation (fraction of f0)
    rate: float       # syllables per second (amplitude bursts)
    level: float      # loudness of voiced parts (dBFS RMS)
    sharpness: float  # pulse sharpness: higher = more high harmonics (brighter, tenser voice)
    breath: float     # breath noise relative to the voice


EMOTION_STYLE = {   # each emotion differs from its neighbours on rate, brightness and loudness at once
    "anger":     Style(pitch=4.0, glide=-2.0, swing=0.03, jitter=0.01, rate=5.0, level=-9.0,
                       sharpness=10.0, breath=0.02),
    "fear":      Style(pitch=9.0, glide=0.0, swing=0.03, jitter=0.08, rate=9.0, level=-21.0,
                       sharpness=4.0, breath=0.35),
    "happiness": Style(pitch=6.0, glide=0.0, swing=0.18, jitter=0.01, rate=6.5, level=-15.0,
                       sharpness=5.5, breath=0.12),
    "neutral":   Style(pitch=0.0, glide=0.0, swing=0.02, jitter=0.005, rate=4.0, level=-18.0,
                       sharpness=3.5, breath=0.03),
    "sadness":   Style(pitch=-3.0, glide=-5.0, swing=0.02, jitter=0.01, rate=2.3, level=-27.0,
                       sharpness=1.5, breath=0.10),
    "surprise":  Style(pitch=3.0, glide=9.0, swing=0.04, jitter=0.01, rate=3.2, level=-12.0,
                       sharpness=7.0, breath=0.04),
}
VOICE_F0 = {"female": 210.0, "male": 120.0}      # typical speaking pitch (Hz)
FORMANTS = ((500.0, 90.0), (1500.0, 120.0), (2500.0, 160.0))   # neutral-vowel formants (Hz, bandwidth)


class Voice(NamedTuple):
    f0: float            # neutral pitch (Hz)
    formant_scale: float  # vocal-tract length: shorter (higher formants) for women
    level: float         # loudness offset (dB)


def speaker_voice(speaker: str, gender: str, seed: int) -> Voice:
    """A speaker's voice: modest variation around the gender's pitch and formants."""
    rng = np.random.default_rng([seed, zlib.crc32(speaker.encode()), 1])
    scale = 1.15 if gender == "female" else 1.0
    return Voice(f0=VOICE_F0[gender] * 2 ** (rng.normal(0, 1.0) / 12),
                 formant_scale=scale * (1 + rng.normal(0, 0.04)), level=rng.normal(0, 1.5))


def clip_seconds(rng: np.random.Generator, durations: str) -> float:
    if durations == "short":
        return float(rng.uniform(1.0, 3.0))
    seconds = float(np.clip(rng.lognormal(np.log(3.3), 0.6), 0.4, 33.0))   # mean ~4 s like ShEMO
    return seconds * SMOKE_SCALE if durations == "smoke" else seconds


def file_rates() -> dict[str, int]:
    """{wav name: sample rate} of the release files not at SAMPLE_RATE, as the EmoBox fold lists them."""
    from hw5.data.emobox import read_fold
    return {name: entry.sample_rate for name, entry in read_fold().items() if entry.sample_rate != SAMPLE_RATE}


def _contours(style: Style, voice: Voice, rng: np.random.Generator, seconds: float):
    """Pitch (Hz) and loudness envelope at CONTROL_RATE: level + glide + swing + jitter; syllables."""
    n = int(seconds * CONTROL_RATE) + 2
    times = np.arange(n) / CONTROL_RATE
    semitones = style.pitch + rng.normal(0, 0.7) + style.glide * (times / times[-1] - 0.5)
    swing = style.swing * np.sin(2 * np.pi * 2.5 * times + rng.uniform(0, 2 * np.pi))
    jitter = style.jitter * _smooth_noise(rng, n, 40.0)
    pitch = voice.f0 * 2 ** (semitones / 12) * (1 + swing + jitter)
    rate = style.rate * (1 + rng.normal(0, 0.06)) * (1 + 0.15 * _smooth_noise(rng, n, 3.0))
    bursts = 0.5 - 0.5 * np.cos(2 * np.pi * np.cumsum(rate) / CONTROL_RATE)
    fade = np.minimum(1.0, np.minimum(times, times[-1] - times) / 0.05)    # 50 ms in and out
    return times, pitch, bursts * fade


def _smooth_noise(rng: np.random.Generator, n: int, per_second: float) -> np.ndarray:
    """Unit-variance noise at CONTROL_RATE that changes `per_second` times a second."""
    knots = rng.standard_normal(int(n / CONTROL_RATE * per_second) + 2)
    return np.interp(np.linspace(0, len(knots) - 1, n), np.arange(len(knots)), knots)


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n."""
    best = 1 << (n - 1).bit_length()
    five = 1
    while five < best:
        odd = five
        while odd < best:
            best = min(best, odd << max(0, (-(-n // odd) - 1).bit_length()))
            odd *= 3
        five *= 5
    return best


def _spectral_shape(voice: Voice, n_fft: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(n_fft, 1 / SYNTH_RATE).astype(np.float32)
    shape = np.full(len(freqs), 0.15, dtype=np.float32)
    for centre, width in FORMANTS:
        shape += np.exp(np.float32(-0.5) * ((freqs - np.float32(centre * voice.formant_scale))
                                            / np.float32(width)) ** 2)
    shape[freqs < 70] = 0.0            # no rumble below the lowest voice pitch
    return shape


def synthesize(emotion: str, voice: Voice, rng: np.random.Generator, seconds: float,
               rate: int = SAMPLE_RATE) -> np.ndarray:
    """One clip at `rate` as int16."""
    style = EMOTION_STYLE[emotion]
    n = int(seconds * SYNTH_RATE)
    times, pitch, envelope = _contours(style, voice, rng, seconds)
    sample_times = np.arange(n) / SYNTH_RATE
    cycles = np.cumsum(np.interp(sample_times, times, pitch)) / SYNTH_RATE
    phase = (2 * np.pi * (cycles % 1.0)).astype(np.float32)      # wrapped: float32 stays exact
    source = np.exp(style.sharpness * (np.cos(phase) - 1))     # smooth pulse, band-limited enough
    source -= source.mean()
    source += np.float32(style.breath * source.std()) * rng.standard_normal(n, dtype=np.float32)
    n_fft = _fast_len(n)    # pocketfft is ~10x slower on lengths with large prime factors
    voiced = np.fft.irfft(np.fft.rfft(source, n_fft) * _spectral_shape(voice, n_fft), n_fft)[:n]
    voiced *= np.interp(sample_times, times, envelope).astype(np.float32)
    gain = 10 ** ((style.level + voice.level + rng.normal(0, 1.0)) / 20) / (voiced.std() + 1e-9)
    room = np.float32(1e-3) * rng.standard_normal(n, dtype=np.float32)   # faint noise, -60 dBFS
    audio = soxr.resample(voiced * np.float32(gain) + room, SYNTH_RATE, rate, quality="HQ")
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def _write_clip(task: tuple[dict, str, int, str, int]) -> float:
    """Synthesize and write one row's clip; returns its seconds (runs in worker processes)."""
    row, folder, seed, durations, rate = task
    rng = np.random.default_rng([seed, zlib.crc32(row["wav"].encode())])   # independent of the subset
    audio = synthesize(row["emotion_filename"], speaker_voice(row["speaker"], row["gender"], seed),
                       rng, clip_seconds(rng, durations), rate)
    sf.write(Path(folder) / row["gender"] / row["wav"], audio, rate, subtype="PCM_16")
    return len(audio) / rate


def select_rows(rows: list[dict], n_clips: int | None, seed: int) -> list[dict]:
    """All rows, or a subset stratified by emotion that spreads each emotion over many speakers."""
    if n_clips is None or n_clips == len(rows):
        return list(rows)
    if not len(EMOTIONS) <= n_clips <= len(rows):
        raise DataError(f"synthetic corpus: n_clips={n_clips}; use {len(EMOTIONS)}..{len(rows)} "
                        f"(or none for all {len(rows)})")
    rng = np.random.default_rng(seed)
    by_emotion = {e: [r for r in rows if r["emotion_filename"] == e] for e in EMOTIONS}
    quotas = _apportion({e: len(v) for e, v in by_emotion.items()}, n_clips)
    chosen = [row for e in EMOTIONS for row in _spread_over_speakers(by_emotion[e], quotas[e], rng)]
    return sorted(chosen, key=lambda r: r["wav"])


def _apportion(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Proportional quotas (largest remainder) after a floor of MIN_PER_EMOTION per class."""
    floor = {k: min(v, MIN_PER_EMOTION, total // len(sizes)) for k, v in sizes.items()}
    spare = {k: sizes[k] - floor[k] for k in sizes}
    left = total - sum(floor.values())
    exact = {k: left * spare[k] / sum(spare.values()) for k in sizes}
    quotas = {k: floor[k] + int(exact[k]) for k in sizes}
    by_remainder = sorted(sizes, key=lambda k: exact[k] - int(exact[k]), reverse=True)
    for k in by_remainder[: total - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def _spread_over_speakers(rows: list[dict], quota: int, rng: np.random.Generator) -> list[dict]:
    """Round-robin over the speakers (shuffled) so a subset keeps as many speakers as it can."""
    speakers: dict[str, list[dict]] = {}
    for row in rows:
        speakers.setdefault(row["speaker"], []).append(row)
    queues = [list(rng.permutation(v)) for _, v in sorted(speakers.items())]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    picked: list[dict] = []
    while len(picked) < quota:
        for queue in queues:
            if queue and len(picked) < quota:
                picked.append(queue.pop())
    return picked


def generate_corpus(out_dir: str | os.PathLike, n_clips: int | None = None, seed: int = 0,
                    files_csv: str | os.PathLike = PACKAGE_FILES_CSV, durations: str = "short",
                    workers: int | None = None) -> Path:
    """Write (or reuse) a ShEMO-format synthetic corpus at `out_dir`; returns out_dir.

    n_clips: None = all 3,000 names; fewer = stratified subset. durations: see DURATIONS.
    workers: processes (None = 1 for small corpora, else up to the CPU count). Same settings ->
    same bytes; a finished corpus with the same settings is reused as is.
    """
    if durations not in DURATIONS:
        raise DataError(f"synthetic corpus: durations '{durations}'; use one of {DURATIONS}")
    out_dir = Path(out_dir)
    rows = select_rows(read_files_table(files_csv), n_clips, seed)
    settings = _settings(rows, seed, durations)
    if _manifest_settings(out_dir) == settings:
        return out_dir
    if out_dir.exists() and _manifest_settings(out_dir) is None and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: exists and is not a synthetic corpus (no {MANIFEST}); "
                        f"choose an empty or new folder (never the real data directory)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        seconds = _write_all(rows, staging, seed, durations, workers)
        manifest = {**settings, "clips": [r["wav"] for r in rows], "audio_seconds": round(seconds, 2)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        _install(staging, out_dir, settings)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_all(rows: list[dict], folder: Path, seed: int, durations: str, workers: int | None) -> float:
    for gender in ("female", "male"):
        (folder / gender).mkdir()
    workers = workers or (1 if len(rows) < 600 else min(4, os.cpu_count() or 1))
    rates = file_rates()
    tasks = [(row, str(folder), seed, durations, rates.get(row["wav"], SAMPLE_RATE)) for row in rows]
    started = time.perf_counter()
    if workers == 1:
        seconds = sum(progress(map(_write_clip, tasks), len(tasks), "synthesizing"))
    else:
        with ProcessPoolExecutor(workers) as pool:
            seconds = sum(progress(pool.map(_write_clip, tasks, chunksize=16), len(tasks),
                                   "synthesizing"))
    print(f"synthetic corpus: {len(rows)} clips ({seconds / 60:.1f} min of audio) in "
          f"{time.perf_counter() - started:.1f} s with {workers} process(es)", file=sys.stderr)
    return seconds


def _install(staging: Path, out_dir: Path, settings: dict) -> None:
    """Swap the finished tree in; if a concurrent run already installed the same corpus, keep it."""
    if _manifest_settings(out_dir) == settings:
        return
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "corpus")
    try:
        share_like_umask(staging, recursive=True)
        os.replace(staging, out_dir)
    except OSError:                  # another process installed a tree in between
        if _manifest_settings(out_dir) != settings:
            raise DataError(f"{out_dir}: another process wrote a different corpus here meanwhile; "
                            f"run again") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def corpus_settings(n_clips: int | None = None, seed: int = 0, durations: str = "short",
                    files_csv: str | os.PathLike = PACKAGE_FILES_CSV) -> dict:
    """What identifies a generated corpus (same settings, same bytes): its data fingerprint."""
    return _settings(select_rows(read_files_table(files_csv), n_clips, seed), seed, durations)


def _settings(rows: list[dict], seed: int, durations: str) -> dict:
    return {"generator": GENERATOR_VERSION, "n_clips": len(rows), "seed": seed,
            "durations": durations, "files": _digest(r["wav"] for r in rows)}


def _manifest_settings(out_dir: Path) -> dict | None:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {k: manifest.get(k) for k in ("generator", "n_clips", "seed", "durations", "files")}


def _digest(names) -> str:
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw5.data.synthetic",
                                     description="Write a synthetic ShEMO-format corpus "
                                                 "(female/*.wav, male/*.wav, 16-bit at the release's rates).")
    parser.add_argument("out_dir", help="folder to create (never the real data directory)")
    parser.add_argument("--clips", type=int, default=None, help="number of clips (default: all 3,000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same bytes)")
    parser.add_argument("--durations", choices=DURATIONS, default="short",
                        help="short: 1-3 s clips; shemo: ~4 s mean, 0.4-33 s like the real corpus; "
                             f"smoke: that spread at {SMOKE_SCALE:g} of the length")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: automatic)")
    args = parser.parse_args(argv)
    try:
        path = generate_corpus(args.out_dir, args.clips, args.seed, durations=args.durations,
                               workers=args.workers)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
