"""The EmoBox ShEMO fold shipped with the package, and `split: emobox`."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from hw5.config import ConfigError, SERConfig, validate
from hw5.contract import data_fingerprint
from hw5.data.emobox import PACKAGE_FOLD, emobox_split, fold_clips, read_fold
from hw5.data.shemo import DataError, ShemoClip, parse_shemo_name, read_files_table


def all_clips() -> list[ShemoClip]:
    """The release's 3,000 names as clips labelled by their file names (no audio needed)."""
    return [ShemoClip(**vars(parse_shemo_name(r["wav"])), path="", label=r["emotion_filename"])
            for r in read_files_table()]


def test_the_fold_is_emoboxs_2131_train_707_test_with_file_name_labels():
    fold = read_fold()
    assert Counter(e.part for e in fold.values()) == {"train": 2131, "test": 707}
    by_name = {c.name: c for c in all_clips()}
    assert set(fold) <= set(by_name)                    # 2,838 of the release's names
    assert all(fold[n].emotion == by_name[n].label for n in fold)
    assert Counter(e.sample_rate for e in fold.values()) == {44100: 2717, 22050: 121}


def test_split_tests_on_the_fold_test_part_and_carves_val_from_its_train_part():
    clips = fold_clips(all_clips(), read_fold())
    assert len(clips) == 2838
    train, val, test = emobox_split(clips, read_fold(), seed=0)
    fold = read_fold()
    assert sorted(clips[i].name for i in test) == sorted(n for n, e in fold.items() if e.part == "test")
    assert not set(train) & set(val) and len(train) + len(val) == 2131
    labels = np.array([c.label for c in clips])
    for emotion in set(labels):   # val holds ~10% of each class of the train part, within one clip
        in_train_part = (labels[np.concatenate([train, val])] == emotion).sum()
        assert abs((labels[val] == emotion).sum() - 0.1 * in_train_part) <= 1
    again = emobox_split(clips, fold, seed=0)
    other = emobox_split(clips, fold, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(val, other[1]) and np.array_equal(test, other[2])


def test_clips_outside_the_fold_are_left_out_and_labels_come_from_it():
    clips = all_clips()
    fold = read_fold()
    outside = next(c for c in clips if c.name not in fold)
    relabelled = replace(clips[0], label="fear")          # a label the fold disagrees with
    kept = fold_clips([outside, relabelled], fold)
    assert [c.name for c in kept] == [relabelled.name] and kept[0].label == fold[relabelled.name].emotion
    with pytest.raises(DataError, match="does not list"):
        emobox_split([outside] + kept, fold)


def test_a_damaged_fold_file_is_one_error_naming_the_line(tmp_path):
    bad = tmp_path / "fold.csv"
    lines = PACKAGE_FOLD.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].replace("train", "dev")
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fold.csv: not the EmoBox fold \(1 bad row\(s\), e.g. line 6: part 'dev'"):
        read_fold(bad)


def test_emobox_needs_file_name_labels_and_enters_the_data_fingerprint(tmp_path):
    with pytest.raises(ConfigError, match="split: emobox labels the clips as the EmoBox fold"):
        validate(SERConfig(split="emobox", label_source="modified"))
    plain = data_fingerprint(SERConfig(corpus="synthetic", synthetic_clips=60), tmp_path)
    emobox = data_fingerprint(SERConfig(corpus="synthetic", synthetic_clips=60, split="emobox"), tmp_path)
    assert "fold" in emobox and emobox["digest"] != plain["digest"]
