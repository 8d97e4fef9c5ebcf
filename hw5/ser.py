"""The SER task: ShEMO (or its synthetic stand-in) decoded once to 16 kHz, split, batched, classified."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hw5.config import SERConfig, resolve_config
from hw5.data import batching
from hw5.data.audio import AudioCache
from hw5.data.shemo import EMOTIONS, ShemoClip, list_corpus
from hw5.data.splits import PART_NAMES, speaker_split, stratified_split
from hw5.data.synthetic import generate_corpus
from hw5.io import cache_dir, write_json_atomic
from hw5.models.ser import build_ser_model, load_feature_extractor
from hw5.models.tiny import tiny_hubert
from hw5.train import Batch


def corpus_dir(cfg: SERConfig, data_dir: Path) -> Path:
    """Real ShEMO under the data dir, or the synthetic corpus (built once, in the cache, never in data/)."""
    if cfg.corpus == "shemo":
        return Path(data_dir) / "shemo"
    size = cfg.synthetic_clips or None
    return generate_corpus(cache_dir() / "synthetic" / f"shemo-{size or 'all'}", n_clips=size)


def model_path(cfg: SERConfig) -> str:
    return str(tiny_hubert(cache_dir() / "models", cfg.sample_rate)) if cfg.model_name == "tiny" else cfg.model_name


def load_clips(cfg: SERConfig, data_dir: Path) -> list[ShemoClip]:
    folder = corpus_dir(cfg, data_dir)
    modified = Path(data_dir) / "shemo" / "modified_shemo.json" if cfg.label_source == "modified" else None
    return list_corpus(folder, cfg.label_source, modified_path=modified)


def split_indices(cfg: SERConfig, clips: list[ShemoClip]) -> dict[str, np.ndarray]:
    labels = [c.label for c in clips]
    if cfg.split == "speaker":
        parts = speaker_split(labels, [c.speaker for c in clips], seed=cfg.split_seed)
    else:
        parts = stratified_split(labels, seed=cfg.split_seed)
    return dict(zip(PART_NAMES, parts))


class SERData:
    """Normalized 16 kHz waveforms per split; implements the TaskData protocol of hw5.train."""
    classes = list(EMOTIONS)
    unit = "audio_seconds"

    def __init__(self, clips, waves, parts, cfg: SERConfig, seed: int):
        self.cfg, self.seed, self.sr, self.epoch = cfg, seed, cfg.sample_rate, 0
        self.clips = {name: [clips[i] for i in idx] for name, idx in parts.items()}
        self.waves = {name: [waves[i] for i in idx] for name, idx in parts.items()}
        self.labels = {name: torch.tensor([c.label_index for c in cs]) for name, cs in self.clips.items()}
        crop = int(cfg.max_seconds * self.sr) if cfg.max_seconds else None
        self.lengths = {name: [min(len(w), crop or len(w)) for w in ws] for name, ws in self.waves.items()}
        longest = max(max(ls) for ls in self.lengths.values())
        self.fixed_width = int(cfg.fixed_seconds * self.sr) if cfg.fixed_seconds else longest

    def train_batches(self, epoch: int) -> list[list[int]]:
        self.epoch = epoch           # crops of this epoch are drawn from (seed, epoch, clip)
        mode = "bucket" if self.cfg.batching == "bucket" else "dynamic"
        return batching.train_batches(self.lengths["train"], self.cfg.batch_size, mode, self.seed, epoch)

    def eval_batches(self, split: str) -> list[list[int]]:
        return batching.eval_batches(self.lengths[split], self.cfg.eval_batch_size, self.cfg.batching)

    def _clip(self, split: str, i: int, width: int) -> np.ndarray:
        wave = self.waves[split][i]
        limit = min(self.lengths[split][i], width)
        if len(wave) <= limit:
            return wave
        if split != "train":            # evaluation: the same centred window every time
            start = (len(wave) - limit) // 2
        else:
            start = int(np.random.default_rng([self.seed, self.epoch, i]).integers(0, len(wave) - limit + 1))
        return wave[start:start + limit]

    def collate(self, indices: list[int], split: str) -> Batch:
        fixed = self.cfg.batching == "fixed"
        width = self.fixed_width if fixed else max(self.lengths[split][i] for i in indices)
        values = torch.zeros(len(indices), width)
        mask = torch.zeros(len(indices), width, dtype=torch.long)
        for row, i in enumerate(indices):
            wave = torch.from_numpy(np.ascontiguousarray(self._clip(split, i, width)))
            values[row, :len(wave)] = wave
            mask[row, :len(wave)] = 1
        real = float(mask.sum()) / self.sr
        return Batch({"input_values": values, "attention_mask": mask}, self.labels[split][indices],
                     real, width * len(indices) / self.sr)


def load_waves(clips: list[ShemoClip], cfg: SERConfig, extractor) -> list[np.ndarray]:
    """Decoded once into the cache (16 kHz mono), then normalized as the feature extractor says."""
    paths = [c.path for c in clips]
    cache = AudioCache(cache_dir() / "audio", target_sr=cfg.sample_rate)
    waves = cache.load_all(paths, workers=2)
    if getattr(extractor, "do_normalize", False):
        waves = [((w - w.mean()) / np.sqrt(w.var() + 1e-7)).astype(np.float32) for w in waves]
    return [np.asarray(w, dtype=np.float32) for w in waves]


def build(cfg: SERConfig, seed: int, data_dir: Path):
    """(model, data, variant record) for one SER run."""
    clips = load_clips(cfg, data_dir)
    path = model_path(cfg)
    extractor = load_feature_extractor(path, cfg)
    parts = split_indices(cfg, clips)
    data = SERData(clips, load_waves(clips, cfg, extractor), parts, cfg, seed)
    model, variant = build_ser_model(path, cfg, len(EMOTIONS))
    variant.update(model_path=path, split=cfg.split,
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
    return {"class_weights": None if not data.cfg.class_weights else loss_weights(data, data.cfg).tolist()}


def write_artifacts(data: SERData, out_dir: Path) -> None:
    """The file lists of the split, saved with the run."""
    write_json_atomic(out_dir / "split.json", {name: [c.name for c in cs] for name, cs in data.clips.items()})


def ser_stats_command(data_dir: Path, out_dir: Path, smoke: bool = False, config_path=None) -> list[Path]:
    """`hw5 stats ser`: corpus statistics from WAV headers (no decoding)."""
    from hw5.data.ser_stats import clip_table, durations_from_headers, ser_stats
    cfg = resolve_config("ser-mean", smoke, config_path)
    clips = load_clips(cfg, data_dir)
    ser_stats(clip_table(clips, durations_from_headers(c.path for c in clips)), out_dir)
    return sorted(Path(out_dir).glob("ser_*"))
