"""End-to-end NLI runs on the tiny model: complete metrics.json, determinism, resume, clean failures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hw5.train
from hw5.__main__ import main
from hw5.config import config_dict, config_hash, resolve_config
from hw5.contract import data_fingerprint, judge, run_dir, run_key
from hw5.errors import RunRefused
from hw5.run import run_experiment, run_submitted

from conftest import REPO, fast_grid

NLI = ["nli-full", "nli-freeze9", "nli-lastonly", "nli-first9", "nli-prune50"]
TOP_KEYS = {"schema", "experiment", "task", "seed", "config", "config_hash", "classes", "val", "test",
            "test_subsets", "history", "best_epoch", "params", "throughput", "peak_memory_mb",
            "hyperparameters", "variant", "provenance"}
SPLIT_KEYS = {"accuracy", "macro_f1", "weighted_f1", "uar", "per_class", "confusion_matrix", "report", "loss", "n"}
HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds",
                "padding_share", "peak_memory_mb"}


def run(name, seed, tmp_path, grid, **kw):
    return run_experiment(name, seed, smoke=True, results_dir=tmp_path / "results", config_path=grid,
                          checkpoint_dir=tmp_path / "ckpt" / f"{name}-{seed}", **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", NLI)
def test_each_experiment_writes_complete_metrics(name, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("HW5_DATA_DIR", str(data_dir))
    grid = fast_grid(tmp_path)
    m = run(name, 0, tmp_path, grid)
    on_disk = json.loads((tmp_path / "results" / "smoke" / name / "seed-0" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert TOP_KEYS <= set(m) and SPLIT_KEYS <= set(m["test"]) and SPLIT_KEYS <= set(m["val"])
    assert HISTORY_KEYS <= set(m["history"][0]) and m["best_epoch"] >= 1
    assert m["config_hash"] == config_hash(resolve_config(name, True, grid))
    assert m["test"]["n"] == 48 and sum(map(sum, m["test"]["confusion_matrix"])) == 48
    assert set(m["test_subsets"]) == {"hard_hypothesis", "hard_overlap"}
    assert m["throughput"]["unit"] == "tokens" and 0 <= m["throughput"]["padding_share"] < 1
    assert m["provenance"]["versions"]["torch"] and m["provenance"]["host"] and m["provenance"]["gpu"] is None
    assert m["data"] == data_fingerprint(resolve_config(name, True, grid), data_dir)
    assert m["run_key"] == {"experiment": name, "seed": 0, "smoke": True, "config_hash": m["config_hash"],
                            "data": m["data"]["digest"]}
    params = m["params"]
    if name == "nli-full":
        assert params["trainable"] == params["total"]
    elif name in ("nli-freeze9", "nli-lastonly"):
        assert params["trainable"] < params["total"]
    elif name == "nli-prune50":
        assert all(len(h) == 6 for h in m["variant"]["removed_heads"].values())
    elif name == "nli-first9":
        assert m["variant"]["kept_layers"] == 9
    for f in ("config.json", "history.json", "predictions.json"):
        assert (tmp_path / "results" / "smoke" / name / "seed-0" / f).exists()
    assert not (tmp_path / "ckpt" / f"{name}-0").exists()          # removed after success


@pytest.mark.slow
def test_same_seed_same_results_other_seed_differs(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("HW5_DATA_DIR", str(data_dir))
    grid = fast_grid(tmp_path)
    a = run("nli-prune50", 1, tmp_path / "a", grid)
    b = run("nli-prune50", 1, tmp_path / "b", grid)
    c = run("nli-prune50", 2, tmp_path / "c", grid)
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["test"] == b["test"] and a["variant"] == b["variant"]
    assert a["history"][0]["train_loss"] != c["history"][0]["train_loss"]
    assert a["variant"]["removed_heads"] != c["variant"]["removed_heads"]


def interrupted_at_train_step(step: int, monkeypatch, call) -> None:
    """call() with a "USR2" arriving at the given training step (the loop checkpoints and stops there)."""
    from hw5.tasks.nli import NLIData
    original, calls = NLIData.collate, {"n": 0}

    def collate(self, indices, split):
        if split == "train":
            calls["n"] += 1
            if calls["n"] == step:
                hw5.train.STOP.set()
        return original(self, indices, split)
    monkeypatch.setattr(NLIData, "collate", collate)
    try:
        call()
    finally:
        hw5.train.STOP.clear()
        monkeypatch.setattr(NLIData, "collate", original)


def strip_timing(m: dict) -> dict:
    """What must be identical after a resume; the epoch's mean train loss is summed in another order
    across the interruption, so it is compared to 1e-9 relative."""
    keep = ("train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "epoch")
    return {"test": m["test"], "val": m["val"], "best_epoch": m["best_epoch"],
            "history": [{k: row[k] for k in keep} | {"train_loss": pytest.approx(row["train_loss"], rel=1e-9)}
                        for row in m["history"]]}


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard reads the event files (purged steps dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_curves_match(folder: Path, m: dict, reference: Path | None = None) -> None:
    """The run's curves agree with its metrics.json (and log the same steps as the reference run's)."""
    curves = scalars(folder)
    if reference is not None:
        assert [s for s, _ in curves["train/loss"]] == [s for s, _ in scalars(reference)["train/loss"]]
    assert [v for _, v in curves["epoch/val_acc"]] == pytest.approx([row["val_acc"] for row in m["history"]])
    assert [v for _, v in curves["epoch/lr"]] == pytest.approx([row["lr"] for row in m["history"]])
    steps = [s for s, _ in curves["train/loss"]]
    assert steps == sorted(set(steps)) and len(steps) >= 4          # each logged step once, in order
    assert {"train/lr", "train/units_per_s", "epoch/units_per_s", "epoch/padding_share"} <= set(curves)
    assert curves["test/accuracy"] == [(curves["epoch/val_acc"][-1][0], pytest.approx(m["test"]["accuracy"]))]


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_metrics_and_curves(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("HW5_DATA_DIR", str(data_dir))
    grid = fast_grid(tmp_path, nli={"epochs": 2, "log_every": 2})
    reference = run("nli-full", 0, tmp_path / "ref", grid)
    assert_curves_match(tmp_path / "ref" / "results" / "smoke" / "tensorboard" / "nli-full" / "seed-0", reference)
    with pytest.raises(hw5.train.Interrupted, match="epoch 2 step 2"):
        interrupted_at_train_step(8, monkeypatch, lambda: run("nli-full", 0, tmp_path / "x", grid))
    assert (tmp_path / "x" / "ckpt" / "nli-full-0" / "last.pt").exists()
    cfg = resolve_config("nli-full", True, grid)
    key = run_key("nli-full", 0, True, cfg, data_fingerprint(cfg, data_dir))
    assert judge(run_dir(tmp_path / "x" / "results", "nli-full", 0, True), key).state == "missing"
    live = tmp_path / "x" / "results" / "smoke" / "tensorboard" / "nli-full" / "seed-0"
    assert len(scalars(live)["epoch/val_acc"]) == 1                 # the curves were live before the stop
    resumed = run("nli-full", 0, tmp_path / "x", grid)
    assert strip_timing(resumed) == strip_timing(reference)
    assert_curves_match(live, resumed, reference=tmp_path / "ref" / "results" / "smoke" / "tensorboard" / "nli-full"
                        / "seed-0")                                 # one curve: nothing lost, nothing doubled


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_metrics(tmp_path, data_dir):
    grid = fast_grid(tmp_path, nli={"epochs": 2, "train_subset": 192, "checkpoint_every": 2, "log_every": 1})
    env = {**os.environ, "HW5_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), "HW5_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hw5", "run", "nli-full", "--smoke", "--experiments", str(grid)]

    def launch(where: Path):
        return subprocess.Popen(cmd + ["--results", str(where / "results"), "--checkpoint-dir", str(where / "ckpt")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert launch(tmp_path / "ref").wait(timeout=300) == 0
    proc = launch(tmp_path / "kill")
    deadline = time.time() + 300
    while not (tmp_path / "kill" / "ckpt" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "kill" / "results" / "smoke" / "nli-full" / "seed-0" / "metrics.json").exists()
    assert launch(tmp_path / "kill").wait(timeout=300) == 0
    read = lambda p: json.loads((p / "results" / "smoke" / "nli-full" / "seed-0" / "metrics.json").read_text())
    assert strip_timing(read(tmp_path / "kill")) == strip_timing(read(tmp_path / "ref"))
    curves = lambda p: p / "results" / "smoke" / "tensorboard" / "nli-full" / "seed-0"
    assert_curves_match(curves(tmp_path / "kill"), read(tmp_path / "kill"), reference=curves(tmp_path / "ref"))


def test_checkpoint_of_another_config_is_ignored(tmp_path, capsys):
    from hw5.checkpoint import Checkpointer
    import torch
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    Checkpointer(tmp_path, "aaaaaaaa").save(model, opt, sched, {"epoch": 1})
    assert Checkpointer(tmp_path, "aaaaaaaa").load()["state"] == {"epoch": 1}
    assert Checkpointer(tmp_path, "bbbbbbbb").load() is None
    assert "config hash aaaaaaaa != bbbbbbbb" in capsys.readouterr().err
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    assert Checkpointer(tmp_path, "aaaaaaaa").load() is None
    err = capsys.readouterr().err
    assert "ignoring unreadable checkpoint" in err and "damaged or not a checkpoint" in err
    assert "weights_only" not in err      # never the advice to run the file's code


def test_bad_csv_fails_cleanly_with_no_partial_result(tmp_path, data_dir, capsys):
    bad = tmp_path / "data" / "farstail"
    bad.mkdir(parents=True)
    for name in ("Val-word.csv", "Test-word.csv"):
        (bad / name).write_bytes((data_dir / "farstail" / name).read_bytes())
    lines = (data_dir / "farstail" / "Train-word.csv").read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\tentails"
    (bad / "Train-word.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(["run", "nli-full", "--smoke", "--data-dir", str(tmp_path / "data"),
                 "--results", str(tmp_path / "results"), "--experiments", str(fast_grid(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2 and "Train-word.csv:6: unknown label 'entails'" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def _hand_made_result(results: Path, **values) -> Path:
    """A valid metrics.json for smoke nli-full seed 0 (the report's fixture) with `values` set."""
    metrics = json.loads((REPO / "tests" / "fixtures" / "aggregate" / "nli_metrics.json").read_text())
    metrics.update(experiment="nli-full", seed=0, smoke=True, **values)
    path = run_dir(results, "nli-full", 0, smoke=True) / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return path


@pytest.mark.parametrize("content, says", [
    (None, "is stale: made with config 0ld0c0f9, the experiments file now gives"),
    ('{"experiment": "nli-full", ', "is corrupt: "),
])
def test_hw5_run_refuses_a_stale_or_corrupt_result_in_one_line_and_keeps_it(tmp_path, data_dir, capsys,
                                                                             content, says):
    path = _hand_made_result(tmp_path / "results", config_hash="0ld0c0f9")
    if content is not None:
        path.write_text(content)
    before = path.read_bytes()
    code = main(["run", "nli-full", "--smoke", "--data-dir", str(data_dir), "--results", str(tmp_path / "results"),
                 "--experiments", str(fast_grid(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "rerun with --force to replace it" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert path.read_bytes() == before


def test_a_result_from_other_data_is_stale(tmp_path, data_dir, capsys):
    grid = fast_grid(tmp_path)
    now = config_hash(resolve_config("nli-full", True, grid))
    _hand_made_result(tmp_path / "results", config_hash=now, data={"digest": "0123456789ab"})
    code = main(["run", "nli-full", "--smoke", "--data-dir", str(data_dir), "--results", str(tmp_path / "results"),
                 "--experiments", str(grid)])
    assert code == 2 and "made on data 0123456789ab, the data here is now" in capsys.readouterr().err


def test_a_job_that_must_see_a_gpu_fails_before_anything_runs(tmp_path, grid_file):
    if hw5.run.torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = config_dict(resolve_config("nli-full", True, grid_file))
    with pytest.raises(RunRefused, match=r"asked for a GPU but torch .* sees none .* slurm.allow_cpu: true"):
        run_submitted(config, "nli-full", 0, smoke=True, results_dir=tmp_path / "results", require_cuda=True)
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_job_runs_its_submitted_config_when_the_yaml_changed(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("HW5_DATA_DIR", str(data_dir))
    grid = fast_grid(tmp_path)
    submitted = config_dict(resolve_config("nli-full", True, grid))
    (tmp_path / "changed").mkdir()
    changed = fast_grid(tmp_path / "changed", nli={"head_dropout": 0.3})
    m = run_submitted(submitted, "nli-full", 0, smoke=True, results_dir=tmp_path / "results", config_path=changed,
                      checkpoint_dir=tmp_path / "ckpt")
    assert m["config_hash"] == config_hash(submitted) != config_hash(resolve_config("nli-full", True, changed))
    assert m["config"]["head_dropout"] == 0.1
    out = capsys.readouterr().out
    assert "changed since submission" in out and f"running the submitted config {config_hash(submitted)}" in out


@pytest.mark.slow
def test_force_retrains_from_scratch_and_sets_the_old_checkpoint_aside(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("HW5_DATA_DIR", str(data_dir))
    grid = fast_grid(tmp_path, nli={"epochs": 2})
    reference = run("nli-full", 0, tmp_path / "ref", grid)
    hw5.train.STOP.set()    # "USR2" at the first step: a checkpoint is left behind
    try:
        with pytest.raises(hw5.train.Interrupted):
            run("nli-full", 0, tmp_path / "x", grid)
    finally:
        hw5.train.STOP.clear()
    capsys.readouterr()
    forced = run("nli-full", 0, tmp_path / "x", grid, force=True)
    out = capsys.readouterr().out
    assert "set aside as nli-full-0.set-aside-" in out and "resumed from" not in out
    assert list((tmp_path / "x" / "ckpt").glob("nli-full-0.set-aside-*/last.pt"))
    assert strip_timing(forced) == strip_timing(reference)


@pytest.mark.slow
def test_an_unreadable_best_checkpoint_beside_a_good_last_one_starts_over(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("HW5_DATA_DIR", str(data_dir))
    grid = fast_grid(tmp_path, nli={"epochs": 2})
    reference = run("nli-full", 0, tmp_path / "ref", grid)
    with pytest.raises(hw5.train.Interrupted):         # in epoch 2: epoch 1 wrote best.pt
        interrupted_at_train_step(8, monkeypatch, lambda: run("nli-full", 0, tmp_path / "x", grid))
    (tmp_path / "x" / "ckpt" / "nli-full-0" / "best.pt").write_bytes(b"damaged")
    capsys.readouterr()
    again = run("nli-full", 0, tmp_path / "x", grid)
    captured = capsys.readouterr()
    assert "best.pt is missing or unreadable" in captured.err and "training from scratch" in captured.err
    assert "resumed from" not in captured.out
    assert strip_timing(again) == strip_timing(reference)
