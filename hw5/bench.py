"""`hw5 bench`: how fast one epoch of training steps goes, three ways, in one run, on one model.

  naive    every example padded to the dataset's longest, random batches, fp32, plain AdamW, a host
           sync (`loss.item()`) every step — how a first notebook trains
  project  hw5's fast path: length-bucketed batches (SER: filled to an audio-seconds budget, on CNN
           features computed once per clip — the CNN is frozen), bf16 autocast + fused AdamW on CUDA,
           no per-step sync
  ceiling  one representative batch shape (batch x mean length) repeated: the fixed-shape bound

Units are real tokens (NLI) or real audio seconds (SER) per second; padding is not counted as work.
Random-init models from configs (no hub): tiny ones on CPU (seconds), full-size ones on a GPU.
"""
from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from hw5.data import batching
from hw5.io import provenance, write_json_atomic, write_text_atomic
from hw5.models.tiny import TINY_BERT, TINY_HUBERT
from hw5.train import autocast

SR = 16000


@dataclass
class PathResult:
    task: str
    path: str
    steps: int
    seconds: float
    units_per_s: float
    examples_per_s: float
    padding_share: float
    peak_memory_mb: float
    prep_seconds: float          # one-off work before the epoch (SER project: CNN features per clip)


@dataclass
class Workload:
    task: str
    unit: str
    lengths: list[int]                                     # real length per example (tokens / samples)
    make_batch: Callable[[list[int], int], dict]           # (indices, padded width) -> model inputs
    model: torch.nn.Module
    batch_size: int
    per_unit: float                                        # samples -> seconds for SER, 1 for tokens
    budget: int = 0                                        # >0: project batches hold this many padded units
    fast_batch: Callable[[list[int], int], dict] | None = None   # project-path inputs, if different
    prepare: Callable[[], float] | None = None             # one-off work of the project path -> seconds


def nli_workload(device: torch.device, full: bool, n: int, lengths: list[int] | None = None) -> Workload:
    from transformers import BertConfig, BertModel
    from hw5.models.nli import NLIClassifier
    cfg = BertConfig(vocab_size=100_000) if full else BertConfig(**TINY_BERT)   # ParsBERT-size vocab
    rng = np.random.default_rng(0)
    if lengths is None:          # FarsTail-like pair lengths (mean ~77, p95 ~123 with the tiny vocab)
        lengths = np.clip(rng.lognormal(np.log(72), 0.35, n), 12, 128).astype(int).tolist()
    lengths = lengths[:n]
    ids = [rng.integers(5, cfg.vocab_size, size=length) for length in lengths]

    def make_batch(indices: list[int], width: int) -> dict:
        # pad_2d crops rows to `width`: the ceiling's one shape may be shorter than a pair
        x = batching.pad_2d([ids[i] for i in indices], width)
        mask = batching.pad_2d([[1] * lengths[i] for i in indices], width)
        return {"input_ids": x, "attention_mask": mask, "token_type_ids": torch.zeros_like(x)}
    torch.manual_seed(0)
    model = NLIClassifier(BertModel(cfg, add_pooling_layer=False), 3, 0.1).to(device)
    return Workload("nli", "tokens", lengths, make_batch, model, 32, 1.0)


def ser_workload(device: torch.device, full: bool, n: int, max_seconds: float = 15.0) -> Workload:
    from transformers import HubertConfig, HubertModel
    from hw5.data.synthetic import clip_seconds
    from hw5.models.ser import SERClassifier, freeze_feature_encoder
    rng = np.random.default_rng(0)
    lengths = [int(min(clip_seconds(rng, "shemo"), max_seconds) * SR) for _ in range(n)]
    waves = [rng.standard_normal(length).astype(np.float32) for length in lengths]

    def make_batch(indices: list[int], width: int) -> dict:
        x = torch.zeros(len(indices), width)
        mask = torch.zeros(len(indices), width, dtype=torch.long)
        for row, i in enumerate(indices):
            used = min(lengths[i], width)
            x[row, :used] = torch.from_numpy(waves[i][:used])
            mask[row, :used] = 1
        return {"input_values": x, "attention_mask": mask}
    cfg = HubertConfig() if full else HubertConfig(**TINY_HUBERT)
    torch.manual_seed(0)
    encoder = HubertModel(cfg)
    freeze_feature_encoder(encoder)
    model = SERClassifier(encoder, "mean", 6, 0.1).to(device)
    features: list[torch.Tensor] = []

    def prepare() -> float:                  # the frozen CNN once per clip, unpadded
        started = time.perf_counter()
        features[:] = [model.clip_features(torch.from_numpy(w)) for w in waves]
        _sync(device)
        return time.perf_counter() - started

    def feature_batch(indices: list[int], width: int) -> dict:
        frames = max(features[i].shape[0] for i in indices)
        x = torch.zeros(len(indices), frames, features[indices[0]].shape[1], device=device)
        mask = torch.zeros(len(indices), frames, dtype=torch.long, device=device)
        for row, i in enumerate(indices):
            x[row, :features[i].shape[0]] = features[i]
            mask[row, :features[i].shape[0]] = 1
        return {"features": x, "frame_mask": mask}
    batch = 8
    return Workload("ser", "audio_seconds", lengths, make_batch, model, batch, 1.0 / SR,
                    budget=int(batch * np.mean(lengths)), fast_batch=feature_batch, prepare=prepare)


def plan(work: Workload, path: str, seed: int = 0) -> list[tuple[list[int], int]]:
    """(indices, padded width) per step for one epoch of the given path."""
    n, bs = len(work.lengths), work.batch_size
    if path == "naive":
        widest = max(work.lengths)
        perm = np.random.default_rng(seed).permutation(n).tolist()
        return [(perm[i:i + bs], widest) for i in range(0, n, bs)]
    if path == "project":
        batches = (batching.budget_batches(work.lengths, work.budget, seed, 0) if work.budget
                   else batching.train_batches(work.lengths, bs, "bucket", seed, 0))
        return [(b, max(work.lengths[i] for i in b)) for b in batches]
    mean = int(np.mean(work.lengths))          # ceiling: same units, one shape
    steps = max(1, round(sum(work.lengths) / (bs * mean)))
    return [(list(range(bs)), mean)] * steps


def timed_pass(work: Workload, path: str, device: torch.device, warmup: int = 2) -> PathResult:
    steps = plan(work, path)
    naive = path == "naive"
    fast = path == "project" and work.fast_batch is not None
    prep = work.prepare() if path == "project" and work.prepare else 0.0
    make_batch = work.fast_batch if fast else work.make_batch
    model = work.model
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                            fused=device.type == "cuda" and not naive)
    precision = "fp32" if naive else "auto"
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    real = padded = examples = 0.0
    started = None
    for k, (indices, width) in enumerate(warmup * [steps[0]] + steps):
        if k == warmup:
            _sync(device)
            started = time.perf_counter()
        inputs = {key: v.to(device, non_blocking=not naive) for key, v in make_batch(indices, width).items()}
        if path == "ceiling":
            inputs = {key: v.clone() for key, v in inputs.items()}
            if "attention_mask" in inputs:
                inputs["attention_mask"].fill_(1)     # one shape, no padding: the bound
        y = torch.zeros(len(indices), dtype=torch.long, device=device)
        with autocast(device, precision):
            loss = F.cross_entropy(model(**inputs).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if naive:
            loss.item()                              # the per-step host sync of a typical loop
        if k >= warmup:
            used = width * len(indices) if path == "ceiling" else sum(work.lengths[i] for i in indices)
            real, padded, examples = real + used, padded + width * len(indices), examples + len(indices)
    _sync(device)
    seconds = time.perf_counter() - started
    # CPU: growth of the process's peak RSS (a lower bound; the first path pays for allocator pools)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    return PathResult(work.task, path, len(steps), seconds, real * work.per_unit / seconds,
                      examples / seconds, 1 - real / padded, peak, prep)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def farstail_lengths(data_dir: Path | None, max_length: int = 128) -> list[int] | None:
    """Real FarsTail pair lengths with the tiny WordPiece vocab, when the data is there."""
    try:
        from hw5.config import resolve_config
        from hw5.data.farstail import load_farstail
        from hw5.nli import load_tokenizer, model_path
        splits = load_farstail(data_dir, normalize=True)
        tok = load_tokenizer(model_path(resolve_config("nli-full", smoke=True), splits), resolve_config("nli-full"))
        pairs = splits["train"]
        ids = tok([p.premise for p in pairs], [p.hypothesis for p in pairs], truncation=True, max_length=max_length)
        return [len(x) for x in ids["input_ids"]]
    except Exception as exc:                    # no data here: synthetic FarsTail-like lengths
        print(f"bench: FarsTail lengths unavailable ({type(exc).__name__}); using synthetic lengths")
        return None


def bench(out_dir: Path, tasks=("nli", "ser"), full: bool | None = None, nli_pairs: int = 512,
          ser_clips: int = 160, data_dir: Path | None = None) -> pd.DataFrame:
    from hw5.run import limit_threads
    limit_threads()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    full = device.type == "cuda" if full is None else full
    rows = []
    for task in tasks:
        work = (nli_workload(device, full, nli_pairs, farstail_lengths(data_dir)) if task == "nli"
                else ser_workload(device, full, ser_clips))
        for path in ("naive", "project", "ceiling"):
            result = timed_pass(work, path, device)
            rows.append(asdict(result))
            print(f"bench {task:3s} {path:8s} {result.units_per_s:10.1f} {work.unit}/s  "
                  f"pad {result.padding_share:6.1%}  {result.seconds:6.2f}s  peak {result.peak_memory_mb:8.1f} MB",
                  flush=True)
        del work
    table = _with_ratios(pd.DataFrame(rows))
    _write(out_dir, table, device, full)
    return table


def _with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    by = table.set_index(["task", "path"])["units_per_s"]
    table["vs_naive"] = [r.units_per_s / by[(r.task, "naive")] for r in table.itertuples()]
    table["vs_ceiling"] = [r.units_per_s / by[(r.task, "ceiling")] for r in table.itertuples()]
    return table


def _write(out_dir: Path, table: pd.DataFrame, device: torch.device, full: bool) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {"device": name, "models": "full-size" if full else "tiny", "threads": torch.get_num_threads(),
            "provenance": provenance(name)}
    write_json_atomic(out_dir / "bench.json", {**meta, "rows": table.to_dict(orient="records")})
    md = table.to_markdown(index=False, floatfmt=".3g")
    write_text_atomic(out_dir / "bench.md", f"### hw5 bench ({meta['models']} models on {name}, "
                                            f"{meta['threads']} threads)\n\n{md}\n")
    print(f"bench: wrote {out_dir / 'bench.md'} and bench.json")

