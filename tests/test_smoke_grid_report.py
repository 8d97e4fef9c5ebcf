"""The real chain on a small smoke grid: launcher (local) -> metrics.json -> aggregate.py -> report."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, fast_grid

sys.path.insert(0, str(REPO))
import aggregate  # noqa: E402
from hw5.config import load_grid  # noqa: E402


@pytest.mark.slow
def test_smoke_grid_through_the_launcher_ends_in_a_report(tmp_path, data_dir):
    grid = fast_grid(tmp_path, ser={"synthetic_clips": 150, "epochs": 1})
    results = tmp_path / "results"
    launch = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "launch.py"), "--only", "nli-full,nli-prune50,ser-mean,ser-noweight",
         "--seeds", "0", "--smoke", "--cluster", "local", "--experiments", str(grid),
         "--results", str(results), "--data-dir", str(data_dir), "--checkpoints", str(tmp_path / "ckpt")],
        capture_output=True, text=True, timeout=900)
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    tree = results / "smoke"
    assert len(list(tree.glob("*/seed-*/metrics.json"))) == 4
    assert not list(results.glob("*/seed-*/metrics.json"))        # never beside full runs
    code = aggregate.main(["--results", str(results), "--experiments", str(grid), "--seeds", "0", "--smoke",
                           "--data-dir", str(data_dir)])
    assert code == 0
    report = (tree / "report.md").read_text(encoding="utf-8")
    expected = len(load_grid(grid).experiments)                     # one seed of every experiment
    assert "nli-full" in report and "ser-noweight" in report and f"Runs used: **4 of {expected}**" in report
    findings = report[report.index("## Findings"):report.index("## Published results beside ours")]
    assert "describe the pipeline, not the study" in findings          # smoke runs say so
    assert "**The imbalance remedy.**" in findings and "**`nli-prune50`**" in findings
    assert "One seed pair gives no interval" in findings                # one seed: no conclusion drawn
    assert (tree / "tensorboard" / "ser-mean" / "seed-0").is_dir()    # live curves beside, not inside, the runs
    assert "judged against the experiments file's current config hash and the data fingerprint" in report
    for target in re.findall(r"\]\(([^)#]+)\)", report):
        if not target.startswith("http"):
            assert (tree / target).exists(), target
    assert (tree / "report.ipynb").exists() and list((tree / "plots").glob("*.png"))
