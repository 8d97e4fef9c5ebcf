"""The EmoBox benchmark's ShEMO fold as a split: the public split a published SER score is comparable on.

EmoBox (Interspeech 2024; emo-box/EmoBox, MIT license) defines one ShEMO fold: 2,838 of the 3,000
clips, 2,131 train / 707 test, drawn at random (speakers appear on both sides). The package ships its
membership, labels and sample rates as `emobox_shemo_fold1.csv` (source and license in EMOBOX.md).
`split: emobox` trains on the fold's train part minus a validation part carved from it (stratified,
seeded by split_seed) and tests on the fold's test part, with the fold's labels. Clips the fold does
not list are left out of such a run (the run records how many).
"""
from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from hw5.data.shemo import EMOTIONS, DataError, ShemoClip
from hw5.data.splits import stratified_split
from hw5.io import sha256_file

PACKAGE_FOLD = Path(__file__).with_name("emobox_shemo_fold1.csv")
EMOBOX_LABELS = {"angry": "anger", "fearful": "fear", "happy": "happiness", "neutral": "neutral",
                 "sad": "sadness", "surprised": "surprise"}   # EmoBox's label names -> ours
VAL_FRACTION = 0.1   # share of the fold's train part held out for validation (model selection)


@dataclass(frozen=True)
class FoldEntry:
    part: str          # "train" or "test"
    emotion: str       # one of EMOTIONS
    sample_rate: int   # the release file's rate as EmoBox lists it


def read_fold(path: str | os.PathLike = PACKAGE_FOLD) -> dict[str, FoldEntry]:
    """{wav name: FoldEntry}; every malformed row is named in one error. Parsed once per process and file
    (a run reads it for its clips, its split and the synthetic corpus's rates); treat the result as read-only."""
    return _parsed_fold(str(Path(path).resolve()))


@functools.lru_cache(maxsize=4)
def _parsed_fold(path: str) -> dict[str, FoldEntry]:
    path = Path(path)
    fold, problems = {}, []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                problem = _row_problem(row)
                if problem:
                    problems.append(f"line {line}: {problem}")
                else:
                    fold[row["wav"]] = FoldEntry(row["part"], EMOBOX_LABELS[row["emobox_label"]],
                                                 int(row["sample_rate"]))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: the EmoBox fold cannot be read ({exc}); reinstall hw5") from None
    if problems or not fold:
        raise DataError(f"{path}: not the EmoBox fold ({len(problems)} bad row(s)"
                        + (f", e.g. {problems[0]}" if problems else ", no rows") + "); reinstall hw5")
    return fold


def _row_problem(row: dict) -> str:
    if row.get("part") not in ("train", "test"):
        return f"part {row.get('part')!r} (train or test)"
    if row.get("emobox_label") not in EMOBOX_LABELS:
        return f"label {row.get('emobox_label')!r} (one of {sorted(EMOBOX_LABELS)})"
    if not str(row.get("sample_rate", "")).isdigit():
        return f"sample_rate {row.get('sample_rate')!r} (an integer)"
    return ""


def fold_digest(path: str | os.PathLike = PACKAGE_FOLD) -> str:
    """Part of a run's data fingerprint: another fold file is other data."""
    return sha256_file(path)[:16]


def fold_clips(clips: Sequence[ShemoClip], fold: dict[str, FoldEntry]) -> list[ShemoClip]:
    """The clips the fold lists, labelled as the fold labels them."""
    return [replace(c, label=fold[c.name].emotion) for c in clips if c.name in fold]


def emobox_split(clips: Sequence[ShemoClip], fold: dict[str, FoldEntry], seed: int = 0,
                 val_fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays into `clips` (all of them in the fold): the fold's test part as
    test, its train part split stratified into train and val."""
    missing = [c.name for c in clips if c.name not in fold]
    if missing:
        raise DataError(f"emobox split: {len(missing)} clip(s) the fold does not list, e.g. {missing[0]}")
    parts = np.array([fold[c.name].part for c in clips])
    train_part = np.flatnonzero(parts == "train")
    if len(train_part) == 0 or not (parts == "test").any():
        raise DataError(f"emobox split: the corpus has {len(train_part)} clip(s) of the fold's train part and "
                        f"{int((parts == 'test').sum())} of its test part; it needs both")
    keep, val = stratified_split([EMOTIONS.index(clips[i].label) for i in train_part],
                                 (1 - val_fraction, val_fraction), seed=seed)
    return np.sort(train_part[keep]), np.sort(train_part[val]), np.flatnonzero(parts == "test")
