"""One run: seed -> data -> model -> variant -> train -> test -> metrics.json (atomically, last).

`run(cfg, seed, out_dir)` knows nothing about the grid; `run_experiment(name, seed)` resolves a named
experiment from jobs/experiments.yaml and calls it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from hw5.checkpoint import Checkpointer
from hw5.config import TrainConfig, config_dict, config_hash, resolve_config
from hw5.io import checkpoint_root, data_dir as default_data_dir, now_iso, provenance, write_json_atomic
from hw5.models.surgery import count_parameters
from hw5.train import cuda_kernel_choices, evaluate, fit, peak_memory_mb, set_seed

SCHEMA = 1
HYPERPARAMETERS = ("model_name", "epochs", "batch_size", "lr", "head_lr", "weight_decay", "warmup_ratio",
                   "max_grad_norm", "head_dropout", "precision", "max_length", "batching", "pooling",
                   "class_weights", "split", "sample_rate", "max_seconds", "fixed_seconds")


def run_dir(results_dir: str | Path, experiment: str, seed: int) -> Path:
    return Path(results_dir) / experiment / f"seed-{seed}"


def read_metrics(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_status(name: str, seed: int, smoke: bool = False, results_dir: str | Path = "results",
               config_path=None) -> str:
    """"done" (metrics.json with this config's hash), "stale" (another hash) or "missing"."""
    metrics = read_metrics(run_dir(results_dir, name, seed))
    if metrics is None:
        return "missing"
    return "done" if metrics.get("config_hash") == config_hash(resolve_config(name, smoke, config_path)) \
        else "stale"


def run_experiment(name: str, seed: int, smoke: bool = False, results_dir: str | Path = "results",
                   data_dir=None, checkpoint_dir=None, config_path=None, force: bool = False,
                   keep_checkpoints: bool = False) -> dict:
    """Run one named experiment for one seed (skipped when already done with the same config)."""
    cfg = resolve_config(name, smoke, config_path)
    out = run_dir(results_dir, name, seed)
    done = read_metrics(out)
    if done and done.get("config_hash") == config_hash(cfg) and not force:
        print(f"{name} seed {seed}: done already ({out / 'metrics.json'})", flush=True)
        return done
    ckpt = Path(checkpoint_dir) if checkpoint_dir else checkpoint_root() / name / f"seed-{seed}"
    return run(cfg, seed, out, experiment=name, smoke=smoke, data_dir=default_data_dir(data_dir),
               checkpoint_dir=ckpt, keep_checkpoints=keep_checkpoints)


def task_module(task: str):
    if task == "nli":
        from hw5 import nli
        return nli
    from hw5 import ser
    return ser


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def limit_threads() -> None:
    """Use only the CPUs this job was given: oversubscribed OpenMP threads spin and crawl."""
    n = os.environ.get("HW5_NUM_THREADS") or os.environ.get("SLURM_CPUS_PER_TASK")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def run(cfg: TrainConfig, seed: int, out_dir: Path, experiment: str = "", smoke: bool = False,
        data_dir: Path = Path("data"), checkpoint_dir: Path | None = None, keep_checkpoints: bool = False) -> dict:
    """Train and evaluate; metrics.json is written last, so it exists exactly when the run is done."""
    limit_threads()
    started, device, chash = time.perf_counter(), pick_device(), config_hash(cfg)
    prov = provenance(str(device) if device.type == "cpu" else torch.cuda.get_device_name(device))
    set_seed(seed)
    task = task_module(cfg.task)
    model, data, variant = task.build(cfg, seed, data_dir)
    model.to(device)
    if device.type == "cuda":
        cuda_kernel_choices()
    print(f"{experiment or cfg.task} seed {seed} [{chash}] on {device}: "
          f"{count_parameters(model)['trainable']:,} trainable parameters", flush=True)
    weights = task.loss_weights(data, cfg) if hasattr(task, "loss_weights") else None
    loss_weights = None if weights is None else weights.to(device)
    ckpt = Checkpointer(checkpoint_dir or out_dir / ".checkpoint", chash)
    result = fit(model, data, cfg, ckpt, device, loss_weights)
    model.load_state_dict(result.best_state)
    val = evaluate(model, data, "val", device, cfg.precision, loss_weights)
    test = evaluate(model, data, "test", device, cfg.precision, loss_weights)
    metrics = _metrics(cfg, experiment, seed, smoke, chash, data, val, test, result, model, variant, device)
    metrics.update(task.extra_metrics(data, test))
    metrics["provenance"] = {**prov, "finished": now_iso(), "wall_seconds": time.perf_counter() - started}
    if hasattr(task, "write_artifacts"):
        task.write_artifacts(data, out_dir)
    _write_outputs(out_dir, cfg, metrics, val, test, data)
    if not keep_checkpoints:
        ckpt.clear()
    print(f"{experiment} seed {seed}: test accuracy {test['accuracy']:.4f} macro-F1 {test['macro_f1']:.4f} "
          f"-> {out_dir / 'metrics.json'}", flush=True)
    return metrics


def _metrics(cfg, experiment, seed, smoke, chash, data, val, test, result, model, variant, device) -> dict:
    seconds = result.train_seconds
    return {
        "schema": SCHEMA, "experiment": experiment, "task": cfg.task, "seed": seed, "smoke": smoke,
        "config": config_dict(cfg), "config_hash": chash, "classes": list(data.classes),
        "val": _public(val), "test": _public(test),
        "history": result.history, "best_epoch": result.best_epoch,
        "params": count_parameters(model),
        "throughput": {"examples_per_s": result.examples / seconds if seconds else 0.0,
                       "units_per_s": result.units / seconds if seconds else 0.0, "unit": data.unit,
                       "padding_share": 1 - result.units / result.padded_units if result.padded_units else 0.0,
                       "train_seconds": seconds, "cuda_graphs": result.cuda_graphs},
        "peak_memory_mb": peak_memory_mb(device),
        "hyperparameters": {k: getattr(cfg, k) for k in HYPERPARAMETERS if hasattr(cfg, k)} | {"seed": seed},
        "variant": variant,
    }


def _public(split_metrics: dict) -> dict:
    return {k: v for k, v in split_metrics.items() if k != "predictions"}


def _write_outputs(out_dir: Path, cfg, metrics: dict, val: dict, test: dict, data) -> None:
    write_json_atomic(out_dir / "config.json", {"config": config_dict(cfg), "config_hash": metrics["config_hash"]})
    write_json_atomic(out_dir / "history.json", metrics["history"])
    write_json_atomic(out_dir / "predictions.json", {"classes": list(data.classes),
                                                     "val": val["predictions"], "test": test["predictions"]})
    write_json_atomic(out_dir / "metrics.json", metrics)     # last: its existence means "done"
