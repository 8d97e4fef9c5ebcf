"""Run configuration: dataclasses with a comment per field, YAML loading with type checks, config_hash.

`jobs/experiments.yaml` holds per-task defaults, a `smoke` overlay and named experiments that state only
their differences. `resolve_config(name, smoke)` merges them into one typed dataclass; every problem
(unknown experiment, unknown key, wrong type) is a single `ConfigError` naming the file and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hw5.report_spec import ReportSpec, SpecError, parse_report
from hw5.sweep import Sweep, SweepError, base_of, read_sweep

REPO_ROOT = Path(__file__).resolve().parent.parent
# The grid file ships inside the `jobs` package so an installed hw5 (e.g. in the image) still finds it.
DEFAULT_GRID = REPO_ROOT / "jobs" / "experiments.yaml"


class ConfigError(ValueError):
    """A user-facing configuration problem; str() is the whole message."""


def bounded(default, low, high=None, low_open: bool = False, high_open: bool = False):
    """A field's default with the range a value from the YAML must fall in (checked by validate)."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open, "high_open": high_open})


def _out_of_range(value, bounds: dict) -> str:
    """'' when value is inside bounds, else the rule it breaks ('> 0 and <= 1')."""
    low, high = bounds["low"], bounds["high"]
    rule = [f"{'>' if bounds['low_open'] else '>='} {low}"] + \
           ([f"{'<' if bounds['high_open'] else '<='} {high}"] if high is not None else [])
    inside = (value > low if bounds["low_open"] else value >= low) and \
        (high is None or (value < high if bounds["high_open"] else value <= high))
    return "" if inside else " and ".join(rule)


@dataclass
class TrainConfig:
    """Fields shared by both tasks (the training recipe)."""
    task: str = ""                          # "nli" or "ser"; set by the experiment
    description: str = ""                   # one line shown in tables
    model_name: str = ""                    # hub id or local directory; "tiny" / "random-base" build a tiny / a
                                            # full-size random-init model locally (smoke / timing; LOCAL_MODELS)
    cache_dir: str = ""                     # HF cache dir; "" = HF_HOME / default; pre-fill it for offline nodes
    epochs: int = bounded(3, 1, 1000)       # passes over the training split; best epoch chosen on val
    batch_size: int = bounded(32, 1)        # training examples per step
    eval_batch_size: int = bounded(64, 1)   # examples per evaluation step (no grads, so larger)
    lr: float = bounded(3.0e-5, 0, 1, low_open=True) # peak AdamW learning rate for the encoder
    head_lr: float = bounded(0.0, 0, 1)     # learning rate of our head; 0 = same as lr
    weight_decay: float = bounded(0.01, 0, 1) # AdamW decoupled weight decay (not on biases / norms)
    warmup_ratio: float = bounded(0.1, 0, 1, high_open=True) # share of steps with linear warm-up, then linear decay to 0
    max_grad_norm: float = bounded(1.0, 0)  # gradient clipping; 0 disables
    head_dropout: float = bounded(0.1, 0, 1, high_open=True) # dropout before the linear classifier
    train_subset: int = bounded(0, 0)       # >0: use only this many training examples (stratified), for smoke
    eval_subset: int = bounded(0, 0)        # >0: use only this many val/test examples (stratified), for smoke
    precision: str = "auto"                 # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32"
    batch_budget: float = bounded(0.0, 0)   # >0 with batching "bucket": fill each training batch to this many padded
                                            # units (NLI tokens, SER audio-seconds) instead of batch_size examples;
                                            # fewer, fuller steps (hw5 bench: a GPU step is host-bound)
    width_step: float = bounded(0.0, 0)     # >0: round each batch's padded width up to a multiple of this many tokens
                                            # (NLI) / audio-seconds (SER): a few distinct batch shapes (cuda_graphs)
    cuda_graphs: bool = False               # CUDA: replay each training step shape as one captured CUDA graph
                                            # (hw5/graphs.py); needs width_step, no batch_budget; eager on CPU
    log_every: int = bounded(50, 1)         # steps between progress lines
    checkpoint_every: int = bounded(0, 0)   # steps between periodic checkpoints (0 = only at epoch ends / USR2)
    tensorboard: bool = True                # live curves in <results>/tensorboard/<exp>/seed-<n>/ (loss, accuracy, lr,
                                            # throughput per log line and epoch); `tensorboard --logdir results`


@dataclass
class NLIConfig(TrainConfig):
    """Persian NLI on FarsTail with a BERT encoder and our [CLS] head."""
    task: str = "nli"
    model_name: str = "HooshvareLab/bert-base-parsbert-uncased" # ParsBERT v1 (uncased)
    max_length: int = bounded(128, 8, 4096) # tokens per premise+hypothesis pair; longer pairs truncated (stats)
    batching: str = "bucket"                # "bucket" (length-sorted chunks, little padding), "dynamic", "fixed"
    normalize_text: bool = True             # unify Arabic/Persian letters and digits, ZWNJ and whitespace
    freeze_embeddings: bool = False         # freeze the word/position/type embeddings
    freeze_first_layers: int = bounded(0, 0) # freeze encoder layers 1..k (0 = none)
    keep_layers: int = bounded(0, 0)        # keep only the first k encoder layers (0 = all)
    prune_heads_fraction: float = bounded(0.0, 0, 1, high_open=True) # remove this share of heads in every layer, chosen by the seed


@dataclass
class SERConfig(TrainConfig):
    """Speech emotion recognition on ShEMO with a HuBERT encoder, our pooling and head."""
    task: str = "ser"
    model_name: str = "facebook/hubert-base-ls960" # HuBERT base, LibriSpeech 960 h
    epochs: int = bounded(10, 1, 1000)      # ShEMO is small; more passes than NLI
    batch_size: int = bounded(16, 1)        # clips per step
    eval_batch_size: int = bounded(16, 1)   # clips per evaluation step
    lr: float = bounded(5.0e-5, 0, 1, low_open=True) # encoder learning rate
    head_lr: float = bounded(1.0e-3, 0, 1)  # our pooling + head start from scratch: larger rate
    warmup_ratio: float = bounded(0.1, 0, 1, high_open=True) # share of warm-up steps
    corpus: str = "shemo"                   # "shemo" (real audio under the data dir) or "synthetic" (generated)
    synthetic_clips: int = bounded(0, 0, 3000) # synthetic corpus size (0 = all 3,000 names)
    synthetic_durations: str = "smoke"      # synthetic clip lengths: "smoke" (ShEMO's spread, 0.3 of the length), "shemo"
                                            # (ShEMO's spread), "short" (1-3 s); see hw5/data/synthetic.py
    label_source: str = "filename"          # "filename" (official) or "modified" (Modified-ShEMO labels)
    sample_rate: int = bounded(16000, 8000, 48000) # HuBERT's input rate; audio is resampled once and cached
    max_seconds: float = bounded(0.0, 0)    # crop training clips longer than this (0 = keep whole clips)
    batching: str = "dynamic"               # "dynamic" (pad to batch max), "fixed" (pad to fixed_seconds), "bucket"
    fixed_seconds: float = bounded(0.0, 0)  # length for fixed padding (0 = the dataset's longest clip)
    pooling: str = "mean"                   # "mean" (masked mean) or "attnstats" (attentive statistics)
    class_weights: bool = True              # inverse-frequency weighted cross-entropy (the imbalance remedy)
    split: str = "stratified"               # "stratified" 80/10/10 by emotion, "speaker" (speaker-independent), or
                                            # "emobox" (the EmoBox benchmark's fold: its test part, val from its train)
    split_seed: int = bounded(0, 0)         # fixed so every training seed sees the same split
    freeze_feature_encoder: bool = True     # the CNN feature encoder never trains
    mask_time_prob: float = bounded(0.05, 0, 1, high_open=True) # HuBERT's SpecAugment-style time masking in training
    feature_cache: bool = False             # compute the frozen CNN's features once per clip (unpadded) and train on them


TASKS: dict[str, type[TrainConfig]] = {"nli": NLIConfig, "ser": SERConfig}
# model_name values built locally from configs (hw5/models/tiny.py), never fetched from a hub
LOCAL_MODELS = ("tiny", "random-base")
# Fields that do not change results: excluded from the hash so changing them keeps runs "done".
NON_RESULT_FIELDS = {"description", "cache_dir", "log_every", "checkpoint_every",
                     "eval_batch_size", "tensorboard"}


@dataclass
class GridSpec:
    """The parsed experiments file; `experiments` holds each sweep's points right after their experiment."""
    path: Path
    seeds: list[int]
    experiments: list[str]
    raw: dict = field(repr=False, default_factory=dict)
    report: ReportSpec = field(default_factory=ReportSpec)   # what aggregate.py compares (the `report:` section)
    sweeps: dict[str, Sweep] = field(default_factory=dict)   # experiment -> its sweep (hw5/sweep.py)

    def resolve(self, name: str, smoke: bool = False) -> TrainConfig:
        """resolve_config for this parsed file, without reading it again."""
        return _resolve(self, name, smoke)

    def point(self, name: str) -> dict | None:
        """A sweep point's swept values ({field: value}); None for an experiment."""
        sweep = self.sweeps.get(base_of(name))
        return sweep.points.get(name) if sweep and name != sweep.experiment else None

    @property
    def tasks(self) -> dict[str, str]:
        """experiment (or sweep point) -> task, in file order."""
        return {name: str(self.raw["experiments"][base_of(name)]["task"]) for name in self.experiments}


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, again: int):
        super().__init__(f"key '{key}' appears twice (lines {first} and {again}); keep one")
        self.line = again


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats (`5e-5` is a float, not the string PyYAML makes of it)
    and refuses a key given twice in one mapping (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"),
    list("-+0123456789."))


def grid_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("HW5_EXPERIMENTS") or DEFAULT_GRID)


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: experiments file not found (pass --experiments or set HW5_EXPERIMENTS)")
    if not path.is_file():
        raise ConfigError(f"{path}: is a directory, not an experiments file (pass the YAML file itself)")
    data = parse_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'seeds', 'defaults', 'experiments'")
    _check_keys(path, "top level", data, {"seeds", "defaults", "smoke", "experiments", "report"})
    return data


def parse_yaml(path: Path) -> Any:
    """A YAML file read strictly (YAML 1.2 floats, no key given twice); every problem is one ConfigError."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}): is it "
                          f"a YAML file? Save it as UTF-8") from None
    except DuplicateKey as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check the path and its permissions") from None
    return data


def load_grid(path: str | os.PathLike | None = None) -> GridSpec:
    """Parse and validate the whole experiments file (every experiment resolves)."""
    p = grid_path(path)
    data = _read_yaml(p)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{p}: 'seeds' must be a list of integers, e.g. [0, 1, 2, 3, 4]")
    experiments = data.get("experiments") or {}
    if not isinstance(experiments, dict) or not experiments:
        raise ConfigError(f"{p}: 'experiments' must map experiment names to their settings")
    for name in experiments:
        _check_name(p, name)
    grid = _grid(p, data)
    for name in grid.experiments:
        _resolve(grid, name, smoke=False)
        _resolve(grid, name, smoke=True)
    _drop_default_points(grid)
    try:
        grid.report = parse_report(data.get("report"), grid.tasks)
    except SpecError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return grid


# Folders of a results tree that are not experiments: an experiment by one of these names would collide.
RESERVED_NAMES = {"smoke", "tensorboard", "tables", "plots", "stats", "bench"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# A name becomes a folder (255 bytes at most) and part of a SLURM job name, a container name and a
# log path; 64 leaves room for the launcher's prefixes and suffixes everywhere.
MAX_NAME = 64


def parse_seeds(text: str) -> list[int]:
    """'0,1,2', '0-4' or both ('0-2,7'): the seeds in that order, each once. One grammar for the
    launcher and aggregate.py; a ValueError says what is wrong with which part."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not found:
            raise ValueError(f"'{part}' is not a seed or a range (seeds are whole numbers: 0,1,2 or 0-4)")
        low, high = int(found[1]), int(found[2] or found[1])
        if high < low:
            raise ValueError(f"'{part}' counts down; a range goes up: {high}-{low}")
        seeds += range(low, high + 1)
    return list(dict.fromkeys(seeds))


def seed_ranges(seeds) -> str:
    """parse_seeds' inverse, compact: [0, 1, 2, 3, 7, 9] -> '0-3,7,9' (a run of three or more is a range)."""
    ordered, parts = sorted(set(seeds)), []
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            run = ordered[start:i]
            parts += [f"{run[0]}-{run[-1]}"] if len(run) > 2 else [str(s) for s in run]
            start = i
    return ",".join(parts)


def _check_name(path: Path, name) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise ConfigError(f"{path}: experiment name {name!r} cannot name a results folder: use letters, digits, "
                          f"'-', '_' or '.' (not first), and none of {', '.join(sorted(RESERVED_NAMES))}")
    if len(name) > MAX_NAME:
        raise ConfigError(f"{path}: experiment name '{name[:20]}...' is {len(name)} characters long; at most "
                          f"{MAX_NAME} fit a folder and a SLURM job name: shorten it")


def resolve_config(name: str, smoke: bool = False, path: str | os.PathLike | None = None) -> TrainConfig:
    """The typed config of one experiment or sweep point (defaults <- experiment <- smoke overlay <- the
    point's swept values)."""
    p = grid_path(path)
    return _resolve(_grid(p, _read_yaml(p)), name, smoke)


def _grid(path: Path, data: dict) -> GridSpec:
    """The file's experiments with each sweep's points right after their experiment."""
    grid = GridSpec(path, data.get("seeds", [0]), [], data)
    for name, exp in (data.get("experiments") or {}).items():
        grid.experiments.append(name)
        if isinstance(exp, dict) and "sweep" in exp:
            try:
                grid.sweeps[name] = read_sweep(name, exp["sweep"])
            except SweepError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            grid.experiments += list(grid.sweeps[name].points)
    return grid


def _drop_default_points(grid: GridSpec) -> None:
    """A point whose config is its experiment's is that experiment: one run, under the experiment's name."""
    for name, sweep in grid.sweeps.items():
        default = config_hash(grid.resolve(name))
        for point in [p for p in sweep.points if config_hash(grid.resolve(p)) == default]:
            sweep.default_point = point
            grid.experiments.remove(point)


def _resolve(grid: GridSpec, name: str, smoke: bool) -> TrainConfig:
    experiments = grid.raw.get("experiments") or {}
    point = grid.point(name)
    base = base_of(name) if point is not None else name
    if base not in experiments:
        near = difflib.get_close_matches(name, list(experiments) + [p for s in grid.sweeps.values() for p in s.points],
                                         n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"{grid.path}: unknown experiment '{name}'{hint} (known: {', '.join(experiments)})")
    exp = experiments[base] or {}
    if not isinstance(exp, dict) or exp.get("task") not in TASKS:
        raise ConfigError(f"{grid.path}: experiment '{base}' needs 'task: nli' or 'task: ser'")
    task = exp["task"]
    layers = [(f"defaults.{task}", (grid.raw.get("defaults") or {}).get(task) or {}),
              (f"experiments.{base}", {k: v for k, v in exp.items() if k != "sweep"})]
    if smoke:
        layers.append((f"smoke.{task}", (grid.raw.get("smoke") or {}).get(task) or {}))
    if point is not None:
        layers.append((f"experiments.{base}.sweep", point))
    values: dict[str, Any] = {}
    cls = TASKS[task]
    for where, layer in layers:
        values.update(_typed(grid.path, where, cls, layer))
    return _validated(grid.path, name, cls(**values))


def config_from_dict(values: dict, where: str = "submitted config") -> TrainConfig:
    """A config written out by config_dict (a job's frozen config), checked like one from the YAML."""
    task = values.get("task") if isinstance(values, dict) else None
    if task not in TASKS:
        raise ConfigError(f"{where}: needs 'task: nli' or 'task: ser'")
    cls = TASKS[task]
    return _validated(Path(where), task, cls(**_typed(Path(where), "config", cls, values)))


def _check_keys(path: Path, where: str, layer: dict, allowed: set[str]) -> None:
    for key in layer:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"{path}: unknown key '{key}' in {where}{hint}")


def _typed(path: Path, where: str, cls: type, layer: Any) -> dict:
    if not isinstance(layer, dict):
        raise ConfigError(f"{path}: {where} must be a mapping of field: value")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(path, where, layer, set(fields))
    out = {}
    for key, value in layer.items():
        want = {"int": int, "float": float, "str": str, "bool": bool}[fields[key].type]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: {where}.{key} must be {want.__name__}, got {type(value).__name__} "
                              f"{value!r} (write numbers unquoted, e.g. 5.0e-5; booleans as true/false)")
        out[key] = value
    return out


_CHOICES = {"batching": {"bucket", "dynamic", "fixed"}, "precision": {"auto", "bf16", "fp32"},
            "pooling": {"mean", "attnstats"}, "split": {"stratified", "speaker", "emobox"},
            "synthetic_durations": {"short", "shemo", "smoke"},
            "label_source": {"filename", "modified"}, "corpus": {"shemo", "synthetic"}}


def validate(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    """The same checks resolve_config applies, for a config built in code (tests, notebooks)."""
    return _validated(Path(where), cfg.task, cfg)


def _validated(path: Path, name: str, cfg: TrainConfig) -> TrainConfig:
    for key, allowed in _CHOICES.items():
        value = getattr(cfg, key, None)
        if value is not None and value not in allowed:
            raise ConfigError(f"{path}: {name}.{key} is '{value}', expected one of {sorted(allowed)}")
    for f in dataclasses.fields(cfg):
        rule = _out_of_range(getattr(cfg, f.name), f.metadata) if "low" in f.metadata else ""
        if rule:
            raise ConfigError(f"{path}: {name}.{f.name} is {getattr(cfg, f.name)!r}; it must be {rule} "
                              f"(the default is {f.default!r})")
    if cfg.batch_budget and cfg.batching != "bucket":
        raise ConfigError(f"{path}: {name}.batch_budget is {cfg.batch_budget}: it needs batching: bucket "
                          f"and a positive number of padded tokens (NLI) or audio-seconds (SER)")
    _check_graphs(path, name, cfg)
    if isinstance(cfg, SERConfig) and cfg.feature_cache and not cfg.freeze_feature_encoder:
        raise ConfigError(f"{path}: {name}: feature_cache needs freeze_feature_encoder: true "
                          f"(a training CNN's output cannot be cached)")
    if isinstance(cfg, SERConfig) and cfg.split == "emobox" and cfg.label_source != "filename":
        raise ConfigError(f"{path}: {name}: split: emobox labels the clips as the EmoBox fold does (the file-name "
                          f"labels); remove label_source: {cfg.label_source} or choose another split")
    return cfg


def _check_graphs(path: Path, name: str, cfg: TrainConfig) -> None:
    """One graph is captured per batch shape: the shapes must be few, and SER must train on features."""
    if not cfg.cuda_graphs:
        return
    if not cfg.width_step or cfg.batch_budget:
        raise ConfigError(f"{path}: {name}: cuda_graphs needs width_step > 0 (e.g. 16 tokens, 1.0 s) and "
                          f"batch_budget: 0, so that batches come in a few shapes (one graph each)")
    if cfg.batching == "fixed":
        raise ConfigError(f"{path}: {name}: cuda_graphs with batching: fixed is one shape already; "
                          f"use batching: bucket or dynamic")
    if isinstance(cfg, SERConfig) and not cfg.feature_cache:
        raise ConfigError(f"{path}: {name}: cuda_graphs needs feature_cache: true (the waveform path draws "
                          f"SpecAugment spans inside the model, on the host)")


def config_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: TrainConfig | dict) -> str:
    """First 8 hex of sha1 over the sorted resolved config, without fields that don't change results."""
    d = cfg if isinstance(cfg, dict) else config_dict(cfg)
    d = {k: v for k, v in d.items() if k not in NON_RESULT_FIELDS}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
