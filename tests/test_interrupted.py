"""A run the user stops is `interrupted`, not failed: Ctrl-C (a real SIGINT to the launcher's process
group, as a terminal sends it) or SIGTERM of the local launcher; the state; a plain relaunch resumes.
The SLURM side (scancel after the start, Ctrl-C of `--wait`) is in test_slurm_cluster.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch_support import (LAUNCH, cmdline, job_log, launch, launcher_env, latest_record, metrics, status_rows,
                            wait_until, write_grid)

pytestmark = pytest.mark.slow
RUN_TIMEOUT_S = 400


def _start_in_its_own_group(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """The launcher as a terminal's foreground job: its own process group, which Ctrl-C signals whole."""
    return subprocess.Popen([sys.executable, str(LAUNCH), *args], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _ours(results: Path) -> list[str]:
    """Processes still running anything of this results folder (jobs, controllers, runs)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        text = cmdline(int(stat.parent.name))
        if str(results) in text and "pytest" not in text:
            found.append(text)
    return found


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_local_launcher_interrupts_its_runs_and_a_relaunch_resumes_them(tmp_path, data_dir, stop):
    grid = write_grid(tmp_path / "experiments.yaml")
    results = tmp_path / "results"
    args = ["--only", "nli-full", "--seeds", "0,1", "--smoke", "--cluster", "local", "--experiments", str(grid),
            "--results", str(results), "--checkpoints", str(tmp_path / "ckpt")]
    env = launcher_env(tmp_path / "cache", data_dir)
    log = tmp_path / "launch.log"
    proc = _start_in_its_own_group(args, env, log)
    try:
        records = [wait_until(lambda s=s: latest_record(results, "nli-full", s), 120, "both local jobs") for s in (0, 1)]
        for record in records:
            wait_until(lambda r=record: "trainable parameters" in job_log(r), RUN_TIMEOUT_S, "training to start")
        if stop == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)       # a terminal's Ctrl-C: the whole foreground group
        else:
            proc.send_signal(signal.SIGTERM)         # a kill of the launcher alone
        assert proc.wait(timeout=180) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    said = log.read_text()
    assert "Traceback" not in said and "KeyboardInterrupt" not in said, said
    [line] = [x for x in said.splitlines() if x.startswith("stopped:")]
    assert line.startswith("stopped: 2 run(s) interrupted (nli-full/seed-0, nli-full/seed-1), their checkpoints "
                           "kept") and "Run the same command again to resume" in line, said
    assert _ours(results) == []                      # nothing left running
    status = launch([*args, "--status"], env)
    assert {key: state for key, (state, _) in status_rows(status.stdout).items()} == \
        {("nli-full", 0): "interrupted", ("nli-full", 1): "interrupted"}, status.stdout
    again = launch(args, env, timeout=RUN_TIMEOUT_S)
    assert again.returncode == 0, again.stdout
    for seed in (0, 1):
        assert "resumed from" in job_log(latest_record(results, "nli-full", seed))
        assert metrics(results, "nli-full", seed)["seed"] == seed
