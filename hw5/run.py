"""One run: seed -> data -> model -> variant -> train -> test -> metrics.json (atomically, last).

`run(cfg, seed, out_dir)` knows nothing about the grid. `run_experiment(name, seed)` resolves a named
experiment from jobs/experiments.yaml (`hw5 run`); `run_submitted(config, ...)` runs the config a job
carries. Both go through `run_config`, which judges the result on disk with hw5.contract first.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import torch

from hw5 import contract
from hw5.checkpoint import Checkpointer
from hw5.config import ConfigError, TrainConfig, config_dict, config_from_dict, config_hash, grid_path, resolve_config
from hw5.curves import Curves
from hw5.device import cuda_kernel_choices
from hw5.errors import RunRefused, StorageError
from hw5.io import (check_room, checkpoint_root, data_dir as default_data_dir, now_iso, provenance, replace_dir,
                    share_like_umask, write_json_atomic)
from hw5.models.surgery import count_parameters
from hw5.train import evaluate, fit, peak_memory_mb, set_seed

SCHEMA = 1
HYPERPARAMETERS = ("model_name", "epochs", "batch_size", "lr", "head_lr", "weight_decay", "warmup_ratio",
                   "max_grad_norm", "head_dropout", "precision", "max_length", "batching", "pooling",
                   "class_weights", "split", "sample_rate", "max_seconds", "fixed_seconds")


def run_experiment(name: str, seed: int, smoke: bool = False, results_dir: str | Path = "results",
                   data_dir=None, checkpoint_dir=None, config_path=None, force: bool = False,
                   keep_checkpoints: bool = False) -> dict:
    """Run one named experiment of the experiments file for one seed (`hw5 run`).

    Done already (same config and data): returns the result. A stale or corrupt result is refused
    unless `force`, which retrains from scratch (an old checkpoint is set aside, not resumed).
    """
    cfg = resolve_config(name, smoke, config_path)
    try:
        return run_config(cfg, name, seed, smoke, results_dir, data_dir, checkpoint_dir,
                          replace=force, rerun=force, keep_checkpoints=keep_checkpoints)
    except ConfigError as exc:   # found once the model is loaded (layer counts): name the file and experiment
        raise ConfigError(f"{grid_path(config_path)}: experiment {name}: {exc}") from None


def run_submitted(config: dict, name: str, seed: int, smoke: bool = False, results_dir: str | Path = "results",
                  data_dir=None, checkpoint_dir=None, config_path=None, replace: bool = False,
                  require_cuda: bool = False) -> dict:
    """Run the config frozen into a job at submission (jobs/job.py), whatever the YAML says now."""
    cfg = config_from_dict(config, f"the config submitted for {name}")
    _note_config_drift(cfg, name, smoke, config_path)
    return run_config(cfg, name, seed, smoke, results_dir, data_dir, checkpoint_dir,
                      replace=replace, require_cuda=require_cuda)


def _note_config_drift(cfg: TrainConfig, name: str, smoke: bool, config_path) -> None:
    try:
        now = config_hash(resolve_config(name, smoke, config_path))
    except ConfigError as exc:
        now = f"an error ({str(exc).splitlines()[0]})"
    if now != config_hash(cfg):
        print(f"note: {grid_path(config_path)} changed since submission (it now gives {now} for {name}); "
              f"running the submitted config {config_hash(cfg)}", flush=True)


def run_config(cfg: TrainConfig, name: str, seed: int, smoke: bool, results_dir, data_dir, checkpoint_dir,
               replace: bool = False, rerun: bool = False, keep_checkpoints: bool = False,
               require_cuda: bool = False) -> dict:
    """The one entry both ways share: judge what is on disk against the run key, then train."""
    if require_cuda:
        require_cuda_device()
    data = default_data_dir(data_dir)
    out = contract.run_dir(results_dir, name, seed, smoke)
    key = contract.run_key(name, seed, smoke, cfg, contract.data_fingerprint(cfg, data))
    done = _done_or_refused(out, key, replace, rerun)
    if done is not None:
        return done
    default_ckpt = checkpoint_root() / ("smoke" if smoke else "") / name / f"seed-{seed}"
    ckpt = Path(checkpoint_dir) if checkpoint_dir else default_ckpt
    check_room(out, RESULTS_ROOM_MB, "results")
    check_room(ckpt, CHECKPOINT_ROOM_MB["smoke" if smoke else "full"], "checkpoint")
    with run_lock(out, ckpt):
        done = _done_or_refused(out, key, replace, rerun)    # again: another process may just have finished
        if done is not None:
            return done
        if rerun:
            set_aside(ckpt)
        return run(cfg, seed, out, experiment=name, smoke=smoke, data_dir=data, checkpoint_dir=ckpt,
                   keep_checkpoints=keep_checkpoints)


def _done_or_refused(out: Path, key: contract.RunKey, replace: bool, rerun: bool) -> dict | None:
    """The metrics of a run that is done already; RunRefused for a stale or corrupt result kept as is."""
    verdict = contract.judge(out, key)
    if verdict.state == "done" and not rerun:
        print(f"{key.experiment} seed {key.seed}: done already ({out / 'metrics.json'})", flush=True)
        return verdict.metrics
    if verdict.state in ("stale", "corrupt") and not replace:
        raise RunRefused(f"{out / 'metrics.json'} is {verdict.state}: {verdict.detail}; "
                         f"rerun with --force to replace it")
    return None


# Free space a run needs, checked before it starts: its outputs (predictions dominate), and a checkpoint
# (weights + AdamW's two moments, written beside the previous one: ParsBERT-base is ~0.65 GB of fp32).
RESULTS_ROOM_MB = 50
CHECKPOINT_ROOM_MB = {"smoke": 100, "full": 4000}


@contextlib.contextmanager
def run_lock(out: Path, ckpt: Path):
    """One process per run: a second `hw5 run` of the same run says who holds it and stops. The lock
    lives beside the run's checkpoint folder, so a run that fails early leaves nothing in results/."""
    path = ckpt.parent / f".{ckpt.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunRefused(f"{out} is being trained by {holder} (lock {path}); wait for it to finish, "
                             f"or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} since {now_iso()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def require_cuda_device() -> None:
    """A GPU job on a node where torch sees no GPU fails at once instead of training on the CPU."""
    if torch.cuda.is_available():
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise RunRefused(f"this job asked for a GPU but torch {torch.__version__} sees none on {socket.gethostname()} "
                     f"(CUDA_VISIBLE_DEVICES={visible if visible is not None else 'unset'}, CUDA build: "
                     f"{torch.version.cuda or 'none'}); fix the node's CUDA, or set slurm.allow_cpu: true "
                     f"in the profile to train on the CPU")


def set_aside(folder: Path) -> None:
    """A from-scratch rerun never resumes: an existing checkpoint folder is renamed, not deleted."""
    if folder.exists():
        aside = folder.with_name(f"{folder.name}.set-aside-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(aside)
        print(f"note: checkpoint {folder} set aside as {aside.name} (--force starts from scratch)", flush=True)


def task_module(task: str):
    """hw5.tasks.nli or hw5.tasks.ser: each has build, loss_weights, extra_metrics and write_artifacts, and its data
    object implements hw5.train.TaskData (prepare, batches, collate)."""
    if task == "nli":
        from hw5.tasks import nli
        return nli
    from hw5.tasks import ser
    return ser


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_record(device: torch.device) -> dict | None:
    """The GPU model a run trained on (None on the CPU), for metrics.json."""
    if device.type != "cuda":
        return None
    return {"name": torch.cuda.get_device_name(device), "count": torch.cuda.device_count(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


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
    prov["gpu"] = gpu_record(device)
    set_seed(seed)
    task = task_module(cfg.task)
    model, data, variant = task.build(cfg, seed, data_dir)
    fingerprint = contract.data_fingerprint(cfg, data_dir)   # after build: a run may fetch its data
    key = contract.run_key(experiment, seed, smoke, cfg, fingerprint)
    model.to(device)
    if device.type == "cuda":
        cuda_kernel_choices()
    data.prepare()                  # e.g. SER's CNN features, on the device: not inside epoch 1's time
    print(f"{experiment or cfg.task} seed {seed} [{chash}] on {device}: "
          f"{count_parameters(model)['trainable']:,} trainable parameters", flush=True)
    weights = task.loss_weights(data, cfg)
    loss_weights = None if weights is None else weights.to(device)
    # other data is another run: its checkpoint must not be resumed either
    ckpt = Checkpointer(checkpoint_dir or out_dir / ".checkpoint", f"{chash}+{key.data}")
    curves = Curves(contract.curves_dir(out_dir) if cfg.tensorboard else None)
    try:
        result = fit(model, data, cfg, ckpt, device, loss_weights, curves)
        model.load_state_dict(result.best_state)
        val = evaluate(model, data, "val", device, cfg.precision, loss_weights)
        test = evaluate(model, data, "test", device, cfg.precision, loss_weights)
        curves.final("val", val)
        curves.final("test", test)
    finally:
        curves.close()
    metrics = _metrics(cfg, experiment=experiment, seed=seed, smoke=smoke, chash=chash, data=data, val=val,
                       test=test, result=result, model=model, variant=variant, device=device)
    metrics.update(task.extra_metrics(data, test), data=fingerprint, run_key=key.as_dict())
    metrics["provenance"] = {**prov, "finished": now_iso(), "wall_seconds": time.perf_counter() - started}
    _write_outputs(out_dir, cfg, metrics, val, test, data, task)
    if not keep_checkpoints:
        ckpt.clear()
    print(f"{experiment} seed {seed}: test accuracy {test['accuracy']:.4f} macro-F1 {test['macro_f1']:.4f} "
          f"-> {out_dir / 'metrics.json'}", flush=True)
    return metrics


def _metrics(cfg, *, experiment, seed, smoke, chash, data, val, test, result, model, variant, device) -> dict:
    """metrics.json's body, less the task's extras, the data fingerprint and provenance (run() adds them)."""
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


def _write_outputs(out_dir: Path, cfg, metrics: dict, val: dict, test: dict, data, task) -> None:
    """Every output into a staging folder, then one rename: a full disk or a crash leaves no half run."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        task.write_artifacts(data, staging)
        write_json_atomic(staging / "config.json", {"config": config_dict(cfg), "config_hash": metrics["config_hash"]})
        write_json_atomic(staging / "history.json", metrics["history"])
        write_json_atomic(staging / "predictions.json", {"classes": list(data.classes),
                                                         "val": val["predictions"], "test": test["predictions"]})
        write_json_atomic(staging / "metrics.json", metrics)     # its existence means "done"
        share_like_umask(staging)
        replace_dir(staging, out_dir)
    except OSError as exc:
        raise StorageError(f"{out_dir}: the results could not be written ({exc.strerror or exc}); nothing was "
                           f"kept (the checkpoint stays: rerun to finish)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
