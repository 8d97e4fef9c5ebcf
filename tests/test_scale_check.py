"""jobs/scale_check.py: the synthetic trees it times are real results trees (the launcher and the report
count their runs as done), and its report has a row per size. No timing is asserted here."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from launch_support import REPO, launch, launcher_env, status_rows

pytestmark = pytest.mark.slow


def test_scale_check_times_the_three_commands_on_trees_the_launcher_reads_as_done(tmp_path, data_dir):
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "scale_check.py"), "--runs", "24,48", "--out",
                          str(tmp_path), "--data-dir", str(data_dir), "--templates",
                          str(REPO / "tests" / "fixtures" / "aggregate")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads((tmp_path / "scale_check.json").read_text())["rows"]
    assert [r["runs"] for r in rows] == [24, 48] and all(r[k]["seconds"] > 0 for r in rows
                                                        for k in ("status", "dry_run", "aggregate"))
    status = launch(["--all", "--smoke", "--results", str(tmp_path / "tree-48"), "--seeds", "0-3", "--status"],
                    launcher_env(tmp_path / "cache", data_dir))
    states = {state for state, _ in status_rows(status.stdout).values()}
    assert states <= {"done", "missing"} and "done" in states, status.stdout
    assert "| 48 | 4 |" in (tmp_path / "scale_check.md").read_text()
