"""The local executor for real (the path of `make demo`): smoke runs, a failing run and its traceback,
--retry-failed, a changed config, USR2 + resume, packed jobs and lanes equal to separate processes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch_support import (BROKEN, REPO, comparable, farstail_dir, job_log, launch, launch_and_interrupt,
                            launcher_env, metrics, records, result_part, scratch_dir, status_rows, write_grid)

sys.path.insert(0, str(REPO))
from jobs.pack import room_for_another  # noqa: E402

RUN_TIMEOUT_S = 400     # smoke runs on a busy 2-core machine, with margin


# ---------------------------------------------------------------- the local executor (make demo)

@pytest.fixture(scope="module")
def local():
    data = farstail_dir()
    if data is None:
        pytest.skip("FarsTail not found: set HW5_DATA_DIR to a folder holding farstail/")
    with scratch_dir("hw5-local-test-") as root:
        env = launcher_env(Path(os.environ.get("HW5_CACHE_DIR", root / "cache")), data)
        grid = write_grid(root / "experiments.yaml")
        base = ["--smoke", "--experiments", str(grid), "--cluster", "local", "--checkpoints", str(root / "ckpt")]
        yield {"root": root, "env": env, "base": base, "results": root / "results", "grid": grid}


def _local_args(local, *extra, results=None):
    return [*local["base"], "--results", str(results or local["results"]), *extra]


LAUNCHED = ["--all", "--only", f"nli-full,{BROKEN}", "--seeds", "0"]


@pytest.fixture(scope="module")
def launched(local):
    """nli-full and the broken experiment (seed 0) launched once, locally: the runs the tests below read."""
    return launch(_local_args(local, *LAUNCHED), local["env"], timeout=RUN_TIMEOUT_S)


@pytest.mark.slow
def test_local_launch_runs_waits_and_reports_a_failure_with_its_traceback(local, launched):
    only, out = LAUNCHED, launched
    assert out.returncode == 1, out.stdout          # one run failed
    assert "1 ok, 1 failed (nli-broken/seed-0)" in out.stdout, out.stdout
    assert "keep_layers is 50, but the model" in out.stdout, out.stdout   # the failure is shown, not hidden
    assert metrics(local["results"], "nli-full", 0)["smoke"] is True
    status = launch(_local_args(local, "--status", *only), local["env"])
    assert re.search(r"nli-full\s+0\s+done", status.stdout) and re.search(rf"{BROKEN}\s+0\s+failed", status.stdout)
    assert "ConfigError: keep_layers is 50" in status.stdout, status.stdout
    again = launch(_local_args(local, *only), local["env"])
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout


@pytest.mark.slow
def test_local_retry_failed_reruns_only_the_failed_run(local, launched):
    before = records(local["results"])
    out = launch(_local_args(local, "--retry-failed", "--only", f"nli-full,{BROKEN}", "--seeds", "0"),
                 local["env"], timeout=RUN_TIMEOUT_S)
    assert out.returncode == 1 and f"started {BROKEN}/seed-0" in out.stdout, out.stdout
    assert "started nli-full" not in out.stdout
    assert [(r["experiment"], r["seed"]) for r in records(local["results"])[len(before):]] == [(BROKEN, 0)]


@pytest.mark.slow
def test_changed_config_makes_a_run_stale_and_only_force_reruns_it(local, launched):
    assert metrics(local["results"], "nli-full", 0), launched.stdout
    grid = yaml.safe_load(local["grid"].read_text())
    grid["experiments"]["nli-full"]["head_dropout"] = 0.2     # a field that changes results
    changed = local["root"] / "changed.yaml"
    changed.write_text(yaml.safe_dump(grid, sort_keys=False))
    base = [a if a != str(local["grid"]) else str(changed) for a in _local_args(local)]
    plain = launch([*base, "--only", "nli-full", "--seeds", "0", "--dry-run"], local["env"])
    assert re.search(r"nli-full\s+0\s+stale .*skip: stale \(re-run with --force\)", plain.stdout), plain.stdout
    forced = launch([*base, "--only", "nli-full", "--seeds", "0", "--dry-run", "--force"], local["env"])
    assert re.search(r"nli-full\s+0\s+stale .*submit$", forced.stdout, re.M), forced.stdout


@pytest.mark.slow
def test_usr2_checkpoints_requeues_and_resumes_to_the_same_metrics(local, launched):
    reference = metrics(local["results"], "nli-full", 0)
    assert reference, launched.stdout
    results = local["root"] / "results-preempted"
    record = launch_and_interrupt(_local_args(local, "--only", "nli-full", "--seeds", "0", results=results),
                                  local["env"], local["root"] / "preempt.log", results, "nli-full",
                                  lambda log: "trainable parameters" in log, "training to start", RUN_TIMEOUT_S)
    text = job_log(record)
    assert "checkpoint saved after USR2" in text and "resumed from" in text, text
    assert comparable(metrics(results, "nli-full", 0)) == pytest.approx(comparable(reference), rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------- packed jobs

@pytest.fixture(scope="module")
def packed(local):
    """A grid whose SER smoke runs are small too; FarsTail, the tiny models and the cache as above."""
    grid = yaml.safe_load(local["grid"].read_text())
    grid["smoke"]["ser"].update(synthetic_clips=120, epochs=2)
    path = local["root"] / "packed.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    base = ["--smoke", "--experiments", str(path), "--cluster", "local", "--seeds", "0"]
    return {**local, "base": base}


def _packed_args(packed, name: str, *extra):
    root = packed["root"]
    return [*packed["base"], "--results", str(root / name), "--checkpoints", str(root / f"ckpt-{name}"), *extra]


PACKED_RUNS = ["nli-full", "nli-freeze9", "ser-mean", "ser-fixedpad"]


@pytest.fixture(scope="module")
def alone(packed) -> Path:
    """The packed tests' runs, each a job of its own: what a pack's runs must equal."""
    out = launch(_packed_args(packed, "alone", "--only", ",".join(PACKED_RUNS)), packed["env"], timeout=RUN_TIMEOUT_S)
    assert out.returncode == 0 and "4 ok, 0 failed" in out.stdout, out.stdout
    return packed["root"] / "alone"


@pytest.mark.slow
def test_packed_runs_match_separate_processes_bit_for_bit_and_a_failure_stays_its_own(packed, alone):
    runs = PACKED_RUNS
    together = launch(_packed_args(packed, "packed", "--only", ",".join(runs + [BROKEN]), "--pack", "3"),
                      packed["env"], timeout=RUN_TIMEOUT_S)
    assert together.returncode == 1 and "5 run(s) locally in 2 packed jobs" in together.stdout, together.stdout
    assert "4 ok, 1 failed (nli-broken/seed-0)" in together.stdout, together.stdout
    # the second run of each pack got its weights, data and (SER) CNN features from the pack's first run
    assert "pretrained hit" in together.stdout and "cnn-features hit" in together.stdout, together.stdout
    for name in runs:
        first, second = metrics(alone, name, 0), metrics(packed["root"] / "packed", name, 0)
        assert result_part(second) == result_part(first), name
    status = status_rows(launch(_packed_args(packed, "packed", "--status", "--only", ",".join(runs + [BROKEN])),
                                packed["env"]).stdout)
    assert {k: v[0] for k, v in status.items()} == {**{(r, 0): "done" for r in runs}, (BROKEN, 0): "failed"}
    assert "ConfigError: keep_layers is 50" in status[(BROKEN, 0)][1]      # its own traceback, from the pack book


@pytest.mark.slow
def test_a_requeued_pack_skips_its_finished_runs_and_resumes_the_interrupted_one(packed, alone):
    reference = metrics(alone, "nli-freeze9", 0)
    results = packed["root"] / "requeued"
    record = launch_and_interrupt(_packed_args(packed, "requeued", "--only", "nli-full,nli-freeze9", "--pack", "2"),
                                  packed["env"], packed["root"] / "requeued.log", results, "nli-freeze9",
                                  lambda log: log.count("trainable parameters") == 2,
                                  "the pack's second run to train", RUN_TIMEOUT_S)
    text = job_log(record)
    assert "nli-full seed 0: done already" in text and "resumed from" in text, text
    assert comparable(metrics(results, "nli-freeze9", 0)) == pytest.approx(comparable(reference), rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_runs_of_a_pack_at_once_each_in_a_lane_match_separate_processes(packed, alone):
    runs = ["nli-full", "nli-freeze9"]
    out = launch(_packed_args(packed, "lanes", "--only", ",".join(runs + [BROKEN]), "--pack", "3",
                              "--runs-per-gpu", "2"), packed["env"], timeout=RUN_TIMEOUT_S)
    assert out.returncode == 1 and "2 ok, 1 failed (nli-broken/seed-0)" in out.stdout, out.stdout
    assert "lane 0 started" in out.stdout and "lane 1 started" in out.stdout, out.stdout
    assert {"[lane 0]", "[lane 1]"} <= set(re.findall(r"\[lane \d\]", out.stdout))        # both trained
    for name in runs:
        assert result_part(metrics(packed["root"] / "lanes", name, 0)) == \
            result_part(metrics(alone, name, 0)), name
    status = status_rows(launch(_packed_args(packed, "lanes", "--status", "--only", ",".join(runs + [BROKEN])),
                                packed["env"]).stdout)
    assert status[(BROKEN, 0)][0] == "failed" and "ConfigError: keep_layers is 50" in status[(BROKEN, 0)][1]


@pytest.mark.slow
def test_usr2_reaches_every_lane_and_the_pack_resumes(packed, alone):
    reference = {r: metrics(alone, r, 0) for r in ("nli-full", "nli-freeze9")}
    results = packed["root"] / "lanes-requeued"
    record = launch_and_interrupt(_packed_args(packed, "lanes-requeued", "--only", "nli-full,nli-freeze9", "--pack",
                                               "2", "--runs-per-gpu", "2"),
                                  packed["env"], packed["root"] / "lanes-requeued.log", results, "nli-freeze9",
                                  lambda log: log.count("trainable parameters") == 2, "both lanes training",
                                  RUN_TIMEOUT_S)     # USR2 to the job's own process: it forwards to its lanes
    text = job_log(record)
    assert text.count("checkpoint saved after USR2") == 2 and text.count("resumed from") == 2, text
    for name, ref in reference.items():
        assert comparable(metrics(results, name, 0)) == pytest.approx(comparable(ref), rel=1e-6, abs=1e-9), name


def test_lanes_start_only_while_the_gpu_has_room_for_one_more():
    assert room_for_another(used_mb=20_000, total_mb=81_000, lanes_running=1)       # 20 GB used, 61 free
    assert not room_for_another(used_mb=60_000, total_mb=81_000, lanes_running=2)   # 30 GB each, 21 free
    assert room_for_another(used_mb=60_000, total_mb=141_000, lanes_running=2)


@pytest.mark.slow
def test_grid_check_times_a_packed_slice_end_to_end_and_reports_it(packed):
    results = packed["root"] / "grid-check"
    out = subprocess.run(["bash", str(REPO / "slurm" / "grid_check.sh"), "--tiny", "--only", "nli-full,ser-mean",
                          "--experiments", str(packed["root"] / "packed.yaml"), "--results", str(results),
                          "--bench", str(results / "no-bench.json")], env=packed["env"], timeout=RUN_TIMEOUT_S,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert out.returncode == 0, out.stdout
    check = json.loads((results / "grid_check.json").read_text())
    assert sorted(r["experiment"] for r in check["runs"]) == ["nli-full", "ser-mean"]
    assert 0 < check["device_seconds"] and 0 < check["wall_seconds"] and 0 < check["not_training_share"] < 1
    assert check["grid_device_seconds"] == pytest.approx(check["device_seconds"] * check["seeds_in_grid"])
    assert check["bench_estimate_hours"] is None and "Bench estimate: none here" in (results / "grid_check.md").read_text()
    assert "running 2 run(s) locally" in out.stdout and (results / "smoke" / "report.md").is_file()
