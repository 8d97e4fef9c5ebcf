"""`hw5 bench --startup N`: the host-side start-up of one run, before its first training step.

What a job of the grid does before training, with full-size random-init models saved to a local folder
and loaded back (as from the hub cache): start Python and import the stack (a fresh process), then
- NLI: read + normalize FarsTail, tokenize every pair, load BERT-base (ParsBERT's 100k vocab);
- SER: list an N-clip ShEMO-format corpus, read its decoded 16 kHz audio from the cache, load
  HuBERT-base, read every clip's CNN features from the feature store (as every run after the first).
The caches are filled first (not timed). Not included: CUDA initialisation and the copy of weights and
features to the GPU, which only a GPU run shows. Wall seconds, this machine.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def startup_bench(data_dir: Path, n_clips: int) -> dict:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import hw5.run, hw5.tasks.nli, hw5.tasks.ser, transformers"], check=True)
    result = {"import_seconds": time.perf_counter() - started, "clips": n_clips}
    with tempfile.TemporaryDirectory(prefix="hw5-startup-") as tmp:
        result["nli_build_seconds"] = nli_startup(Path(tmp), data_dir)
        result.update(ser_startup(Path(tmp), n_clips))
    result["nli_run_seconds"] = result["import_seconds"] + result["nli_build_seconds"]
    result["ser_run_seconds"] = (result["import_seconds"] + result["ser_build_seconds"]
                                 + result["ser_features_seconds"])
    print(f"bench startup: import {result['import_seconds']:.1f}s; NLI data + model "
          f"{result['nli_build_seconds']:.1f}s; SER ({n_clips} clips) audio + model "
          f"{result['ser_build_seconds']:.1f}s, stored features {result['ser_features_seconds']:.1f}s", flush=True)
    return result


def nli_startup(tmp: Path, data_dir: Path) -> float:
    """Seconds of nli.build with a full-size BERT (random init) saved in `tmp`."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    from hw5.tasks import nli
    from hw5.config import resolve_config
    from hw5.data.farstail import load_farstail
    tiny = nli.model_path(resolve_config("nli-full", smoke=True), load_farstail(data_dir))
    folder = tmp / "bert"
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder)       # a WordPiece like ParsBERT's
    BertModel(BertConfig(vocab_size=100_000), add_pooling_layer=False).save_pretrained(folder)
    cfg = replace(resolve_config("nli-full"), model_name=str(folder))
    started = time.perf_counter()
    nli.build(cfg, 0, data_dir)
    return time.perf_counter() - started


def ser_startup(tmp: Path, n_clips: int) -> dict:
    """Seconds to list + read the decoded audio and load HuBERT-base, then to read the stored features."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor
    from hw5.config import resolve_config
    folder = tmp / "hubert"
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    HubertModel(HubertConfig()).save_pretrained(folder)
    cfg = replace(resolve_config("ser-mean"), model_name=str(folder))
    store = tmp / "features"
    _ser_data(cfg, n_clips, store, fill_store=True)           # decode into the cache, fill the store
    started = time.perf_counter()
    data = _ser_data(cfg, n_clips, store)
    built = time.perf_counter()
    data.prepare_features()
    return {"ser_build_seconds": built - started, "ser_features_seconds": time.perf_counter() - built,
            "ser_feature_megabytes": data.feature_stats["megabytes"],
            "ser_features_computed": data.feature_stats["computed"]}


def _ser_data(cfg, n_clips: int, store: Path, fill_store: bool = False):
    """ser.build's steps on a synthetic corpus with ShEMO-like durations (the study's is short clips)."""
    from hw5.tasks import ser
    from hw5.data.shemo import EMOTIONS, list_corpus
    from hw5.data.synthetic import generate_corpus
    from hw5.io import cache_dir
    from hw5.models.ser import build_ser_model, load_feature_extractor
    corpus = generate_corpus(cache_dir() / "synthetic" / f"shemo-{n_clips}-shemo-durations", n_clips=n_clips,
                             durations="shemo")
    clips = list_corpus(corpus)
    waves = ser.load_waves(clips, cfg, load_feature_extractor(cfg.model_name, cfg))
    model, _ = build_ser_model(cfg.model_name, cfg, len(EMOTIONS))
    data = ser.SERData(clips, waves, ser.split_indices(cfg, clips), cfg, 0, model, feature_dir=store)
    if fill_store:          # what the grid's first run leaves behind (random values, the real shapes)
        _fill_store(data, store)
    return data


def _fill_store(data, store: Path) -> None:
    from hw5.data.feature_store import FeatureStore, cnn_key
    cnn = data.model.encoder.feature_extractor
    target = FeatureStore(store, cnn_key(cnn, next(cnn.parameters()).device))
    dim, rng = data.model.encoder.config.conv_dim[-1], np.random.default_rng(0)
    for waves in data.waves.values():
        for wave in waves:
            frames = data.model.num_frames(len(wave))
            target.save(wave, rng.standard_normal((frames, dim), dtype=np.float32))
