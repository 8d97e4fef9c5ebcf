"""`hw5 bench`: how fast one epoch of training steps goes, three ways, in one run, on one model.

  naive    every example padded to one fixed width (NLI: 512 as padding="max_length" does; SER: the
           longest clip), random batches, fp32, plain AdamW, a host sync (`loss.item()`) every step
  project  hw5's fast path: length-bucketed batches (SER: filled to an audio-seconds budget, on CNN
           features computed once per clip — the CNN is frozen), bf16 autocast + fused AdamW on CUDA,
           no per-step sync, SDPA without cuDNN attention (hw5.train.cuda_kernel_choices), SER's
           positional conv through rfft on CUDA (hw5.models.posconv.fast_positional_conv)
  ceiling  one representative batch shape (batch x mean length) repeated: the fixed-shape bound
  peer-trainer   transformers.Trainer on the same model and examples, set up carefully (hw5.bench.peer);
           peer-trainer+compile with torch_compile (default on CUDA; on a CPU when named in --paths)

`--ablations` adds the project path minus (or plus) one optimization at a time (what each one buys),
twice the examples per step, the forward-only rate, CUDA graphs (hw5.graphs: one captured step per
batch shape, widths rounded to 16 tokens / 1 s; CUDA only), SER's positional conv by cuDNN or by one
bmm over unfolded windows instead of the rfft (CUDA only; `--posconv` times the conv alone),
torch.compile on the fixed-shape ceiling, and an estimate of the default grid's device time from these rates.
Units are real tokens (NLI) or real audio seconds (SER) per second; padding is not counted as work.
Random-init models from configs (no hub): tiny ones on CPU (seconds), full-size ones on a GPU.
"""
from __future__ import annotations

import contextlib
import resource
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hw5.bench.timing import PathResult, peak_mb, reset_peak, sync
from hw5.bench.peer import PEERS, Peer, missing_dependency, peer_pass
from hw5.bench.work import Workload, farstail_lengths, nli_workload, ser_workload
from hw5.data import batching
from hw5.bench.report import grid_estimate, with_ratios, write_report
from hw5.io import write_text_atomic
from hw5.config import TrainConfig
from hw5.graphs import GRAPH_SAFE_CONFIG, StepGraphs
from hw5.step import train_step
from hw5.models.posconv import fast_positional_conv
from hw5.models.surgery import first_token_only
from hw5.device import autocast, cuda_kernel_choices


MAX_GRAD_NORM = TrainConfig().max_grad_norm    # every row clips as the study's runs do


@dataclass(frozen=True, kw_only=True)
class Variant:
    padding: str        # "max" (naive width), "datamax" (longest example), "batch" (random batches, each
                        # padded to its longest), "bucket" (length-bucketed), "shape" (one fixed shape)
    precision: str      # "fp32" or "auto" (bf16 autocast on CUDA)
    host_sync: bool     # loss.item() after every step
    fused: bool         # fused AdamW (CUDA only)
    features: bool      # SER: cached CNN features instead of waveforms
    batch: str = "project"   # "naive": the naive path's examples per step
    train: bool = True  # False: forward only, no grad (evaluation)
    compiled: bool = False   # transformer blocks through torch.compile
    cudnn_attention: bool = False   # SDPA may use cuDNN's attention (a plan per new shape)
    scale: int = 1      # examples (or budget) per step x scale
    graphs: bool = False     # CUDA graph per step shape (hw5.graphs); widths rounded, batch_size batches
    width_step_scale: float = 1.0  # graphs: widths rounded to this x the workload's width_step
    pos_conv: str = "fft"     # SER on CUDA: HuBERT's positional conv as "fft", "matmul" or "conv" (cuDNN)
    attention: str = "hw5"    # attn_implementation: "hw5" (hw5.models.attention) or transformers' "sdpa"
    first_token: bool = True  # NLI: the last layer computes only [CLS], the head's input (first_token_only)


NAIVE = Variant(padding="max", precision="fp32", host_sync=True, fused=False, features=False, batch="naive",
                cudnn_attention=True, pos_conv="conv", attention="sdpa",
                first_token=False)                    # torch / transformers defaults
PROJECT = Variant(padding="bucket", precision="auto", host_sync=False, fused=True, features=True)
PATHS = {"naive": NAIVE, "project": PROJECT, "ceiling": replace(PROJECT, padding="shape")}
ABLATIONS = {                      # the project path minus (or plus) one optimization each
    "naive-datamax": replace(NAIVE, padding="datamax"),
    "project-fp32": replace(PROJECT, precision="fp32"),
    "project-random": replace(PROJECT, padding="batch"),   # ser-mean's batching: random, dynamic padding
    "project-fixed": replace(PROJECT, padding="max"),      # ser-fixedpad's batching
    "project-waves": replace(PROJECT, features=False),
    "project-sync": replace(PROJECT, host_sync=True),
    "project-unfused": replace(PROJECT, fused=False),
    "project-cudnn-attention": replace(PROJECT, cudnn_attention=True),
    "project-sdpa": replace(PROJECT, attention="sdpa"),    # stock attention (CPU: its dropout path)
    "project-all-tokens": replace(PROJECT, first_token=False),   # NLI: the last layer computes every token
    "project-conv-pos": replace(PROJECT, pos_conv="conv"),    # SER: cuDNN's grouped conv
    "project-matmul-pos": replace(PROJECT, pos_conv="matmul"),  # SER: one bmm over unfolded windows
    "project-x2": replace(PROJECT, scale=2),               # twice the examples (budget) per step
    "project-eval": replace(PROJECT, train=False),
    "project+graphs": replace(PROJECT, graphs=True),         # CUDA only: the cuda_graphs training option
    "project+graphs-half-step": replace(PROJECT, graphs=True, width_step_scale=0.5),  # less padding, more graphs
    "project+graphs-quarter-step": replace(PROJECT, graphs=True, width_step_scale=0.25),
    "ceiling+graphs": replace(PATHS["ceiling"], graphs=True),  # CUDA only: one shape, one graph: GPU-bound
    "project+graphs-conv-pos": replace(PROJECT, graphs=True, pos_conv="conv"),   # SER, CUDA only
    "project+graphs-matmul-pos": replace(PROJECT, graphs=True, pos_conv="matmul"),  # SER, CUDA only
    # last: compiling changes the model in place. Bucketed shapes make it recompile (docs/performance.md), so
    # compile is timed where shapes allow it: the fixed-shape ceiling.
    "ceiling-compiled": replace(PATHS["ceiling"], compiled=True),
}
POS_CONV_ROWS = tuple(name for name, v in ABLATIONS.items() if v.pos_conv != PROJECT.pos_conv)  # SER, CUDA


def selected_variants(paths: tuple[str, ...], ablations: bool, device: torch.device | None = None
                      ) -> dict[str, Variant | Peer]:
    """The rows to time: the three paths and the Trainer peer always (the ratios are relative to them),
    plus every ablation or only the named rows. The compiled peer joins by default on CUDA; on a CPU,
    where compiling it takes minutes, only when named."""
    every = {**PATHS, **PEERS, **ABLATIONS}
    always = [*PATHS, "peer-trainer"]
    if not paths:
        always += ["peer-trainer+compile"] if device is not None and device.type == "cuda" else []
        return {name: v for name, v in every.items() if name in always or (ablations and name in ABLATIONS)}
    unknown = [p for p in paths if p not in every]
    if unknown:
        from hw5.config import ConfigError
        raise ConfigError(f"--paths: unknown {', '.join(unknown)}; choose from {', '.join(every)}")
    return {name: v for name, v in every.items() if name in paths or name in always}


def can_compile(device: torch.device) -> bool:
    """Inductor needs Triton on CUDA and a C++ compiler on CPU."""
    return device.type == "cuda" or shutil.which("c++") is not None or shutil.which("g++") is not None


def applies(work: Workload, name: str) -> bool:
    if name in ("project-fixed", "project-waves", *POS_CONV_ROWS):
        return work.task == "ser"               # NLI has no feature cache and trains bucketed only
    if name == "project-all-tokens":
        return work.task == "nli"               # SER pools every frame: its last layer computes them all
    if name == "naive-datamax":                 # only where it differs from the naive width
        return max(work.naive_lengths or work.lengths) < work.naive_width
    return True


def runs_here(work: Workload, name: str, v: Variant | Peer, device: torch.device) -> bool:
    """Whether the row applies to this task and this device can run it."""
    if v.compiled and not can_compile(device):
        return False
    if isinstance(v, Peer):
        return True
    return applies(work, name) and not ((v.graphs or name in POS_CONV_ROWS) and device.type != "cuda")


def timed_row(work: Workload, name: str, v: Variant | Peer, device: torch.device, repeat: int) -> PathResult:
    if isinstance(v, Peer):
        return peer_pass(work, name, v, device, repeat)
    with graph_safe_model(work.model, v.graphs):
        return timed_pass(work, name, v, device, repeat)


def step_plan(work: Workload, v: Variant, seed: int = 0) -> list[tuple[list[int], int]]:
    """(indices, padded width) per step for one epoch of the given variant."""
    n = len(work.lengths)
    bs = (work.naive_batch if v.batch == "naive" else work.batch_size) * v.scale
    lengths = real_lengths(work, v)
    if v.padding in ("max", "datamax", "batch"):
        perm = np.random.default_rng(seed).permutation(n).tolist()
        batches = [perm[i:i + bs] for i in range(0, n, bs)]
        if v.padding == "batch":
            return [(b, max(lengths[i] for i in b)) for b in batches]
        width = work.naive_width if v.padding == "max" else max(lengths)
        return [(b, width) for b in batches]
    if v.padding == "bucket":
        budget = 0 if v.graphs else work.budget * v.scale     # graphs: fixed examples per step
        batches = batching.train_batches(lengths, bs, "bucket", seed, 0, budget=budget)
        step = int(work.width_step * v.width_step_scale) if v.graphs else 0
        return [(b, batching.round_width(max(lengths[i] for i in b), step)) for b in batches]
    mean = int(np.mean(lengths))          # ceiling: same units, one shape
    steps = max(1, round(sum(lengths) / (bs * mean)))
    return [([i % n for i in range(bs)], mean)] * steps


def real_lengths(work: Workload, v: Variant) -> list[int]:
    """The naive NLI path truncates at 512, the project at the study's max_length."""
    naive_width = v.padding in ("max", "datamax") and v.batch == "naive"
    return work.naive_lengths if naive_width and work.naive_lengths else work.lengths


def compile_blocks(model: torch.nn.Module, dynamic: bool) -> None:
    """torch.compile each transformer block (regional compilation: one graph reused by all layers;
    HF's mask handling around the blocks stays eager)."""
    from hw5.models.surgery import encoder_layers
    for layer in encoder_layers(model.encoder):
        layer.compile(dynamic=dynamic)


def warmup_steps(steps: list[tuple[list[int], int]], repeat: int = 2) -> list[tuple[list[int], int]]:
    """Each distinct step shape once (the first twice): first-time costs (kernel loading, cuDNN plans
    and autotuning, compilation) are paid once per process, not once per epoch, so they stay out of the
    timed epoch and are reported as prep_seconds."""
    seen, out = set(), [steps[0]] * (repeat - 1)
    for indices, width in steps:
        if (len(indices), width) not in seen:
            seen.add((len(indices), width))
            out.append((indices, width))
    return out


def configure_model(work: Workload, v: Variant) -> torch.nn.Module:
    """The workload's one model set up as the variant wants it (each row undoes the previous row's choice)."""
    work.model.encoder.set_attn_implementation(v.attention)
    if work.task == "ser":
        fast_positional_conv(work.model.encoder, v.pos_conv)
    else:
        first_token_only(work.model.encoder, v.first_token)
    return work.model


def timed_pass(work: Workload, name: str, v: Variant, device: torch.device, repeat: int = 1) -> PathResult:
    """Warm-up over every step shape, then `repeat` epoch-sized passes; the median pass is reported."""
    steps, lengths = step_plan(work, v), real_lengths(work, v)
    use_features = v.features and work.fast_batch is not None
    prep = work.prepare() if use_features and work.prepare else 0.0
    make = work.fast_batch if use_features else work.make_batch
    model = configure_model(work, v)
    if device.type == "cuda":
        cuda_kernel_choices(v.cudnn_attention)
    if v.compiled:
        compile_blocks(model, dynamic=v.padding != "shape")
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda" and v.fused)
    graphs = StepGraphs(model, opt, device, v.precision, MAX_GRAD_NORM) if v.graphs else None
    model.train(v.train)
    reset_peak(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warm = warmup_steps(steps)
    schedule = warm + steps * repeat
    batches = (make(*s) for s in schedule)
    marks = [time.perf_counter()]               # start, end of warm-up, end of each pass
    for k, ((indices, width), inputs) in enumerate(zip(schedule, batches)):
        if k >= len(warm) and (k - len(warm)) % len(steps) == 0:
            sync(device)
            marks.append(time.perf_counter())
        _step(model, opt, inputs, len(indices), v, device, ceiling=v.padding == "shape", graphs=graphs)
    sync(device)
    marks.append(time.perf_counter())
    seconds = pass_seconds(marks)
    used = [width * len(ix) if v.padding == "shape" else sum(min(lengths[i], width) for i in ix) for ix, width in steps]
    real, padded = sum(used), sum(width * len(ix) for ix, width in steps)
    examples = sum(len(ix) for ix, _ in steps)
    note = ""
    if graphs is not None:
        stats = graphs.stats()
        note = f"{stats['graphs']} graph(s)" if not stats["failure"] else f"EAGER, capture failed: {stats['failure']}"
    return PathResult(work.task, name, len(steps), seconds, real * work.per_unit / seconds,
                      examples / seconds, 1 - real / padded, peak_mb(device, rss0), prep, marks[1] - marks[0],
                      note)


def pass_seconds(marks: list[float]) -> float:
    """The median pass: marks are the start, the end of the warm-up and the end of each pass."""
    return float(np.median(np.diff(marks[1:])))


def _step(model, opt, inputs: dict, batch: int, v: Variant, device: torch.device, ceiling: bool,
          graphs: StepGraphs | None = None) -> None:
    """One timed step: the run's own training step (hw5.step), or a forward pass for the eval row."""
    inputs = {key: x.to(device) for key, x in inputs.items()}
    if ceiling:                                  # one shape, no padding: the bound
        inputs = {key: torch.ones_like(x) if key.endswith("mask") and x.dtype != torch.bool else x
                  for key, x in inputs.items()}
    y = torch.zeros(batch, dtype=torch.long, device=device)
    if graphs is not None:
        graphs.step(inputs, y)
        return
    if not v.train:
        with torch.no_grad(), autocast(device, v.precision):
            model(**inputs)
        return
    loss_sum, hits = torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.long, device=device)
    params = [p for group in opt.param_groups for p in group["params"]]
    train_step(model, opt, inputs, y, loss_sum, hits, device=device, precision=v.precision, params=params,
               max_grad_norm=MAX_GRAD_NORM)
    if v.host_sync:
        loss_sum.item()                          # the per-step host sync of a typical loop


def profile_project(work: Workload, device: torch.device, out_dir: Path, steps: int = 6) -> Path:
    """torch.profiler table of a few project-path steps (where the time goes: kernels vs host)."""
    from torch.profiler import ProfilerActivity, profile
    schedule = step_plan(work, PROJECT)[:steps + 2]
    make = work.fast_batch or work.make_batch
    work.prepare and work.prepare()
    opt = torch.optim.AdamW([p for p in work.model.parameters() if p.requires_grad], lr=1e-5,
                            fused=device.type == "cuda")
    work.model.train()
    cuda = device.type == "cuda"
    if cuda:
        cuda_kernel_choices(PROJECT.cudnn_attention)
    for indices, width in schedule[:2]:
        _step(work.model, opt, make(indices, width), len(indices), PROJECT, device, ceiling=False)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for indices, width in schedule[2:]:
            _step(work.model, opt, make(indices, width), len(indices), PROJECT, device, ceiling=False)
        sync(device)
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                      row_limit=30, max_name_column_width=60)
    path = out_dir / f"profile_{work.task}.txt"
    write_text_atomic(path, table)
    return path


@contextlib.contextmanager
def graph_safe_model(model: torch.nn.Module, graphs: bool):
    """The encoder's config with the overrides a captured step needs (hw5.graphs.GRAPH_SAFE_CONFIG),
    for the graphed rows only; a run gets them from its model builder."""
    config = getattr(model.encoder, "config", None)
    saved = {k: getattr(config, k) for k in GRAPH_SAFE_CONFIG if hasattr(config, k)} if graphs else {}
    for key in saved:
        setattr(config, key, GRAPH_SAFE_CONFIG[key])
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(config, key, value)


@dataclass(frozen=True)
class BenchOptions:
    """What `hw5 bench` times (its flags, one field each)."""
    tasks: tuple[str, ...] = ("nli", "ser")
    full: bool | None = None           # full-size models; None: on a GPU only
    nli_pairs: int = 512               # FarsTail-length pairs per NLI pass
    ser_clips: int = 320               # ShEMO-length clips per SER pass
    data_dir: Path | None = None       # FarsTail's lengths come from here when present
    ablations: bool = False            # also the rows that each remove one optimization
    profile: bool = False              # a torch profiler trace of the ceiling row
    decode_clips: int = 0              # > 0: time decoding this many clips
    startup_clips: int = 0             # > 0: time a run's host work before its first step
    repeat: int = 1                    # timed passes per row (the median is reported)
    paths: tuple[str, ...] = ()        # rows named explicitly (besides the three paths)
    posconv: bool = False              # the positional-convolution kernels' own table


def bench(out_dir: Path, options: BenchOptions = BenchOptions()) -> pd.DataFrame:
    """Time each selected row on each task, then the extras asked for; write bench.json / bench.md."""
    from hw5.run import limit_threads
    limit_threads()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    full = device.type == "cuda" if options.full is None else options.full
    rows, notes = _timed_rows(out_dir, options, device, full)
    table = with_ratios(pd.DataFrame(rows)) if rows else pd.DataFrame()
    decode = startup = posconv_rows = None
    if options.decode_clips:
        from hw5.bench.decode import decode_bench
        decode = decode_bench(options.decode_clips)
    if options.startup_clips:
        from hw5.bench.startup import startup_bench
        startup = startup_bench(options.data_dir, options.startup_clips)
    if options.posconv:
        from hw5.bench.posconv import posconv_bench
        posconv_rows = posconv_bench(device)
    estimate = grid_estimate(table, device, startup) if rows else None   # None unless its rows were timed
    write_report(out_dir, table, device, full, estimate, decode, startup, posconv_rows, notes)
    return table


def _timed_rows(out_dir: Path, options: BenchOptions, device: torch.device, full: bool) -> tuple[list, list]:
    variants = selected_variants(options.paths, options.ablations, device)
    rows, notes = [], []
    if any(isinstance(v, Peer) for v in variants.values()) and (reason := missing_dependency()):
        variants = {name: v for name, v in variants.items() if not isinstance(v, Peer)}
        notes.append(f"Peer rows not timed: {reason}.")
    for task in options.tasks:
        work = (nli_workload(device, full, options.nli_pairs, farstail_lengths(options.data_dir)) if task == "nli"
                else ser_workload(device, full, options.ser_clips))
        for name, v in variants.items():
            if not runs_here(work, name, v, device):
                continue
            result = timed_row(work, name, v, device, options.repeat)
            rows.append(asdict(result))
            if options.profile and name == "ceiling":      # before any ablation (compiling changes the model)
                print(f"bench: wrote {profile_project(work, device, out_dir)}", flush=True)
            print(f"bench {task:3s} {name:16s} {result.units_per_s:10.1f} {work.unit}/s  "
                  f"pad {result.padding_share:6.1%}  {result.seconds:6.2f}s  "
                  f"peak {result.peak_memory_mb:8.1f} MB  prep {result.prep_seconds:5.1f}s  "
                  f"warm-up {result.warmup_seconds:5.1f}s", flush=True)
        del work
    return rows, notes
