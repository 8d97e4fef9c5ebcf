"""`hw5 stats ser`: what the SER corpus holds: ser_stats.json (the source), its Markdown, CSVs and PNGs.

Counts per emotion, gender and speaker; the duration distribution (from WAV headers, no decoding);
the class imbalance in numbers. Every file is written under `out_dir` with the prefix `ser_`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import soundfile as sf

from hw5.config import SERConfig
from hw5.data.shemo import EMOTIONS, DataError, ShemoClip
from hw5.io import atomic_path
from hw5.statsdoc import section, write_stats

_MAX_LISTED = 20   # unreadable files shown in one error before "... and N more"


def durations_from_headers(paths: Iterable[str | os.PathLike]) -> list[float]:
    """Seconds per file from its header (soundfile.info); DataError listing every unreadable file."""
    return read_headers(paths)[0]


def read_headers(paths: Iterable[str | os.PathLike]) -> tuple[list[float], list[int]]:
    """(seconds, sample rates) per file from the headers; DataError listing every unreadable file."""
    durations, rates, problems = [], [], []
    for path in paths:
        try:
            info = sf.info(str(path))
            durations.append(info.duration)
            rates.append(info.samplerate)
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            problems.append(f"{path}: {getattr(exc, 'error_string', None) or exc}")
    if problems:
        shown = problems[:_MAX_LISTED] + ([f"... and {len(problems) - _MAX_LISTED} more"]
                                          if len(problems) > _MAX_LISTED else [])
        raise DataError(f"{len(problems)} audio header(s) unreadable:\n  " + "\n  ".join(shown)
                        + "\nReplace these files with the originals")
    return durations, rates


def clip_table(clips: Sequence[ShemoClip], durations: Sequence[float],
               rates: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per clip: name, gender, speaker, emotion (the training label), duration_s, sample_rate."""
    return pd.DataFrame({"name": [c.name for c in clips], "gender": [c.gender for c in clips],
                         "speaker": [c.speaker for c in clips], "emotion": [c.label for c in clips],
                         "duration_s": np.asarray(durations, dtype=float),
                         "sample_rate": np.asarray(rates if rates is not None else [0] * len(clips), dtype=int)})


def emotion_counts(table: pd.DataFrame) -> pd.DataFrame:
    counts = table["emotion"].value_counts().reindex(EMOTIONS, fill_value=0)
    return pd.DataFrame({"emotion": counts.index, "clips": counts.to_numpy(),
                         "share": (counts / counts.sum()).round(4).to_numpy(),
                         "hours": (table.groupby("emotion")["duration_s"].sum()
                                   .reindex(EMOTIONS, fill_value=0) / 3600).round(3).to_numpy()})


def gender_counts(table: pd.DataFrame) -> pd.DataFrame:
    grouped = table.groupby("gender").agg(clips=("name", "size"), speakers=("speaker", "nunique"),
                                          hours=("duration_s", "sum"))
    grouped["share"] = (grouped["clips"] / grouped["clips"].sum()).round(4)
    grouped["hours"] = (grouped["hours"] / 3600).round(3)
    return grouped.reset_index()


def speaker_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Clips per speaker and emotion; the tie between speaker and emotion shows here."""
    counts = pd.crosstab(table["speaker"], table["emotion"]).reindex(columns=EMOTIONS, fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts["top_emotion_share"] = (counts[list(EMOTIONS)].max(axis=1) / counts["total"]).round(3)
    return counts.sort_values("total", ascending=False).reset_index()


def duration_stats(table: pd.DataFrame) -> pd.DataFrame:
    """mean / median / p95 / max / total seconds, overall and per emotion."""
    groups = [("all", table["duration_s"])] + [(e, table.loc[table["emotion"] == e, "duration_s"])
                                               for e in EMOTIONS]
    rows = [{"group": name, "clips": len(d), "mean_s": d.mean(), "median_s": d.median(),
             "p95_s": d.quantile(0.95), "min_s": d.min(), "max_s": d.max(), "total_s": d.sum()}
            for name, d in groups if len(d)]
    return pd.DataFrame(rows).round(3)


def imbalance(emotions: pd.DataFrame) -> dict:
    present = emotions[emotions["clips"] > 0]
    major, minor = present.loc[present["clips"].idxmax()], present.loc[present["clips"].idxmin()]
    return {"majority": major["emotion"], "majority_clips": int(major["clips"]),
            "minority": minor["emotion"], "minority_clips": int(minor["clips"]),
            "ratio": round(float(major["clips"] / minor["clips"]), 2),
            "shares": dict(zip(emotions["emotion"], emotions["share"].astype(float))),
            "missing": [e for e, n in zip(emotions["emotion"], emotions["clips"]) if n == 0]}


def ser_stats(table: pd.DataFrame, out_dir: str | os.PathLike) -> dict:
    """Write ser_stats.json (the source) and its Markdown, one CSV per table and the plots under
    out_dir; returns the document's facts (JSON-able numbers)."""
    out_dir = Path(out_dir)
    tables = {"emotions": emotion_counts(table), "genders": gender_counts(table),
              "speakers": speaker_counts(table), "durations": duration_stats(table)}
    for name, frame in tables.items():
        with atomic_path(out_dir / f"ser_{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    facts = {"clips": len(table), "speakers": int(table["speaker"].nunique()),
             "hours": round(float(table["duration_s"].sum()) / 3600, 3),
             "imbalance": imbalance(tables["emotions"]),
             "durations_s": tables["durations"].iloc[0].drop(["group"]).to_dict(),
             "sample_rates": {int(r): int(n) for r, n in table["sample_rate"].value_counts().sort_index().items()
                              if r}}
    _plots(table, tables, out_dir)
    write_stats(out_dir, "ser", "SER corpus statistics", _intro(facts), [
        section("Emotions", table=tables["emotions"], figure="ser_emotions.png", caption="Clips per emotion"),
        section("Genders", table=tables["genders"]),
        section("Durations (seconds)", table=tables["durations"], figure="ser_durations.png",
                caption="Clip durations"),
        section("Speakers", table=tables["speakers"], figure="ser_speakers.png",
                caption="Clips per speaker and emotion",
                text="Clips per emotion; top_emotion_share = share of the speaker's most frequent emotion.")],
        facts=facts)
    return facts


def _intro(facts: dict) -> list[str]:
    gap = facts["imbalance"]
    shares = ", ".join(f"{e} {s:.1%}" for e, s in gap["shares"].items())
    rates = ", ".join(f"{n:,} clips at {r:,} Hz" for r, n in sorted(facts["sample_rates"].items(), reverse=True))
    return [f"{facts['clips']} clips, {facts['speakers']} speakers, {facts['hours']} h of audio.",
            f"Imbalance: the majority class ({gap['majority']}, {gap['majority_clips']} clips) is "
            f"{gap['ratio']}x the minority class ({gap['minority']}, {gap['minority_clips']} clips). "
            f"Shares: {shares}.",
            *([f"Sample rates: {rates}; every clip is resampled once to 16 kHz."] if rates else [])]


def _plots(table: pd.DataFrame, tables: dict[str, pd.DataFrame], out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emotions = tables["emotions"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(emotions["emotion"], emotions["clips"], color="tab:blue")
    ax.set(xlabel="emotion", ylabel="clips (count)", title="Clips per emotion")
    _save(fig, out_dir / "ser_emotions.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(table["duration_s"], bins=40, color="tab:green")
    ax.set(xlabel="duration (s)", ylabel="clips (count)", title="Clip durations")
    _save(fig, out_dir / "ser_durations.png")

    speakers = tables["speakers"].set_index("speaker")[list(EMOTIONS)]
    fig, ax = plt.subplots(figsize=(12, 3.2))
    image = ax.imshow(speakers.T.to_numpy(), aspect="auto", cmap="viridis")   # one artist: fast
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xticks(range(len(speakers)), speakers.index, rotation=90, fontsize=6)
    ax.set(xlabel="speaker (most clips first)", ylabel="emotion",
           title="Clips per speaker and emotion (the speaker-emotion tie)")
    fig.colorbar(image, ax=ax, label="clips (count)")
    _save(fig, out_dir / "ser_speakers.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def corpus_stats(cfg: SERConfig, data_dir: Path, out_dir: Path) -> list[Path]:
    """`hw5 stats ser`: the statistics of the corpus `cfg` (the SER baseline's) reads, from WAV headers."""
    from hw5.tasks.ser import load_clips
    clips = load_clips(cfg, data_dir)
    ser_stats(clip_table(clips, *read_headers(c.path for c in clips)), out_dir)
    return sorted(Path(out_dir).glob("ser_*"))
