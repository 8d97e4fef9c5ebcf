"""jobs/launch.py against a REAL SLURM cluster (slurm/local_cluster.sh start): arrays, status while
jobs run, no double submission, a failing run's traceback, --retry-failed, preemption with USR2.

Skipped with a reason when no cluster answers; a failure instead when HW5_REQUIRE_SLURM=1 (CI).
The tests share one cluster and the grid slice the module fixture `array_launch` launches; each passes
alone and in any order.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch_support import (BROKEN, LAUNCH, comparable, farstail_dir, job_log, latest_record, launch, launcher_env,
                            metrics, records, result_part, scratch_dir, slurm_problem, start_launch, status_rows,
                            wait_until, write_grid)

pytestmark = pytest.mark.slurm
DEFAULT_CONF = Path(os.environ.get("SLURM_PREFIX", "/tmp/hw5-slurm")) / "etc" / "slurm.conf"
RUN_TIMEOUT_S = 300     # one smoke run on a busy 2-core machine, with margin


@pytest.fixture(scope="module")
def cluster():
    if "SLURM_CONF" not in os.environ and DEFAULT_CONF.exists():
        os.environ["SLURM_CONF"] = str(DEFAULT_CONF)
    problem = slurm_problem()
    data = farstail_dir()
    if data is None:
        problem = problem or "FarsTail not found (set HW5_DATA_DIR to a folder holding farstail/)"
    if problem:
        message = f"no usable SLURM cluster: {problem}; start one: bash slurm/local_cluster.sh start"
        if os.environ.get("HW5_REQUIRE_SLURM") == "1":
            pytest.fail(message + " (HW5_REQUIRE_SLURM=1)")
        pytest.skip(message)
    with scratch_dir("hw5-slurm-test-") as root:
        env = launcher_env(Path(os.environ.get("HW5_CACHE_DIR", root / "cache")), data)
        grid = write_grid(root / "experiments.yaml")
        base = ["--smoke", "--experiments", str(grid), "--cluster", "slurm", "--checkpoints", str(root / "ckpt")]
        yield {"root": root, "env": env, "base": base, "results": root / "results"}
        _cancel_leftovers(root)


def _cancel_leftovers(root: Path) -> None:
    """Cancel this module's jobs still queued (a failed test must not leave work on the cluster)."""
    ours = {r["job_id"] for results in root.glob("results*") for r in records(results)}
    left = [j for j in _job_ids() if j in ours]
    if left:
        subprocess.run(["scancel", *left], timeout=30)
        wait_until(lambda: not _queued(left), 60, "cancelled jobs to leave", poll=1)


def _args(cluster, *extra, results=None):
    return [*cluster["base"], "--results", str(results or cluster["results"]), *extra]


def _job_ids() -> list[str]:
    """Every job id SLURM knows now (array tasks one by one)."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()


def _queued(job_ids: list[str]) -> list[str]:
    return [j for j in _job_ids() if j in job_ids]


def _wait_jobs_gone(job_ids: list[str], timeout: float = RUN_TIMEOUT_S) -> None:
    wait_until(lambda: not _queued(job_ids), timeout, f"jobs {job_ids} to leave the queue", poll=2)


def _status_rows(output: str) -> dict[tuple, str]:
    return {key: state for key, (state, _) in status_rows(output).items()}


def test_dry_run_submits_nothing(cluster):
    before, results = _job_ids(), cluster["root"] / "results-dry"
    out = launch(_args(cluster, "--all", "--only", "nli-full", "--seeds", "0,1", "--dry-run", results=results),
                 cluster["env"])
    assert out.returncode == 0, out.stdout
    assert "dry run: nothing submitted" in out.stdout and out.stdout.count("submit\n") == 2, out.stdout
    assert records(results) == []
    assert not set(_job_ids()) - set(before)      # nothing new (another module's job may just be leaving)


def test_a_refused_submission_is_one_error_and_leaves_nothing(cluster):
    profile = cluster["root"] / "bad.yaml"
    profile.write_text("slurm:\n  partition: nosuchpartition  # not on this cluster\n")
    results = cluster["root"] / "results-refused"
    args = _args(cluster, "--only", "nli-full", "--seeds", "0", "--profile", str(profile), results=results)
    checked = launch(args, cluster["env"])      # preflight: before sbatch is asked
    assert checked.returncode == 2, checked.stdout
    assert "the cluster has no partition 'nosuchpartition': set slurm.partition" in checked.stdout
    out = launch([*args, "--no-preflight"], cluster["env"])
    assert out.returncode == 1, out.stdout
    assert "sbatch refused hw5-nli-full-s0" in out.stdout and "invalid partition" in out.stdout.lower(), out.stdout
    assert f"hint: set slurm.partition in {profile}" in out.stdout and "Traceback" not in out.stdout
    assert records(results) == []
    assert [p for p in (results / ".launch" / "jobs").glob("*") if p.is_file()] == []   # no stray pickles


ONLY = ["--all", "--only", f"nli-full,{BROKEN}", "--seeds", "0,1"]


@pytest.fixture(scope="module")
def array_launch(cluster) -> dict:
    """The grid slice the tests below read (nli-full and the broken run, seeds 0 and 1), launched by two
    launchers at once, with what --status and a second launch said while it ran; waited for."""
    started = time.time()
    logs = [cluster["root"] / f"launch{i}.log" for i in range(2)]
    procs = [start_launch(_args(cluster, *ONLY), cluster["env"], log) for log in logs]
    codes = [p.wait(timeout=120) for p in procs]
    seen = {"codes": codes, "seconds": time.time() - started, "outputs": [log.read_text() for log in logs],
            "ids": [r["job_id"] for r in records(cluster["results"])]}
    seen["status"] = launch(_args(cluster, "--status", *ONLY), cluster["env"])
    seen["again"] = launch(_args(cluster, *ONLY), cluster["env"])
    seen["records"] = len(records(cluster["results"]))
    _wait_jobs_gone(seen["ids"])
    return seen


def test_launch_submits_an_array_once_and_reports_status(cluster, array_launch):
    # two launchers started at once (the lock): exactly one submits, the other finds the runs queued
    outputs = array_launch["outputs"]
    assert array_launch["codes"] == [0, 0], outputs
    assert array_launch["seconds"] < 90, "submission must not wait for the jobs"
    assert sorted("nothing to submit" in o for o in outputs) == [False, True], outputs
    # one array per experiment, named after it and its seeds
    arrays = dict(re.findall(r"submitted hw5-(\S+)-s0,1: 2 run\(s\) as SLURM job (\d+)", "".join(outputs)))
    assert set(arrays) == {"nli-full", BROKEN}, outputs
    assert sorted(array_launch["ids"]) == sorted(f"{a}_{i}" for a in arrays.values() for i in range(2))
    # while the array ran: every run was pending or running, and a second launch submitted nothing
    status = array_launch["status"]
    assert set(_status_rows(status.stdout).values()) <= {"pending", "running", "done", "failed"}, status.stdout
    assert any(s in ("pending", "running") for s in _status_rows(status.stdout).values()), status.stdout
    again = array_launch["again"]
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
    assert array_launch["records"] == 4
    for seed in (0, 1):
        assert metrics(cluster["results"], "nli-full", seed)["seed"] == seed
        assert metrics(cluster["results"], BROKEN, seed) is None
    final = launch(_args(cluster, "--status", *ONLY), cluster["env"])
    rows = _status_rows(final.stdout)
    assert (rows[("nli-full", 0)], rows[("nli-full", 1)]) == ("done", "done"), final.stdout
    assert (rows[(BROKEN, 0)], rows[(BROKEN, 1)]) == ("failed", "failed"), final.stdout
    assert "keep_layers is 50, but the model" in final.stdout and "Traceback" in final.stdout, final.stdout
    third = launch(_args(cluster, *ONLY), cluster["env"])
    assert "nothing to submit" in third.stdout, third.stdout


def test_retry_failed_resubmits_only_the_failed_runs_and_wait_blocks(cluster, array_launch):
    before = records(cluster["results"])
    only = ["--only", f"nli-full,{BROKEN}", "--seeds", "0,1"]
    out = launch(_args(cluster, "--retry-failed", "--wait", *only), cluster["env"], timeout=RUN_TIMEOUT_S)
    assert f"submitted hw5-{BROKEN}-s0,1: 2 run(s)" in out.stdout, out.stdout
    new = records(cluster["results"])[len(before):]
    assert sorted((r["experiment"], r["seed"]) for r in new) == [(BROKEN, 0), (BROKEN, 1)]
    assert not {r["job_id"] for r in new} & {r["job_id"] for r in before}
    # --wait returned only once the jobs ended, with exit code 1 because they failed again
    assert out.returncode == 1 and not _queued([r["job_id"] for r in new]), out.stdout
    assert _status_rows(out.stdout) == {("nli-full", 0): "done", ("nli-full", 1): "done",
                                        (BROKEN, 0): "failed", (BROKEN, 1): "failed"}, out.stdout


def test_preempted_job_requeues_and_matches_an_uninterrupted_run(cluster, array_launch):
    reference = metrics(cluster["results"], "nli-full", 0)
    assert reference, array_launch["outputs"]
    results = cluster["root"] / "results-preempted"
    out = launch(_args(cluster, "--only", "nli-full", "--seeds", "0", results=results), cluster["env"])
    assert out.returncode == 0, out.stdout
    record = latest_record(results, "nli-full", 0)
    # signal once training has begun: the handler is installed and the loop checks STOP every step
    wait_until(lambda: "trainable parameters" in job_log(record), RUN_TIMEOUT_S, "training to start")
    subprocess.run(["scancel", "--signal=USR2", record["job_id"]], check=True, timeout=30)
    _wait_jobs_gone([record["job_id"]], timeout=RUN_TIMEOUT_S + 60)
    log = job_log(record)
    assert "checkpoint saved after USR2" in log and "resumed from" in log, log
    assert "restart 1" in log, log    # the same SLURM job ran again (requeued), not a new one
    resumed = metrics(results, "nli-full", 0)
    assert resumed, log
    assert resumed["config_hash"] == reference["config_hash"]
    assert comparable(resumed) == pytest.approx(comparable(reference), rel=1e-6, abs=1e-9)


def test_a_packed_array_reports_each_run_and_matches_separate_jobs(cluster, array_launch):
    separate = {seed: metrics(cluster["results"], "nli-full", seed) for seed in (0, 1)}
    assert all(separate.values()), array_launch["outputs"]
    results = cluster["root"] / "results-packed"
    only = ["--only", f"nli-full,{BROKEN}", "--seeds", "0,1"]
    out = launch(_args(cluster, *only, "--pack", "4", results=results), cluster["env"])
    assert out.returncode == 0 and "4 run(s) in 1 packed job(s) as SLURM job" in out.stdout, out.stdout
    job = records(results)[0]["job_id"]
    assert {r["job_id"] for r in records(results)} == {job} and {r["pack"] for r in records(results)} == {4}

    def one_training_the_rest_waiting():
        rows = status_rows(launch(_args(cluster, "--status", *only, results=results), cluster["env"]).stdout)
        states = sorted(state for state, _ in rows.values())
        return rows if states.count("running") == 1 and "pending" in states else None
    rows = wait_until(one_training_the_rest_waiting, RUN_TIMEOUT_S, "one packed run training, the rest waiting")
    assert any(f"packed in job {job} (running)" in detail for state, detail in rows.values() if state == "pending")
    _wait_jobs_gone([job])
    final = status_rows(launch(_args(cluster, "--status", *only, results=results), cluster["env"]).stdout)
    assert {k: v[0] for k, v in final.items()} == {("nli-full", 0): "done", ("nli-full", 1): "done",
                                                   (BROKEN, 0): "failed", (BROKEN, 1): "failed"}, final
    assert "keep_layers is 50, but the model" in final[(BROKEN, 1)][1]
    for seed in (0, 1):
        assert result_part(metrics(results, "nli-full", seed)) == result_part(separate[seed])


def test_a_job_scancelled_while_running_is_interrupted_and_a_plain_relaunch_resumes_it(cluster):
    results = cluster["root"] / "results-cancelled"
    only = ["--only", "nli-full", "--seeds", "2"]
    out = launch(_args(cluster, *only, results=results), cluster["env"])
    assert out.returncode == 0, out.stdout
    record = latest_record(results, "nli-full", 2)
    wait_until(lambda: "trainable parameters" in job_log(record), RUN_TIMEOUT_S, "training to start")
    subprocess.run(["scancel", record["job_id"]], check=True, timeout=30)
    _wait_jobs_gone([record["job_id"]])
    # scancel sends SIGTERM: the run saves a checkpoint at its next step first
    assert "stopped by SIGTERM during nli-full/seed-2 (checkpoint saved" in job_log(record), job_log(record)
    status = launch(_args(cluster, "--status", *only, results=results), cluster["env"])
    rows = status_rows(status.stdout)
    assert rows[("nli-full", 2)][0] == "interrupted" and "launch again to resume it" in rows[("nli-full", 2)][1]
    again = launch(_args(cluster, *only, "--wait", results=results), cluster["env"], timeout=RUN_TIMEOUT_S)
    assert again.returncode == 0, again.stdout
    resumed = latest_record(results, "nli-full", 2)
    assert resumed["job_id"] != record["job_id"] and "resumed from" in job_log(resumed), job_log(resumed)


def test_ctrl_c_of_a_waiting_launcher_is_one_line_and_its_jobs_go_on(cluster):
    results = cluster["root"] / "results-ctrl-c"
    log = cluster["root"] / "ctrl-c.log"
    proc = subprocess.Popen([sys.executable, str(LAUNCH), *_args(cluster, "--only", "nli-full", "--seeds", "3", "--wait",
                                                                 results=results)],
                            env=cluster["env"], stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        record = wait_until(lambda: latest_record(results, "nli-full", 3), 120, "the submission")
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)            # a terminal's Ctrl-C
        assert proc.wait(timeout=60) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    said = log.read_text()
    assert "stopped (SLURM jobs already submitted go on: python jobs/launch.py --status)" in said, said
    assert "Traceback" not in said and "KeyboardInterrupt" not in said, said
    assert _queued([record["job_id"]]) == [record["job_id"]]      # the job was not touched
    subprocess.run(["scancel", record["job_id"]], timeout=30)
    _wait_jobs_gone([record["job_id"]], 120)
