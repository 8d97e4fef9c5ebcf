"""Decoding real files (odd rates, stereo, 8-bit, float, broken ones) and the decoded-audio cache."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

import hw5.data.audio as audio
from hw5.data.audio import AudioCache, decode_all, load_clip
from hw5.data.shemo import DataError


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _peak_hz(samples: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.fixture
def good_files(tmp_path):
    """Usable audio in the shapes a corpus may hold; {name: (path, seconds)}."""
    tone = _tone(48000, 1.0)
    files = {"stereo48k.wav": (np.stack([tone, 0.5 * tone], axis=1), 48000, "PCM_16"),
             "u8_22k.wav": (_tone(22050, 0.5), 22050, "PCM_U8"),
             "float44k.wav": (_tone(44100, 0.25), 44100, "FLOAT"),
             "pcm16k.wav": (_tone(16000, 2.0), 16000, "PCM_16")}
    out = {}
    for name, (samples, rate, subtype) in files.items():
        sf.write(tmp_path / name, samples, rate, subtype=subtype)
        out[name] = (tmp_path / name, len(samples) / rate)
    return out


@pytest.fixture
def bad_files(tmp_path):
    """Files a pass must report, never crash on; {name: words the reason must contain}."""
    bad = tmp_path / "bad"
    bad.mkdir()
    sf.write(bad / "empty.wav", np.zeros(0, dtype=np.int16), 44100, subtype="PCM_16")
    (bad / "zero_bytes.wav").write_bytes(b"")
    (bad / "text.wav").write_text("this is not audio\n")
    sf.write(bad / "whole.wav", _tone(44100, 1.0), 44100, subtype="PCM_16")
    whole = (bad / "whole.wav").read_bytes()
    (bad / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    (bad / "whole.wav").unlink()
    nan = _tone(16000, 0.5)
    nan[100] = np.nan
    sf.write(bad / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(bad / "tiny.wav", _tone(44100, 0.005), 44100, subtype="PCM_16")
    return {bad / "empty.wav": "0 samples", bad / "zero_bytes.wav": "0 bytes",
            bad / "text.wav": "cannot decode", bad / "truncated.wav": "truncated",
            bad / "nan.wav": "NaN", bad / "tiny.wav": "shorter than"}


def test_load_clip_downmixes_and_resamples(good_files):
    for name, (path, seconds) in good_files.items():
        samples = load_clip(path)
        assert samples.dtype == np.float32 and samples.ndim == 1, name
        assert abs(len(samples) - seconds * 16000) <= 1, name
        assert _peak_hz(samples) == pytest.approx(440, abs=2 / seconds), name
    stereo = load_clip(good_files["stereo48k.wav"][0])
    assert np.abs(stereo[1000:-1000]).max() == pytest.approx(0.375, abs=0.01)   # mean of 0.5 and 0.25


def test_every_bad_file_is_reported_after_the_pass(good_files, bad_files):
    paths = [p for p, _ in good_files.values()] + list(bad_files)
    for workers in (1, 2):
        with pytest.raises(DataError) as info:
            decode_all(paths, workers=workers)
        message = str(info.value)
        assert f"{len(bad_files)} of {len(paths)} audio file(s)" in message
        for path, reason in bad_files.items():
            line = next(l for l in message.splitlines() if str(path) in l)
            assert reason in line, (line, reason)
        assert not any(str(p) in message for p, _ in good_files.values())


def test_decode_all_in_processes_matches_in_process(good_files):
    paths = [p for p, _ in good_files.values()]
    one, two = decode_all(paths, workers=1), decode_all(paths, workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_cache_decodes_once(good_files, tmp_path):
    paths = [p for p, _ in good_files.values()]
    cache = AudioCache(tmp_path / "cache")
    first = cache.ensure(paths, workers=1)
    assert (first.decoded, first.cached) == (len(paths), 0)
    decodes = audio.DECODE_COUNT
    second = cache.ensure(paths, workers=2)
    loaded = cache.load_all(paths)
    assert (second.decoded, second.cached) == (0, len(paths))
    assert audio.DECODE_COUNT == decodes                     # nothing decoded again
    assert all(np.array_equal(a, load_clip(p)) for a, p in zip(loaded, paths))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == len(paths)


def test_cache_key_follows_the_file_and_settings(good_files, tmp_path):
    path = good_files["pcm16k.wav"][0]
    cache = AudioCache(tmp_path / "cache")
    before = cache.entry(path)
    assert AudioCache(tmp_path / "cache", target_sr=8000).entry(path) != before
    assert AudioCache(tmp_path / "cache", quality="VHQ").entry(path) != before
    assert len(cache.load(path)) == 32000
    sf.write(path, _tone(16000, 1.0), 16000, subtype="PCM_16")       # the source changed
    os.utime(path, ns=(1, 1))
    assert cache.entry(path) != before
    assert cache.ensure([path]).decoded == 1 and len(cache.load(path, mmap=True)) == 16000


def test_cache_keeps_good_files_and_names_bad_ones(good_files, bad_files, tmp_path):
    cache = AudioCache(tmp_path / "cache")
    paths = [p for p, _ in good_files.values()] + list(bad_files) + [tmp_path / "gone.wav"]
    with pytest.raises(DataError) as info:
        cache.ensure(paths, workers=2)
    assert "gone.wav: cannot read" in str(info.value)
    assert "others are decoded and cached" in str(info.value)
    report = cache.ensure([p for p, _ in good_files.values()])
    assert (report.decoded, report.cached) == (0, len(good_files))
