"""Stratified and speaker-independent splits on ShEMO's real labels and speakers."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from hw5.data.shemo import EMOTIONS, DataError, read_files_table
from hw5.data.splits import (FRACTIONS, class_quotas, class_shares, save_split, speaker_split,
                             stratified_split)

ROWS = read_files_table()
LABELS = [r["emotion_filename"] for r in ROWS]
SPEAKERS = [r["speaker"] for r in ROWS]


def _check_partition(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and len(set(joined.tolist())) == n     # disjoint and complete


def test_stratified_split_keeps_each_class_share():
    parts = stratified_split(LABELS, FRACTIONS, seed=0)
    _check_partition(parts, len(LABELS))
    totals = Counter(LABELS)
    labels = np.asarray(LABELS)
    for part, fraction in zip(parts, FRACTIONS):
        counts = Counter(labels[part].tolist())
        for emotion in EMOTIONS:
            assert abs(counts[emotion] - fraction * totals[emotion]) < 1, (emotion, fraction)
    assert [len(p) for p in parts] == pytest.approx([2400, 300, 300], abs=3)


def test_split_seeds():
    first = stratified_split(LABELS, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, stratified_split(LABELS, seed=0)))
    assert not np.array_equal(first[2], stratified_split(LABELS, seed=1)[2])
    speakers = speaker_split(LABELS, SPEAKERS, seed=0, tries=3)
    assert all(np.array_equal(a, b)
               for a, b in zip(speakers, speaker_split(LABELS, SPEAKERS, seed=0, tries=3)))


def test_class_quotas_edge_cases():
    assert class_quotas(38, FRACTIONS) == [30, 4, 4]       # fear: in every part
    assert class_quotas(3, FRACTIONS) == [1, 1, 1]
    assert class_quotas(2, FRACTIONS) == [2, 0, 0]         # cannot fill three parts
    assert sum(class_quotas(1059, FRACTIONS)) == 1059
    with pytest.raises(DataError, match="fractions"):
        stratified_split(LABELS, (0.8, 0.3))


def test_speaker_split_is_speaker_independent_and_balanced():
    parts = speaker_split(LABELS, SPEAKERS, seed=0, tries=5)
    _check_partition(parts, len(LABELS))
    speakers = np.asarray(SPEAKERS)
    groups = [set(speakers[p].tolist()) for p in parts]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    shares = class_shares(LABELS, parts)
    for (part, by_class), fraction in zip(shares.items(), FRACTIONS):
        for emotion, cell in by_class.items():
            assert cell["count"] > 0, (part, emotion)                # every class everywhere
            # close to the target; fear (38 clips, 24 speakers) can only move in whole speakers
            assert abs(cell["share_of_class"] - fraction) < 0.06, (part, emotion, cell)
    random_parts = stratified_split(LABELS, seed=0)
    random_groups = [set(speakers[p].tolist()) for p in random_parts]
    assert random_groups[0] & random_groups[2]                       # the leak this split removes


def test_speaker_split_rejects_too_few_speakers():
    with pytest.raises(DataError, match="2 speaker"):
        speaker_split(["anger"] * 4, ["F01", "F01", "M01", "M01"])


def test_save_split(tmp_path):
    names = [r["wav"] for r in ROWS]
    parts = stratified_split(LABELS, seed=0)
    save_split(tmp_path / "run" / "split.json",
               **{part: [names[i] for i in idx] for part, idx in zip(("train", "val", "test"), parts)})
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert [len(saved[k]) for k in ("train", "val", "test")] == [len(p) for p in parts]
    assert list((tmp_path / "run").iterdir()) == [tmp_path / "run" / "split.json"]   # no temp file
    with pytest.raises(DataError, match="listed twice"):
        save_split(tmp_path / "bad.json", train=["F01A01.wav"], test=["F01A01.wav"])
