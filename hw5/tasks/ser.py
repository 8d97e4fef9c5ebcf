"""The SER task: ShEMO (or its synthetic stand-in) decoded once to 16 kHz, split, batched, classified."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from hw5.config import LOCAL_MODELS, SERConfig, validate
from hw5.data import batching
from hw5.data.audio import AudioCache
from hw5.data.emobox import emobox_split, fold_clips, read_fold
from hw5.data.feature_store import FeatureStore, cnn_key
from hw5.data.shemo import EMOTIONS, MODIFIED_LABELS_NAME, ShemoClip, list_corpus
from hw5.data.splits import PART_NAMES, speaker_split, stratified_split
from hw5.data.synthetic import generate_corpus
from hw5.io import cache_dir, write_json_atomic
from hw5.models.ser import SERClassifier, build_ser_model, load_feature_extractor
from hw5.models.tiny import tiny_hubert
from hw5.reuse import reused
from hw5.train import Batch


def corpus_dir(cfg: SERConfig, data_dir: Path) -> Path:
    """Real ShEMO under the data dir, or the synthetic corpus (built once, in the cache, never in data/)."""
    if cfg.corpus == "shemo":
        return Path(data_dir) / "shemo"
    size = cfg.synthetic_clips or None
    return generate_corpus(cache_dir() / "synthetic" / f"shemo-{size or 'all'}-{cfg.synthetic_durations}",
                           n_clips=size, durations=cfg.synthetic_durations)


def model_path(cfg: SERConfig) -> str:
    """The hub id / directory to load; "tiny" / "random-base" build a tiny / HuBERT-base sized random HuBERT."""
    if cfg.model_name not in LOCAL_MODELS:
        return cfg.model_name
    return str(tiny_hubert(cache_dir() / "models", cfg.sample_rate, cfg.model_name))


def load_clips(cfg: SERConfig, data_dir: Path) -> list[ShemoClip]:
    folder = corpus_dir(cfg, data_dir)
    modified = Path(data_dir) / "shemo" / MODIFIED_LABELS_NAME if cfg.label_source == "modified" else None
    # the real release must be whole: a missing clip is an error naming it, never a smaller study
    clips = list_corpus(folder, cfg.label_source, modified_path=modified, expect_full=cfg.corpus == "shemo")
    return fold_clips(clips, read_fold()) if cfg.split == "emobox" else clips


def split_indices(cfg: SERConfig, clips: list[ShemoClip]) -> dict[str, np.ndarray]:
    labels = [c.label for c in clips]
    if cfg.split == "speaker":
        parts = speaker_split(labels, [c.speaker for c in clips], seed=cfg.split_seed)
    elif cfg.split == "emobox":
        parts = emobox_split(clips, read_fold(), seed=cfg.split_seed)
    else:
        parts = stratified_split(labels, seed=cfg.split_seed)
    return dict(zip(PART_NAMES, parts))


class SERData:
    """Normalized 16 kHz waveforms per split; implements the TaskData protocol of hw5.train.

    With cfg.feature_cache the batches hold the frozen CNN's features instead (`features`, `frame_mask`),
    computed once per clip, alone, on the model's device by prepare() (the run calls it once the model
    is there; the first collate would otherwise). Lengths, batches and units stay in samples either way, so both paths see the same
    batches and report the same audio seconds; a crop is drawn in samples as on the waveform path (same
    seed, epoch, clip) and taken from the frame its start falls in.
    """
    classes = list(EMOTIONS)
    unit = "audio_seconds"

    def __init__(self, clips, waves, parts, cfg: SERConfig, seed: int, model: SERClassifier | None = None,
                 feature_dir: Path | None = None):
        self.cfg, self.seed, self.sr, self.epoch = cfg, seed, cfg.sample_rate, 0
        self.clips = {name: [clips[i] for i in idx] for name, idx in parts.items()}
        self.waves = {name: [waves[i] for i in idx] for name, idx in parts.items()}
        self.labels = {name: torch.tensor([c.label_index for c in cs]) for name, cs in self.clips.items()}
        self.samples = {name: [len(w) for w in ws] for name, ws in self.waves.items()}   # whole clips
        crop = int(cfg.max_seconds * self.sr) if cfg.max_seconds else None
        self.lengths = {name: [min(n, crop or n) for n in ns] for name, ns in self.samples.items()}
        longest = max(max(ls) for ls in self.lengths.values())
        self.fixed_width = int(cfg.fixed_seconds * self.sr) if cfg.fixed_seconds else longest
        if cfg.feature_cache and model is None:
            raise ValueError("SERData: feature_cache needs the model whose CNN computes the features")
        self.model = model if cfg.feature_cache else None
        self.feature_dir = feature_dir     # FeatureStore root shared by runs; None = compute every run
        self.features: dict[str, list[torch.Tensor]] | None = None    # per split, per clip (frames, dim)
        self.feature_stats: dict | None = None

    def prepare(self) -> None:
        """The CNN features (feature_cache), once the model is on its device: their one-off cost stays out
        of the first epoch's seconds and throughput."""
        self.prepare_features()

    def train_batches(self, epoch: int) -> list[list[int]]:
        self.epoch = epoch           # crops of this epoch are drawn from (seed, epoch, clip)
        mode = "bucket" if self.cfg.batching == "bucket" else "dynamic"
        return batching.train_batches(self.lengths["train"], self.cfg.batch_size, mode, self.seed, epoch,
                                      budget=int(self.cfg.batch_budget * self.sr))

    def eval_batches(self, split: str) -> list[list[int]]:
        return batching.eval_batches(self.lengths[split], self.cfg.eval_batch_size, self.cfg.batching)

    def _crop(self, split: str, i: int, width: int) -> tuple[int, int]:
        """(start, length) in samples of the part of clip i that goes into a batch of `width`."""
        total = self.samples[split][i]
        limit = min(self.lengths[split][i], width)
        if total <= limit:
            return 0, total
        if split != "train":            # evaluation: the same centred window every time
            return (total - limit) // 2, limit
        return int(np.random.default_rng([self.seed, self.epoch, i]).integers(0, total - limit + 1)), limit

    def collate(self, indices: list[int], split: str) -> Batch:
        fixed = self.cfg.batching == "fixed"
        width = self.fixed_width if fixed else batching.round_width(
            max(self.lengths[split][i] for i in indices), int(self.cfg.width_step * self.sr))
        crops = [self._crop(split, i, width) for i in indices]
        make = self._features if self.model is not None else self._waves
        inputs = make(indices, split, crops, width)
        real = sum(length for _, length in crops) / self.sr
        return Batch(inputs, self.labels[split][indices], real, width * len(indices) / self.sr)

    def _waves(self, indices, split, crops, width) -> dict[str, torch.Tensor]:
        waves = self.waves[split]
        rows = [torch.from_numpy(waves[i][start:start + length]) for i, (start, length) in zip(indices, crops)]
        values, mask = batching.pad_rows(rows, width)
        return {"input_values": values, "attention_mask": mask}

    def _features(self, indices, split, crops, width) -> dict[str, torch.Tensor]:
        self.prepare_features()
        model, clips = self.model, self.features[split]
        rows = []
        for i, (start, length) in zip(indices, crops):
            frames = clips[i]
            n = frames.shape[0] if length == self.samples[split][i] else model.num_frames(length)
            first = min(start // model.hop, frames.shape[0] - n)    # the frame nearest the sample crop
            rows.append(frames[first:first + n])
        out, mask = batching.pad_rows(rows, model.num_frames(width))
        inputs = {"features": out, "frame_mask": mask}
        spans = model.draw_time_mask([len(r) for r in rows], out.shape[1]) if split == "train" else None
        if spans is not None:          # drawn with the batch, on the host: the step stays free of host work
            inputs["time_mask"] = spans
        return inputs

    def prepare_features(self) -> None:
        """The frozen CNN's features of every clip, computed alone (unpadded), kept on its device.

        Read from the shared FeatureStore when `feature_dir` is set (written there when missing), so
        only the grid's first SER run pays for the CNN. Called by prepare() (a run calls it before
        training) or else by the first collate. The waveforms are dropped afterwards."""
        if self.features is not None or self.model is None:
            return
        started = time.perf_counter()
        store = self._store()
        features = {split: [None] * len(waves) for split, waves in self.waves.items()}
        todo = [(split, i) for split, waves in self.waves.items() for i in range(len(waves))]
        # each process its own order: concurrent jobs compute different clips first and share them
        order = np.random.default_rng([os.getpid(), time.time_ns() % 2**32]).permutation(len(todo))
        computed = 0
        for done, k in enumerate(order, 1):
            split, i = todo[k]
            features[split][i], fresh = self._clip_features(self.waves[split][i], store)
            computed += fresh
            if done % 500 == 0:
                print(f"  CNN features: {done}/{len(todo)} clips ({computed} computed)", flush=True)
        self.features, self.waves = features, None
        self._feature_stats(started, computed, store)

    def _store(self) -> FeatureStore | None:
        if self.feature_dir is None:
            return None
        cnn = self.model.encoder.feature_extractor
        return FeatureStore(self.feature_dir, cnn_key(cnn, next(cnn.parameters()).device))

    def _clip_features(self, wave: np.ndarray, store: FeatureStore | None) -> tuple[torch.Tensor, bool]:
        """(features on the model's device, whether the CNN ran for them); once per packed job (hw5.reuse)."""
        model = self.model
        device = next(model.parameters()).device
        if store is None:
            return model.clip_features(torch.from_numpy(wave)), True
        computed = []

        def stored_or_computed() -> torch.Tensor:
            stored = store.load(wave, model.num_frames(len(wave)), model.encoder.config.conv_dim[-1])
            if stored is not None:
                return torch.from_numpy(stored).to(device)
            features = model.clip_features(torch.from_numpy(wave))
            store.save(wave, features.cpu().numpy())
            computed.append(True)
            return features
        features = reused("cnn-features", (str(store.entry(wave)), str(device)), stored_or_computed)
        return features, bool(computed)

    def _feature_stats(self, started: float, computed: int, store: FeatureStore | None) -> None:
        clips = [f for fs in self.features.values() for f in fs]
        self.feature_stats = {"clips": len(clips), "computed": computed, "loaded": len(clips) - computed,
                              "store": str(store.folder) if store else None,
                              "frames": sum(f.shape[0] for f in clips),
                              "megabytes": sum(f.numel() * f.element_size() for f in clips) / 2**20,
                              "seconds": time.perf_counter() - started, "device": str(clips[0].device)}
        stats = self.feature_stats
        print(f"CNN features of {len(clips)} clips ready in {stats['seconds']:.1f}s: {computed} computed, "
              f"{stats['loaded']} loaded from {stats['store'] or 'nowhere (no store)'} "
              f"({stats['megabytes']:.0f} MB on {stats['device']})", flush=True)


def load_waves(clips: list[ShemoClip], cfg: SERConfig, extractor) -> list[np.ndarray]:
    """Decoded once into the cache (16 kHz mono), then normalized as the feature extractor says (once
    per packed job: hw5.reuse; a run never writes into a waveform)."""
    paths = [str(c.path) for c in clips]
    normalize = bool(getattr(extractor, "do_normalize", False))

    def decode() -> list[np.ndarray]:
        waves = AudioCache(cache_dir() / "audio", target_sr=cfg.sample_rate).load_all(paths, workers=2)
        if normalize:
            waves = [((w - w.mean()) / np.sqrt(w.var() + 1e-7)).astype(np.float32) for w in waves]
        return [np.asarray(w, dtype=np.float32) for w in waves]
    return list(reused("waves", (tuple(paths), cfg.sample_rate, normalize, str(cache_dir())), decode))


def build(cfg: SERConfig, seed: int, data_dir: Path):
    """(model, data, variant record) for one SER run."""
    validate(cfg)                   # configs built in code get the experiments file's checks too
    clips = load_clips(cfg, data_dir)
    path = model_path(cfg)
    extractor = load_feature_extractor(path, cfg)
    parts = split_indices(cfg, clips)
    waves = load_waves(clips, cfg, extractor)
    model, variant = build_ser_model(path, cfg, len(EMOTIONS))
    data = SERData(clips, waves, parts, cfg, seed, model, feature_dir=cache_dir() / "features")
    variant.update(model_path=path, split=cfg.split, feature_cache=cfg.feature_cache,
                   split_sizes={name: len(idx) for name, idx in parts.items()},
                   corpus_clips=len(clips))
    return model, data, variant


def loss_weights(data: SERData, cfg: SERConfig) -> torch.Tensor | None:
    """Inverse-frequency class weights from the training split (mean weight 1); None = plain CE."""
    if not cfg.class_weights:
        return None
    counts = torch.bincount(data.labels["train"], minlength=len(EMOTIONS)).float()
    weights = torch.where(counts > 0, counts.sum() / (len(EMOTIONS) * counts.clamp(min=1)), torch.zeros(()))
    return weights


def extra_metrics(data: SERData, test: dict) -> dict:
    return {"class_weights": None if not data.cfg.class_weights else loss_weights(data, data.cfg).tolist(),
            "feature_cache": data.feature_stats}     # None on the waveform path


def write_artifacts(data: SERData, out_dir: Path) -> None:
    """The file lists of the split, saved with the run."""
    write_json_atomic(out_dir / "split.json", {name: [c.name for c in cs] for name, cs in data.clips.items()})
