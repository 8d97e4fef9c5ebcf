"""Helpers shared by test_launch.py and test_slurm_cluster.py: a tiny grid, running the launcher."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from conftest import experiments_file, find_data_dir as farstail_dir  # noqa: F401 (one finder for every test module)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jobs.scheduler import cmdline, descendants  # noqa: E402,F401  (the launcher's own process reading)

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "jobs" / "launch.py"
BROKEN = "nli-broken"   # fails at run time (after submission): keeps 50 of the model's 12 layers


def write_grid(path: Path) -> Path:
    """The real experiments file with a smaller smoke overlay (seconds per run) plus a broken run."""
    grid = experiments_file()
    # 8 steps per epoch: long enough to be interrupted mid-training, short enough for 2 cores
    grid["smoke"]["nli"].update(train_subset=128, eval_subset=60, batch_size=16, epochs=2)
    grid["experiments"][BROKEN] = {"task": "nli", "description": "fails on the node", "keep_layers": 50}
    path.write_text(yaml.safe_dump(grid, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def scratch_dir(prefix: str):
    """A private temp folder outside /tmp/pytest-of-<user>: pytest prunes old session folders there,
    and other sessions on a shared machine would delete it under running jobs. Removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def slurm_problem(env: dict | None = None) -> str | None:
    """None when the cluster of env's SLURM_CONF answers (controller and accounting); else why not."""
    if shutil.which("sbatch") is None:
        return "sbatch not found"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15, env=env)
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=15, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scontrol/sacct did not answer ({exc})"
    if " is UP" not in ping.stdout:
        return f"slurmctld is not up ({ping.stdout.strip() or ping.stderr.strip()})"
    if acct.returncode != 0:
        return f"sacct fails (slurmdbd down?): {acct.stderr.strip()}"
    return None


def launcher_env(cache_dir: Path, data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HW5_EXPERIMENTS", "HW5_PROFILE")}
    env.update(HW5_DATA_DIR=str(data_dir), HW5_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1")
    return env


def launch(args: list[str], env: dict, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python jobs/launch.py ARGS`; output is stdout+stderr (shown when an assert fails)."""
    return subprocess.run([sys.executable, str(LAUNCH), *args], env=env, cwd=cwd, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_launch(args: list[str], env: dict, log: Path, cwd: Path | None = None) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, str(LAUNCH), *args], env=env, cwd=cwd,
                            stdout=handle, stderr=subprocess.STDOUT, text=True)


def wait_until(predicate, timeout: float, what: str, poll: float = 1.0):
    """Poll until predicate() is truthy; fail the test (not hang) after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def launch_and_interrupt(args: list[str], env: dict, log: Path, results: Path, experiment: str, ready,
                         what: str, timeout: float) -> dict:
    """Launch locally, wait until the job's log satisfies `ready(text)`, send the job's process USR2
    (what SLURM sends before a preemption or the time limit), and wait for the launcher to end well;
    the job's ledger record (of `experiment`, seed 0)."""
    proc = start_launch(args, env, log)
    try:
        record = wait_until(lambda: latest_record(results, experiment, 0), 120, "the local job to start")
        wait_until(lambda: ready(job_log(record)), timeout, what)
        task = [p for p in descendants(int(record["job_id"])) if "submitit.core._submit" in cmdline(p)]
        assert len(task) == 1, [cmdline(p) for p in descendants(int(record["job_id"]))]
        os.kill(task[0], signal.SIGUSR2)
        assert proc.wait(timeout=timeout) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    return record


def records(results: Path) -> list[dict]:
    path = results / ".launch" / "submissions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest_record(results: Path, experiment: str, seed: int) -> dict | None:
    found = [r for r in records(results) if r["experiment"] == experiment and r["seed"] == seed]
    return found[-1] if found else None


def job_log(record: dict) -> str:
    """A job's stdout then its stderr (where a runtime's own failure, e.g. apptainer's, ends up)."""
    stem = Path(record["folder"]) / f"{record['job_id']}_0_log"
    parts = [stem.with_suffix(s) for s in (".out", ".err")]
    return "".join(p.read_text(errors="replace") for p in parts if p.exists())


def metrics(results: Path, experiment: str, seed: int, smoke: bool = True) -> dict | None:
    """A run's metrics.json (the launcher tests run smoke runs: results/smoke/<exp>/seed-<n>/)."""
    path = results / ("smoke" if smoke else "") / experiment / f"seed-{seed}" / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_profile(path: Path, base: str = "local", **slurm) -> Path:
    """A shipped profile with some slurm keys replaced (None values written as null)."""
    profile = yaml.safe_load((REPO / "slurm" / "profiles" / f"{base}.yaml").read_text(encoding="utf-8"))
    profile["slurm"].update(slurm)
    path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
    return path


def status_rows(output: str) -> dict[tuple, tuple[str, str]]:
    """{(experiment, seed): (state, detail)} from a `--status` / `--wait` table."""
    rows = {}
    states = "done|stale|corrupt|partial|missing|pending|blocked|running|interrupted|failed|unknown"
    for line in output.splitlines():
        m = None if line.startswith("total:") else re.match(rf"^(\S+)\s+(\d+)\s+({states})\s+\S+\s+\S+\s*(.*)$", line)
        if m:
            rows[(m.group(1), int(m.group(2)))] = (m.group(3), m.group(4).strip())
    return rows


def comparable(m: dict) -> dict[str, float]:
    """What must not change when a run is interrupted and resumed: scores, losses, the curve.

    Flat {name: number}, for pytest.approx: a resumed epoch adds its loss in two partial sums, so
    train_loss may differ in the last float bits; everything else is exact on CPU.
    """
    out = {"best_epoch": m["best_epoch"]}
    for split in ("val", "test"):
        out.update({f"{split}.{k}": m[split][k] for k in ("loss", "accuracy", "macro_f1")})
        out.update({f"{split}.cm{i}{j}": v for i, row in enumerate(m[split]["confusion_matrix"])
                    for j, v in enumerate(row)})
    for row in m["history"]:
        out.update({f"epoch{row['epoch']}.{k}": row[k]
                    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1")})
    return out


# Fields that measure the machine (time, memory, cache hits) or name the code version, not the result.
MEASURED = {"provenance", "throughput", "peak_memory_mb", "feature_cache", "seconds", "units_per_s"}


def result_part(m: dict) -> dict:
    """metrics.json without what measures the machine: two runs of the same key must agree on it bit
    for bit on CPU (the curve, scores, confusion matrices, predictions' summaries, parameters)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in MEASURED}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return strip(m)
