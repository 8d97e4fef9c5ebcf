"""SER on cached CNN features (`feature_cache`): same training as the waveform path, padding
independent, the CNN run once per clip. Tiny HuBERT, synthetic ShEMO-format corpus of 60 clips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hw5.tasks import ser
from hw5.checkpoint import Checkpointer
from hw5.config import ConfigError, resolve_config
from hw5.run import run_experiment
from hw5.train import evaluate, fit

from conftest import fast_grid

CLIPS = 60                      # the synthetic corpus keeps >= 10 clips of each of the 6 emotions


def config(tmp_path, **overrides):
    grid = fast_grid(tmp_path, ser={"synthetic_clips": CLIPS, "epochs": 2, **overrides})
    return resolve_config("ser-mean", smoke=True, path=grid)


def build(tmp_path, **overrides):
    torch.manual_seed(0)
    return ser.build(config(tmp_path, **overrides), seed=0, data_dir=tmp_path)


@pytest.fixture(scope="module", autouse=True)
def _warm_caches(tmp_path_factory):
    """The tiny HuBERT and the synthetic corpus are made once per session, by whichever test comes
    first: make them here, in set-up, so that no test's own time carries them (the fast tier's limit)."""
    build(tmp_path_factory.mktemp("warm"))


def embeddings(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        if "features" in inputs:
            return model.embed_features(inputs["features"], inputs["frame_mask"])
        return model.embed(inputs["input_values"], inputs["attention_mask"])


@pytest.mark.slow
def test_cached_features_train_exactly_like_the_waveform_path(tmp_path):
    """One clip per step and per eval batch (no padding, where the paths may differ), dropout and
    SpecAugment on: same losses and metrics, so same model, same RNG stream, same batches."""
    runs = {}
    for cached in (False, True):
        (tmp_path / str(cached)).mkdir()
        grid = fast_grid(tmp_path / str(cached), ser={
            "synthetic_clips": CLIPS, "epochs": 2, "batch_size": 1, "eval_batch_size": 1,
            "mask_time_prob": 0.05, "head_dropout": 0.1, "feature_cache": cached})
        runs[cached] = run_experiment("ser-mean", 0, smoke=True, results_dir=tmp_path / str(cached),
                                      config_path=grid, checkpoint_dir=tmp_path / f"ckpt-{cached}")
    waves, feats = runs[False], runs[True]
    assert waves["feature_cache"] is None and feats["feature_cache"]["clips"] == CLIPS
    keys = ("train_loss", "train_acc", "val_loss", "val_macro_f1")
    for a, b in zip(waves["history"], feats["history"], strict=True):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
    assert feats["history"][0]["train_loss"] != feats["history"][1]["train_loss"]     # it trains
    assert feats["test"]["loss"] == pytest.approx(waves["test"]["loss"], rel=1e-4)
    assert feats["test"]["confusion_matrix"] == waves["test"]["confusion_matrix"]
    assert feats["throughput"]["padding_share"] == waves["throughput"]["padding_share"] == 0.0


@pytest.mark.parametrize("cached", [True, False])
def test_a_clip_padded_in_a_batch_is_embedded_as_alone_only_with_cached_features(tmp_path, cached):
    model, data, _ = build(tmp_path, feature_cache=cached)
    model.eval()
    order = np.argsort(data.lengths["val"])
    short, long = int(order[0]), int(order[-1])
    assert data.lengths["val"][long] > 1.5 * data.lengths["val"][short]
    alone = embeddings(model, data.collate([short], "val").inputs)
    padded = embeddings(model, data.collate([short, long], "val").inputs)[:1]
    gap = float((padded - alone).norm() / alone.norm())
    if cached:
        assert gap < 1e-5
    else:       # the group-norm CNN normalizes over the padded length: a documented difference
        assert gap > 1e-2


def test_the_cnn_runs_once_per_clip_not_once_per_step(tmp_path):
    model, data, _ = build(tmp_path, feature_cache=True, batch_size=8)
    data.feature_dir = tmp_path / "features"          # an empty store: this run computes every clip
    calls = []
    model.encoder.feature_extractor.register_forward_hook(lambda *_: calls.append(1))
    torch_rng, numpy_rng = torch.get_rng_state(), np.random.get_state()[1].copy()
    data.prepare_features()
    assert len(calls) == CLIPS
    assert torch.equal(torch.get_rng_state(), torch_rng)              # the run's RNG stream untouched
    assert np.array_equal(np.random.get_state()[1], numpy_rng)
    result = fit(model, data, data.cfg, Checkpointer(tmp_path / "ckpt", "test"), torch.device("cpu"))
    for split in ("val", "test"):
        evaluate(model, data, split, torch.device("cpu"), "fp32")
    assert len(result.history) == 2 and len(calls) == CLIPS


def test_training_crops_are_taken_in_frames_and_drawn_per_seed_epoch_and_clip(tmp_path):
    model, data, _ = build(tmp_path, feature_cache=True, max_seconds=1.0)
    longer = [i for i, n in enumerate(data.samples["train"]) if n > 1.5 * data.sr]
    assert longer, "the synthetic corpus should have clips over 1.5 s"
    i = longer[0]

    def crop(epoch: int) -> torch.Tensor:
        data.train_batches(epoch)          # the epoch whose crops collate draws
        return data.collate([i], "train").inputs["features"][0]
    first, again, other = crop(0), crop(0), crop(1)
    whole = data.features["train"][i]
    assert len(first) == model.num_frames(data.sr) < len(whole)               # 1 s worth of frames
    assert torch.equal(first, again) and not torch.equal(first, other)
    windows = [k for k in range(len(whole) - len(first) + 1) if torch.equal(whole[k:k + len(first)], first)]
    assert len(windows) == 1                                                  # a window of the clip


def test_feature_cache_with_a_training_cnn_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="freeze_feature_encoder: true"):
        ser.build(config(tmp_path, feature_cache=True, freeze_feature_encoder=False), 0, tmp_path)


def _cnn_calls(model) -> list:
    calls = []
    model.encoder.feature_extractor.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_a_second_run_loads_the_features_the_first_one_stored(tmp_path):
    """The store is shared by runs with the same CNN: the second computes nothing and gets the same
    numbers; a CNN with other weights gets its own entries."""
    store = tmp_path / "features"
    first_model, first, _ = build(tmp_path, feature_cache=True)
    second_model, second, _ = build(tmp_path, feature_cache=True)
    first.feature_dir = second.feature_dir = store
    first_calls, second_calls = _cnn_calls(first_model), _cnn_calls(second_model)
    first.prepare_features()
    second.prepare_features()
    assert len(first_calls) == CLIPS and first.feature_stats["computed"] == CLIPS
    assert len(second_calls) == 0 and second.feature_stats["loaded"] == CLIPS
    for split in ("train", "val", "test"):
        for a, b in zip(first.features[split], second.features[split], strict=True):
            assert torch.equal(a, b)
    other_model, other, _ = build(tmp_path, feature_cache=True)
    with torch.no_grad():
        other_model.encoder.feature_extractor.conv_layers[0].conv.weight.mul_(1.5)
    other.feature_dir, other_calls = store, _cnn_calls(other_model)
    other.prepare_features()
    assert len(other_calls) == CLIPS and len(list(store.iterdir())) == 2


def test_a_damaged_store_entry_is_computed_again_not_trusted(tmp_path):
    store = tmp_path / "features"
    model, data, _ = build(tmp_path, feature_cache=True)
    data.feature_dir = store
    data.prepare_features()
    good = {i: f.clone() for i, f in enumerate(data.features["val"])}
    entries = sorted(store.rglob("*.npy"))
    assert len(entries) == CLIPS
    entries[0].write_bytes(entries[0].read_bytes()[:40])                     # a write cut short
    np.save(entries[1], np.zeros((3, 3), dtype=np.float32))                  # the wrong shape
    model, again, _ = build(tmp_path, feature_cache=True)
    again.feature_dir, calls = store, _cnn_calls(model)
    again.prepare_features()
    assert len(calls) == 2 and again.feature_stats["computed"] == 2
    assert all(torch.equal(good[i], f) for i, f in enumerate(again.features["val"]))
    assert not list(store.rglob("*.tmp")) and len(list(store.rglob("*.npy"))) == CLIPS


@pytest.mark.slow
def test_a_run_on_stored_features_ends_with_the_same_metrics(tmp_path, monkeypatch):
    """The whole run: the first computes and stores the features, the second (forced) only loads them."""
    monkeypatch.setenv("HW5_CACHE_DIR", str(tmp_path / "cache"))       # an empty store
    grid = fast_grid(tmp_path, ser={"synthetic_clips": CLIPS, "epochs": 2, "feature_cache": True})
    runs = [run_experiment("ser-mean", 0, smoke=True, results_dir=tmp_path / "results", config_path=grid,
                           checkpoint_dir=tmp_path / f"ckpt-{k}", force=True) for k in range(2)]
    assert runs[0]["feature_cache"]["computed"] == CLIPS and runs[1]["feature_cache"]["loaded"] == CLIPS
    assert runs[1]["feature_cache"]["computed"] == 0
    assert runs[1]["history"][-1]["val_loss"] == runs[0]["history"][-1]["val_loss"]
    assert runs[1]["test"]["confusion_matrix"] == runs[0]["test"]["confusion_matrix"]
