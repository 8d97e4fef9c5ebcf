"""Sweeps: a hyper-parameter grid inside an experiment of the experiments file, expanded to points that
are experiments of their own; chosen in the report by validation, never by test; bad input refused in
one line each; and a tiny sweep end to end through the launcher and aggregate.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import experiments_file
from launch_support import REPO, launch, launcher_env, metrics

sys.path.insert(0, str(REPO))
import aggregate  # noqa: E402
from hw5.config import ConfigError, config_hash, load_grid, resolve_config  # noqa: E402
from test_aggregate import make_run  # noqa: E402

SWEEP = {"lr": [2.0e-5, 3.0e-5, 5.0e-5], "epochs": [3, 4]}


def grid_with(tmp_path: Path, sweep, experiment: str = "nli-full", **changes) -> Path:
    grid = experiments_file()
    grid["experiments"][experiment]["sweep"] = sweep
    grid["experiments"][experiment].update(changes)
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_a_sweep_expands_to_named_points_after_its_experiment(tmp_path):
    grid = load_grid(grid_with(tmp_path, SWEEP))
    start = grid.experiments.index("nli-full")
    points = grid.experiments[start + 1:start + 6]
    assert points == ["nli-full@lr=2e-05,epochs=3", "nli-full@lr=2e-05,epochs=4", "nli-full@lr=3e-05,epochs=4",
                      "nli-full@lr=5e-05,epochs=3", "nli-full@lr=5e-05,epochs=4"]
    # the point equal to the declared default (lr 3e-5, 3 epochs) is nli-full itself, not a second run
    assert grid.sweeps["nli-full"].default_point == "nli-full@lr=3e-05,epochs=3" and grid.sweeps["nli-full"].size == 6
    configs = {p: grid.resolve(p) for p in ["nli-full", *points]}
    assert len({config_hash(c) for c in configs.values()}) == 6           # each its own hash, so its own key
    assert (configs[points[-1]].lr, configs[points[-1]].epochs) == (5e-5, 4)
    assert grid.tasks[points[0]] == "nli" and resolve_config(points[0], path=grid.path).lr == 2e-5
    # the swept values win over the smoke overlay: they are what tells the points apart
    assert grid.resolve(points[0], smoke=True).lr == 2e-5 and grid.resolve("nli-full", smoke=True).lr != 2e-5


def test_the_shipped_grid_has_no_sweep_but_a_commented_example():
    assert load_grid().sweeps == {}
    assert "# sweep:" in (REPO / "jobs" / "experiments.yaml").read_text()


@pytest.mark.parametrize("sweep, says", [
    ({"lrr": [1e-5]}, "unknown key 'lrr' in experiments.nli-full.sweep; did you mean 'lr'?"),
    ({"lr": []}, "experiments.nli-full.sweep.lr is an empty list: give it one value or more"),
    ({"lr": 1e-5}, "experiments.nli-full.sweep.lr must be a list of values"),
    ({"lr": [1e-5, 1e-5]}, "experiments.nli-full.sweep.lr lists a value twice"),
    ({"epochs": [0, 3]}, "nli-full@epochs=0.epochs is 0; it must be"),
    ({"epochs": ["three"]}, "experiments.nli-full.sweep.epochs must be int, got str 'three'"),
    ({"task": ["ser"]}, "a sweep cannot change 'task'"),
    ([1, 2], "experiments.nli-full.sweep must map fields to lists of values"),
    ({"batching": ["a/b"]}, "cannot be part of a folder name"),
])
def test_bad_sweep_input_is_one_line(tmp_path, sweep, says):
    with pytest.raises(ConfigError) as error:
        load_grid(grid_with(tmp_path, sweep))
    assert says in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_the_launcher_selects_a_sweep_and_says_how_many_points_it_expands_to(tmp_path):
    out = launch(["--only", "nli-full@*", "--seeds", "0,1", "--smoke", "--cluster", "local", "--dry-run",
                  "--experiments", str(grid_with(tmp_path, SWEEP)), "--results", str(tmp_path / "r")],
                 launcher_env(tmp_path / "cache", tmp_path))
    assert out.returncode == 0, out.stdout
    assert ("sweep nli-full: 6 points (lr 3 x epochs 2); nli-full@lr=3e-05,epochs=3 is the declared default, "
            "run as nli-full; 5 selected here") in out.stdout
    assert out.stdout.count(" submit\n") == 10 and "total: 10 missing" in out.stdout, out.stdout
    one = launch(["--only", "nli-full@lr=2e-05,epochs=4,nli-freeze9", "--seeds", "0", "--smoke", "--cluster", "local",
                  "--dry-run", "--experiments", str(grid_with(tmp_path, SWEEP)), "--results", str(tmp_path / "r")],
                 launcher_env(tmp_path / "cache", tmp_path))
    assert one.returncode == 0 and "total: 2 missing" in one.stdout, one.stdout     # a point's commas are its own
    assert "nli-full@lr=2e-05,epochs=4    0" in one.stdout and "nli-freeze9" in one.stdout


def test_the_report_chooses_by_validation_even_where_test_would_choose_another(tmp_path, monkeypatch):
    monkeypatch.setenv("HW5_DATA_DIR", str(tmp_path / "no-data"))   # hand-made runs: judged by config only
    grid = grid_with(tmp_path, {"lr": [1.0e-5, 5.0e-5]})
    results = tmp_path / "results"
    # validation prefers lr=5e-5; test would prefer lr=1e-5: the report must follow validation
    scores = {"nli-full": (0.50, 0.50), "nli-full@lr=1e-05": (0.55, 0.80), "nli-full@lr=5e-05": (0.70, 0.60)}
    for experiment, (val, test) in scores.items():
        for seed, wiggle in ((0, -0.01), (1, 0.01)):
            make_run(results, experiment, seed, grid, val__macro_f1=val + wiggle, test__macro_f1=test + wiggle)
    assert aggregate.main(["--results", str(results), "--experiments", str(grid), "--seeds", "0,1"]) == 0
    table = (results / "tables" / "sweep_nli-full.csv").read_text()
    chosen = [line for line in table.splitlines()[1:] if line.endswith(",True")]
    assert len(chosen) == 1 and "nli-full@lr=5e-05" in chosen[0], table
    report = (results / "report.md").read_text()
    assert "### Sweep `nli-full`" in report and "**chosen** (validation)" in report
    findings = report[report.index("## Findings"):report.index("## Published results beside ours")]
    assert ("**Sweep `nli-full`** (3 of 3 points with results). Validation macro-F1 chooses lr=5e-05 "
            "(0.700 ± 0.014); on test it scores 0.600 ± 0.014, against 0.500 ± 0.014 for the declared default "
            "`nli-full`: +0.100") in findings, findings
    assert "The test score of the chosen point was not used to choose it" in findings
    assert (results / "plots" / "sweep_nli-full.png").is_file()


@pytest.mark.slow
def test_a_tiny_sweep_runs_end_to_end_through_the_launcher_and_aggregate(tmp_path, data_dir):
    grid = grid_with(tmp_path, {"head_lr": [2.0e-3, 3.0e-3]})
    results = tmp_path / "results"
    env = launcher_env(tmp_path / "cache", data_dir)
    out = launch(["--only", "nli-full@*", "--seeds", "0,1", "--smoke", "--cluster", "local", "--experiments", str(grid),
                  "--results", str(results), "--checkpoints", str(tmp_path / "ckpt")], env, timeout=900)
    assert out.returncode == 0 and "4 ok, 0 failed" in out.stdout, out.stdout
    for point in ("nli-full@head_lr=0.002", "nli-full@head_lr=0.003"):
        for seed in (0, 1):
            m = metrics(results, point, seed)
            assert m["config"]["head_lr"] == float(point.split("=")[1]) and m["experiment"] == point
    report = subprocess.run([sys.executable, str(REPO / "aggregate.py"), "--smoke", "--results", str(results),
                             "--experiments", str(grid), "--seeds", "0,1"], capture_output=True, text=True,
                            timeout=600)
    assert report.returncode == 0, report.stderr
    text = (results / "smoke" / "report.md").read_text()
    assert "### Sweep `nli-full`" in text and text.count("**chosen** (validation)") == 1
