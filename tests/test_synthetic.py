"""The synthetic ShEMO-format corpus (format, determinism, cache, learnability) and `hw5 stats ser`."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hw5.stats.ser import clip_table, durations_from_headers, read_headers, ser_stats
from hw5.statsdoc import read_stats
from hw5.data.shemo import EMOTIONS, DataError, list_corpus, read_files_table, release_names
from hw5.data.audio import AudioCache
from hw5.data.synthetic import (MANIFEST, MIN_PER_EMOTION, SMOKE_SCALE, clip_seconds, file_rates,
                                generate_corpus, main, select_rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_corpus(tmp_path_factory.mktemp("syn") / "shemo", n_clips=60, seed=3)


def test_corpus_is_in_shemo_format(corpus):
    clips = list_corpus(corpus, expect_full=False)        # parses names, checks folders
    assert len(clips) == 60
    assert {c.name for c in clips} <= set(release_names())
    assert {c.label for c in clips} == set(EMOTIONS)
    rates = file_rates()
    for clip in clips[:10]:
        info = sf.info(clip.path)
        assert (info.channels, info.subtype, info.format) == (1, "PCM_16", "WAV")
        assert info.samplerate == rates.get(clip.name, 44100)
        assert 1.0 <= info.duration <= 3.01
    assert json.loads((corpus / MANIFEST).read_text())["n_clips"] == 60


def test_same_seed_same_bytes_and_cache_reuse(corpus, tmp_path):
    again = generate_corpus(tmp_path / "again", n_clips=60, seed=3)
    names = sorted(p.relative_to(corpus) for p in corpus.glob("*/*.wav"))
    assert names == sorted(p.relative_to(again) for p in again.glob("*/*.wav"))
    assert all((corpus / n).read_bytes() == (again / n).read_bytes() for n in names)
    stamp = (again / MANIFEST).stat().st_mtime_ns
    generate_corpus(again, n_clips=60, seed=3)               # same settings: nothing rewritten
    assert (again / MANIFEST).stat().st_mtime_ns == stamp
    generate_corpus(again, n_clips=24, seed=3)               # other settings: replaced whole
    assert len(list(again.glob("*/*.wav"))) == 24
    assert not list(tmp_path.glob(".again.*"))               # no staging or old trees left


def test_other_seed_other_audio(corpus, tmp_path):
    other = generate_corpus(tmp_path / "other", n_clips=60, seed=4)
    shared = {p.name for p in corpus.glob("*/*.wav")} & {p.name for p in other.glob("*/*.wav")}
    assert shared, "both subsets should share some names"
    name = sorted(shared)[0]
    folder = "female" if name.startswith("F") else "male"
    assert (corpus / folder / name).read_bytes() != (other / folder / name).read_bytes()


def test_refuses_to_write_over_a_foreign_folder(tmp_path):
    (tmp_path / "real" / "female").mkdir(parents=True)
    with pytest.raises(DataError, match="not a synthetic corpus"):
        generate_corpus(tmp_path / "real", n_clips=12)
    with pytest.raises(DataError, match="n_clips=3"):
        generate_corpus(tmp_path / "small", n_clips=3)


def test_subset_keeps_every_emotion_and_many_speakers():
    rows = read_files_table()
    chosen = select_rows(rows, 300, seed=0)
    assert len(chosen) == 300 and len({r["wav"] for r in chosen}) == 300
    counts = Counter(r["emotion_filename"] for r in chosen)
    assert min(counts.values()) >= MIN_PER_EMOTION
    full = Counter(r["emotion_filename"] for r in rows)
    by_size = sorted(EMOTIONS, key=lambda e: full[e])
    assert [counts[e] for e in by_size] == sorted(counts[e] for e in by_size)   # order kept
    assert len({r["speaker"] for r in chosen}) >= 60
    assert select_rows(rows, 300, seed=0) == chosen
    assert select_rows(rows, 300, seed=1) != chosen


def test_shemo_like_durations():
    rng = np.random.default_rng(0)
    seconds = np.array([clip_seconds(rng, "shemo") for _ in range(3000)])
    assert 3.5 < seconds.mean() < 4.6 and seconds.min() >= 0.4 and seconds.max() <= 33.0


def test_smoke_durations_are_shemos_spread_scaled_down():
    shemo = np.array([clip_seconds(np.random.default_rng(i), "shemo") for i in range(2000)])
    smoke = np.array([clip_seconds(np.random.default_rng(i), "smoke") for i in range(2000)])
    assert np.allclose(smoke, shemo * SMOKE_SCALE)
    # the spread is what makes padding matter: the longest clip is many times the mean
    assert smoke.max() / smoke.mean() > 5 and 1.0 < smoke.mean() < 1.4


def test_files_come_at_the_release_rates_and_decode_to_16k(tmp_path):
    """ShEMO has 121 files at 22,050 Hz (the rest 44,100): the synthetic corpus writes them at that
    rate too, so every run resamples from both."""
    rates = file_rates()
    assert len(rates) == 121 and set(rates.values()) == {22050}
    rows = read_files_table()
    low = [r for r in rows if r["wav"] in rates][:3]
    table = tmp_path / "files.csv"
    pd.DataFrame(low + [r for r in rows if r["wav"] not in rates][:9]).to_csv(table, index=False)
    corpus = generate_corpus(tmp_path / "rates", files_csv=table)
    clips = list_corpus(corpus)
    assert Counter(sf.info(c.path).samplerate for c in clips) == {22050: 3, 44100: 9}
    waves = AudioCache(tmp_path / "cache", target_sr=16000).load_all([c.path for c in clips], workers=1)
    for clip, wave in zip(clips, waves):
        assert abs(len(wave) - sf.info(clip.path).duration * 16000) <= 2


def _acoustic_features(path) -> np.ndarray:
    """Loudness, its rhythm, and a coarse spectrum: what a small model can pick up."""
    audio, rate = sf.read(path, dtype="float32")
    audio = soxr.resample(audio, rate, 44100)       # some files are 22,050 Hz: compare them at one rate
    energy = np.log10((audio[: len(audio) // 441 * 441].reshape(-1, 441) ** 2).mean(axis=1) + 1e-8)
    spectrum = np.abs(np.fft.rfft(audio, 1 << 15))
    bands = np.log10(np.add.reduceat(spectrum, np.geomspace(8, 1 << 14, 9).astype(int)) + 1e-8)
    rhythm = np.abs(np.fft.rfft(energy - energy.mean(), 256))[2:30]
    return np.concatenate([[energy.mean(), energy.std(), np.percentile(energy, 90)], bands,
                           np.log(rhythm + 1e-6)])


def test_emotions_are_learnable_from_acoustics(tmp_path):
    clips = list_corpus(generate_corpus(tmp_path / "learn", n_clips=120, seed=1))
    features = np.stack([_acoustic_features(c.path) for c in clips])
    labels = np.array([c.label_index for c in clips])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    accuracy = cross_val_score(model, features, labels, cv=3).mean()
    majority = np.bincount(labels).max() / len(labels)
    assert accuracy >= 0.8 > majority + 0.3, (accuracy, majority)


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--clips" in capsys.readouterr().out
    assert main([str(tmp_path / "cli"), "--clips", "12", "--seed", "2"]) == 0
    assert len(list((tmp_path / "cli").glob("*/*.wav"))) == 12
    assert main([str(tmp_path / "cli2"), "--clips", "2"]) == 2
    assert "n_clips=2" in capsys.readouterr().err


def test_ser_stats_tables_plots_and_imbalance(corpus, tmp_path):
    clips = list_corpus(corpus)
    durations = durations_from_headers(c.path for c in clips)
    expected = [sf.info(c.path).frames / sf.info(c.path).samplerate for c in clips]   # 44.1 or 22.05 kHz
    assert durations == pytest.approx(expected)
    summary = ser_stats(clip_table(clips, *read_headers(c.path for c in clips)), tmp_path / "stats")
    rates = Counter(sf.info(c.path).samplerate for c in clips)
    assert summary["sample_rates"] == dict(rates) and sum(rates.values()) == len(clips)
    assert "Sample rates: " in (tmp_path / "stats" / "ser_stats.md").read_text()
    counts = Counter(c.label for c in clips)
    assert summary["imbalance"]["ratio"] == pytest.approx(max(counts.values()) / min(counts.values()),
                                                           abs=0.01)
    assert summary["durations_s"]["mean_s"] == pytest.approx(np.mean(durations), abs=1e-3)
    emotions = pd.read_csv(tmp_path / "stats" / "ser_emotions.csv")
    assert dict(zip(emotions["emotion"], emotions["clips"])) == {e: counts[e] for e in EMOTIONS}
    speakers = pd.read_csv(tmp_path / "stats" / "ser_speakers.csv")
    assert speakers["total"].sum() == 60 and len(speakers) == len({c.speaker for c in clips})
    report = (tmp_path / "stats" / "ser_stats.md").read_text()
    assert f"{summary['imbalance']['ratio']}x" in report and "| emotion |" in report
    assert read_stats(tmp_path / "stats" / "ser_stats.json")["facts"] == json.loads(json.dumps(summary))
    for name in ("ser_emotions.png", "ser_durations.png", "ser_speakers.png"):
        assert (tmp_path / "stats" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(p.name.startswith("ser_") for p in (tmp_path / "stats").iterdir())


def test_durations_from_headers_lists_unreadable_files(tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(DataError, match="1 audio header") as info:
        durations_from_headers([tmp_path / "bad.wav"])
    assert "bad.wav" in str(info.value)
