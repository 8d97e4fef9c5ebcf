"""What `hw5 bench` times: one NLI and one SER workload (lengths, batch builders, a random-init model).

Tiny configs on CPU, full-size ones (BERT-base with ParsBERT's 100k vocab, HuBERT-base) on a GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hw5.data import batching
from hw5.models.attention import use_project_attention
from hw5.models.tiny import TINY_BERT, TINY_HUBERT

SR = 16000
NOTEBOOK_MAX_TOKENS = 512    # a notebook's padding="max_length": the tokenizer's model_max_length
NLI_MAX_LENGTH = 128         # the study's max_length (jobs/experiments.yaml)
SER_MAX_SECONDS = 15.0       # the study's crop of the few very long clips


@dataclass
class Workload:
    task: str
    unit: str
    lengths: list[int]              # real length per example as the project trains it (tokens / samples)
    make_batch: Callable            # (indices, padded width) -> model inputs (token ids / waveforms)
    model: torch.nn.Module
    batch_size: int                 # examples per step (project and ceiling)
    per_unit: float                 # samples -> seconds for SER, 1 for tokens
    naive_width: int                # the naive path pads every example to this
    naive_batch: int                # ... and takes this many per step
    naive_lengths: list[int] | None = None   # real lengths on the naive path when it truncates less
    budget: int = 0                 # >0: project batches hold this many padded units
    fast_batch: Callable | None = None       # project-path inputs (SER: cached CNN features)
    width_step: int = 0             # project+graphs: padded widths rounded up to this (tokens / samples)
    prepare: Callable[[], float] | None = None   # one-off work of the project path -> seconds


def nli_workload(device: torch.device, full: bool, n: int, lengths: list[int] | None = None) -> Workload:
    """FarsTail-like pairs. The naive path pads to 512 as `padding="max_length"` does (the issue's
    8.4k tokens/s anchor; tiny: to the longest pair); the project truncates at the study's 128 (~3% of
    pairs are longer)."""
    from transformers import BertConfig, BertModel
    from hw5.models.nli import NLIClassifier
    cfg = BertConfig(vocab_size=100_000) if full else BertConfig(**TINY_BERT)   # ParsBERT-size vocab
    rng = np.random.default_rng(0)
    if lengths is None:          # FarsTail-like pair lengths (mean ~75, p99 ~146, max ~194)
        lengths = np.clip(rng.lognormal(np.log(72), 0.3, n), 12, 200).astype(int).tolist()
    full_lengths = [min(x, NOTEBOOK_MAX_TOKENS) for x in lengths[:n]]
    ids = [rng.integers(5, cfg.vocab_size, size=length) for length in full_lengths]

    def make_batch(indices: list[int], width: int) -> dict:
        # pad_2d crops rows to `width`: truncation at max_length, or the ceiling's one shape
        x = batching.pad_2d([ids[i] for i in indices], width)
        mask = batching.pad_2d([[1] * full_lengths[i] for i in indices], width)
        return {"input_ids": x, "attention_mask": mask, "token_type_ids": torch.zeros_like(x)}
    torch.manual_seed(0)
    model = NLIClassifier(use_project_attention(BertModel(cfg, add_pooling_layer=False)), 3, 0.1).to(device)
    # tiny models on CPU pad to the dataset's longest pair instead: 512 costs minutes there
    naive_width = NOTEBOOK_MAX_TOKENS if full else max(full_lengths)
    return Workload("nli", "tokens", [min(x, NLI_MAX_LENGTH) for x in full_lengths], make_batch, model,
                    32, 1.0, naive_width=naive_width, naive_batch=16, naive_lengths=full_lengths,
                    width_step=16)


def ser_workload(device: torch.device, full: bool, n: int, max_seconds: float = SER_MAX_SECONDS) -> Workload:
    """ShEMO-like durations (mean ~4 s, crop 15 s). Project: length-bucketed batches filled to the
    audio of 16 mean clips, on CNN features computed once per clip (the CNN is frozen)."""
    from transformers import HubertConfig, HubertModel
    from hw5.data.synthetic import clip_seconds
    from hw5.models.ser import SERClassifier, fast_positional_conv, freeze_feature_encoder
    rng = np.random.default_rng(0)
    lengths = [int(min(clip_seconds(rng, "shemo"), max_seconds) * SR) for _ in range(n)]
    waves = [rng.standard_normal(length).astype(np.float32) for length in lengths]

    def make_batch(indices: list[int], width: int) -> dict:
        x, mask = batching.pad_rows([torch.from_numpy(waves[i][:width]) for i in indices], width)
        return {"input_values": x, "attention_mask": mask}
    cfg = HubertConfig() if full else HubertConfig(**TINY_HUBERT)
    torch.manual_seed(0)
    encoder = use_project_attention(HubertModel(cfg))
    freeze_feature_encoder(encoder)
    fast_positional_conv(encoder)
    model = SERClassifier(encoder, "mean", 6, 0.1).to(device)
    features: list[torch.Tensor] = []

    def prepare() -> float:                  # the frozen CNN once per clip, unpadded (once per bench)
        if features:
            return 0.0
        started = time.perf_counter()
        features[:] = [model.clip_features(torch.from_numpy(w)) for w in waves]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    def feature_batch(indices: list[int], width: int) -> dict:
        frames = model.num_frames(width)
        rows = [features[i][:frames] for i in indices]
        x, mask = batching.pad_rows(rows, frames)
        spans = model.draw_time_mask([len(r) for r in rows], frames)      # as SERData draws them
        return {"features": x, "frame_mask": mask, **({"time_mask": spans} if spans is not None else {})}
    batch = 16                               # the study's clips per step
    return Workload("ser", "audio_seconds", lengths, make_batch, model, batch, 1.0 / SR,
                    naive_width=max(lengths), naive_batch=8, budget=int(batch * np.mean(lengths)),
                    fast_batch=feature_batch, prepare=prepare, width_step=SR)


def farstail_lengths(data_dir: Path | None) -> list[int] | None:
    """Real FarsTail pair lengths (untruncated) with the tiny WordPiece vocab, when the data is there."""
    try:
        from hw5.config import resolve_config
        from hw5.data.farstail import load_farstail
        from hw5.tasks.nli import load_tokenizer, model_path
        splits = load_farstail(data_dir, normalize=True)
        tok = load_tokenizer(model_path(resolve_config("nli-full", smoke=True), splits), resolve_config("nli-full"))
        pairs = splits["train"]
        ids = tok([p.premise for p in pairs], [p.hypothesis for p in pairs], truncation=True,
                  max_length=NOTEBOOK_MAX_TOKENS)
        return [len(x) for x in ids["input_ids"]]
    except Exception as exc:                    # no data here: synthetic FarsTail-like lengths
        print(f"bench: FarsTail lengths unavailable ({type(exc).__name__}); using synthetic lengths")
        return None
