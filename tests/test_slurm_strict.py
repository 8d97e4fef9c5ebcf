"""jobs/launch.py at an unfamiliar site: the STRICT flavour of slurm/local_cluster.sh, real daemons.

The site: accounting enforced (the default account `nobudget` may not submit, jobs must name
`hw5lab`; `otherlab` is not allowed on the partition), one partition `a100` (MaxTime 10 min), a
partition QOS that refuses jobs without a GPU, cgroup process tracking where the host allows.
Start it with `SLURM_FLAVOUR=strict bash slurm/local_cluster.sh start` (CI starts both flavours).

Skipped with a reason when it does not answer; a failure instead when HW5_REQUIRE_SLURM=1 (CI).
Each test passes alone and in any order (shared runs are module fixtures).
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from launch_support import (comparable, farstail_dir, job_log, latest_record, launch, launcher_env,
                            metrics, records, scratch_dir, slurm_problem, status_rows, wait_until, write_grid,
                            write_profile)

pytestmark = pytest.mark.slurm
STRICT_CONF = Path(os.environ.get("HW5_STRICT_SLURM_CONF", "/tmp/hw5-slurm-strict/etc/slurm.conf"))
RUN_TIMEOUT_S = 300
# What runs on this site: a100, the allowed account, one (fake) GPU, CPU training allowed, <= MaxTime.
SITE = dict(partition="a100", account="hw5lab", gpus_per_node=1, allow_cpu=True, timeout_min=10,
            signal_delay_s=30, array_parallelism=2, job_name_prefix="hw5")


@pytest.fixture(scope="module")
def site():
    data = farstail_dir()
    env = {**os.environ, "SLURM_CONF": str(STRICT_CONF)}
    problem = None if STRICT_CONF.is_file() else f"{STRICT_CONF} not found"
    problem = problem or slurm_problem(env) or (None if data else "FarsTail not found (set HW5_DATA_DIR)")
    if problem:
        message = (f"no strict SLURM site: {problem}; start one: SLURM_FLAVOUR=strict bash slurm/local_cluster.sh "
                   "start")
        if os.environ.get("HW5_REQUIRE_SLURM") == "1":
            pytest.fail(message + " (HW5_REQUIRE_SLURM=1)")
        pytest.skip(message)
    with scratch_dir("hw5-strict-test-") as root:
        env = {**launcher_env(Path(os.environ.get("HW5_CACHE_DIR", root / "cache")), data), "SLURM_CONF": str(STRICT_CONF)}
        grid = write_grid(root / "experiments.yaml")
        yield {"root": root, "env": env, "grid": grid, "profile": write_profile(root / "strict.yaml", **SITE)}
        ours = {r["job_id"] for results in root.glob("results*") for r in records(results)}
        left = [j for j in _queue(env) if j in ours]
        if left:
            subprocess.run(["scancel", *left], env=env, timeout=30)


def _queue(env: dict) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30, env=env)
    return out.stdout.split()


def _launch(site, name: str, *extra, profile: Path | bool | None = None, grid: Path | None = None,
            timeout: float = 120):
    """The launcher on results-<name> (own checkpoints), smoke runs, the given (default: the site's) profile."""
    root = site["root"]
    args = ["--smoke", "--experiments", str(grid or site["grid"]), "--cluster", "slurm",
            "--results", str(root / f"results-{name}"), "--checkpoints", str(root / f"ckpt-{name}"), *extra]
    if profile is not False:
        args += ["--profile", str(profile or site["profile"])]
    return launch(args, site["env"], timeout=timeout)


def _profile(site, name: str, **slurm) -> Path:
    return write_profile(site["root"] / f"{name}.yaml", **{**SITE, **slurm})


def _wait_gone(site, job_ids: list[str], timeout: float = RUN_TIMEOUT_S) -> None:
    wait_until(lambda: not set(job_ids) & set(_queue(site["env"])), timeout, f"jobs {job_ids} to end", poll=2)


def _nothing_submitted(site, name: str) -> None:
    results = site["root"] / f"results-{name}"
    assert records(results) == [], "a refused submission must record nothing"
    loose = [p for p in (results / ".launch" / "jobs").glob("*") if p.is_file()]
    assert loose == [], f"a refused submission left files behind: {loose}"


def test_dry_run_shows_each_arrays_sbatch_request_and_preflight_passes(site):
    before = _queue(site["env"])
    out = _launch(site, "dry", "--only", "nli-full,nli-freeze9", "--seeds", "0,1", "--dry-run")
    assert out.returncode == 0, out.stdout
    for flag in ("--account=hw5lab", "--partition=a100", "--time=10", "--gpus-per-node=1", "--signal=USR2@30",
                 "--job-name=hw5-nli-full-s0,1", "--job-name=hw5-nli-freeze9-s0,1", "--array=0-1%1"):
        assert f"  {flag}\n" in out.stdout, (flag, out.stdout)   # array_parallelism 2, split over 2 arrays
    assert "preflight: ok (partition a100, sbatch --test-only accepted 2 request(s), 4 job(s) within the site's " \
           "limits)" in out.stdout, out.stdout
    assert "dry run: nothing submitted" in out.stdout
    assert _queue(site["env"]) == before
    _nothing_submitted(site, "dry")


@pytest.mark.parametrize("change, says", [
    ({"timeout_min": 120}, "slurm.timeout_min is 120 but partition a100 allows at most 10 min (MaxTime)"),
    ({"account": "otherlab"}, "account 'otherlab' may not use partition a100 (AllowAccounts hw5lab,nobudget): "
                              "set slurm.account"),
    ({"cpus_per_task": 64}, "slurm.cpus_per_task is 64 but no node of a100 has more than"),
    ({"mem_gb": 4096}, "slurm.mem_gb is 4096 but nodes of a100 offer at most"),
    ({"gpus_per_node": 8}, "slurm.gpus_per_node is 8 but nodes of a100 have at most 2 GPUs"),
    ({"gpus_per_node": 1, "gpu_type": "h100"}, "have at most 0 'h100' GPUs (types there: untyped)"),
    ({"gpus_per_node": 0}, "the partition's QOS requires a GPU: set slurm.gpus_per_node >= 1"),
    ({"partition": "gpu"}, "the cluster has no partition 'gpu': set slurm.partition in"),
])
def test_preflight_refuses_requests_that_could_never_start(site, change, says):
    profile = _profile(site, "bad", **change)
    out = _launch(site, "bad", "--only", "nli-full", "--seeds", "0", profile=profile)
    assert out.returncode == 2, out.stdout
    assert says in out.stdout and str(profile) in out.stdout, out.stdout
    assert "nothing submitted (fix the profile, or --no-preflight)" in out.stdout and "Traceback" not in out.stdout
    _nothing_submitted(site, "bad")


def test_the_default_account_refusal_says_to_set_slurm_account(site):
    profile = _profile(site, "noaccount", account=None)
    checked = _launch(site, "noaccount", "--only", "nli-full", "--seeds", "0", profile=profile)
    assert checked.returncode == 2 and "AssocMaxSubmitJobLimit" in checked.stdout, checked.stdout
    hint = f"hint: set slurm.account (and slurm.qos where the site names one) in {profile}"
    assert hint in checked.stdout and "sacctmgr show assoc user=$USER format=account,partition,qos" in checked.stdout
    assert re.search(r"yours: .*hw5lab", checked.stdout), checked.stdout
    # the same refusal from sbatch itself (preflight skipped): one error with the hint, nothing left behind
    refused = _launch(site, "noaccount", "--only", "nli-full", "--seeds", "0", "--no-preflight", profile=profile)
    assert refused.returncode == 1, refused.stdout
    assert "sbatch refused hw5-nli-full-s0" in refused.stdout and hint in refused.stdout, refused.stdout
    assert "Traceback" not in refused.stdout
    _nothing_submitted(site, "noaccount")


def test_an_unknown_partition_lists_the_sites_partitions(site):
    out = _launch(site, "nopart", "--only", "nli-full", "--seeds", "0", profile=_profile(site, "nopart", partition="gpu"))
    assert out.returncode == 2 and re.search(r"no partition 'gpu': set slurm.partition in \S+ to one of: a100\*",
                                             out.stdout), out.stdout


@pytest.fixture
def submit_limit(site):
    """The account hw5lab may have 3 jobs queued or running (MaxSubmitJobs=3) while the test runs."""
    def limit(value: int) -> None:
        subprocess.run(["sacctmgr", "-i", "-Q", "modify", "user", "root", "where", "account=hw5lab", "cluster=strict",
                        "set", f"MaxSubmitJobs={value}"], env=site["env"], check=True, timeout=30, capture_output=True)
    limit(3)
    yield limit
    limit(-1)


def test_a_grid_over_the_submit_limit_is_refused_before_submission_with_a_pack_that_fits(site, submit_limit):
    only = ["--only", "nli-full,nli-freeze9", "--seeds", "0,1"]
    out = _launch(site, "limit", *only, "--dry-run")
    assert out.returncode == 2, out.stdout
    assert ("this launch adds 4 job(s) to the 0 you have queued, 4 in all, over MaxSubmitJobs=3 (association of "
            "account hw5lab): add --pack 2 (2 job(s), 2 runs each at most)") in out.stdout, out.stdout
    _nothing_submitted(site, "limit")
    packed = _launch(site, "limit", *only, "--pack", "2", "--dry-run")
    assert packed.returncode == 0 and "2 job(s) within the site's limits" in packed.stdout, packed.stdout


def test_a_refusal_halfway_names_sbatchs_reason_and_a_plain_relaunch_submits_the_rest(site, submit_limit):
    only = ["--only", "nli-full,nli-freeze9", "--seeds", "0,1"]
    out = _launch(site, "half", *only, "--no-preflight")
    try:
        assert out.returncode == 1, out.stdout
        assert "sbatch refused hw5-nli-freeze9-s0,1" in out.stdout and "AssocMaxSubmitJobLimit" in out.stdout
        assert ("submitted before it: hw5-nli-full-s0,1; not submitted: hw5-nli-freeze9-s0,1" in out.stdout
                and "you reached the site's limit on queued jobs (MaxSubmitJobs)" in out.stdout), out.stdout
        assert {(r["experiment"], r["seed"]) for r in records(site["root"] / "results-half")} == \
            {("nli-full", 0), ("nli-full", 1)}
        submit_limit(10)
        again = _launch(site, "half", *only)
        assert again.returncode == 0 and "submitted hw5-nli-freeze9-s0,1: 2 run(s)" in again.stdout, again.stdout
        assert "hw5-nli-full" not in again.stdout.split("submitted", 1)[1], again.stdout
    finally:
        ours = [r["job_id"] for r in records(site["root"] / "results-half")]
        subprocess.run(["scancel", *ours], env=site["env"], timeout=30)
        _wait_gone(site, ours, 120)


def test_jobs_that_can_never_start_are_blocked_with_the_key_to_change_and_wait_ends(site):
    late = _profile(site, "late", timeout_min=120)
    other = _profile(site, "other", account="otherlab")
    wide = _profile(site, "wide", cpus_per_task=64)
    for name, profile in (("late", late), ("other", other), ("wide", wide)):
        out = _launch(site, name, "--only", "nli-full", "--seeds", "0", "--no-preflight", profile=profile)
        assert out.returncode == 0 and "submitted hw5-nli-full-s0" in out.stdout, out.stdout
    time.sleep(3)   # a scheduling pass sets the reason
    late_rows = status_rows(_launch(site, "late", "--status", "--only", "nli-full", "--seeds", "0").stdout)
    assert late_rows[("nli-full", 0)][0] == "blocked", late_rows
    assert f"PartitionTimeLimit: --time is above the partition's MaxTime; change slurm.timeout_min in {late}" \
        in late_rows[("nli-full", 0)][1]
    other_rows = status_rows(_launch(site, "other", "--status", "--only", "nli-full", "--seeds", "0").stdout)
    assert other_rows[("nli-full", 0)][0] == "blocked", other_rows
    assert "account not permitted" in other_rows[("nli-full", 0)][1]
    assert f"change slurm.account or slurm.partition in {other}" in other_rows[("nli-full", 0)][1]
    wide_rows = status_rows(_launch(site, "wide", "--status", "--only", "nli-full", "--seeds", "0").stdout)
    assert wide_rows[("nli-full", 0)][0] == "blocked", wide_rows
    assert "PartitionConfig: the request exceeds every node of the partition; change slurm.cpus_per_task" \
        in wide_rows[("nli-full", 0)][1] and str(wide) in wide_rows[("nli-full", 0)][1]
    # --wait (no --profile: the recorded one) ends at once with exit 1 instead of waiting forever
    started = time.time()
    waited = _launch(site, "late", "--only", "nli-full", "--seeds", "0", "--wait", profile=False)
    assert waited.returncode == 1 and time.time() - started < 60, waited.stdout
    assert "profile: late (recorded at submission" in waited.stdout
    assert re.search(r"\d\d:\d\d:\d\d 0/1 done, 1 blocked", waited.stdout), waited.stdout


def test_retry_failed_with_a_fixed_profile_cancels_the_blocked_job_and_resubmits(site):
    late = _profile(site, "late-retry", timeout_min=120)
    out = _launch(site, "late-retry", "--only", "nli-full", "--seeds", "0", "--no-preflight", profile=late)
    assert out.returncode == 0, out.stdout
    old = latest_record(site["root"] / "results-late-retry", "nli-full", 0)
    wait_until(lambda: status_rows(_launch(site, "late-retry", "--status", "--only", "nli-full", "--seeds", "0")
                                   .stdout)[("nli-full", 0)][0] == "blocked", 60, "the job to be blocked")
    out = _launch(site, "late-retry", "--only", "nli-full", "--seeds", "0", "--retry-failed", "--wait",
                  profile=site["profile"], timeout=RUN_TIMEOUT_S)
    assert f"cancelled blocked job {old['job_id']}" in out.stdout, out.stdout
    assert out.returncode == 0 and status_rows(out.stdout)[("nli-full", 0)][0] == "done", out.stdout
    assert old["job_id"] not in _queue(site["env"])
    done = metrics(site["root"] / "results-late-retry", "nli-full", 0)
    assert done["provenance"]["gpu"] is None and done["provenance"]["slurm_job_id"], done["provenance"]


def test_a_gpu_job_that_sees_no_cuda_fails_fast_in_one_line(site):
    profile = _profile(site, "gpu", allow_cpu=False)
    out = _launch(site, "gpu", "--only", "nli-full", "--seeds", "0", "--wait", profile=profile, timeout=RUN_TIMEOUT_S)
    assert out.returncode == 1, out.stdout
    state, detail = status_rows(out.stdout)[("nli-full", 0)]
    assert state == "failed", out.stdout
    assert "this job asked for a GPU but torch" in detail and "CUDA_VISIBLE_DEVICES=0" in detail, detail
    assert "set slurm.allow_cpu: true in the profile" in detail
    assert metrics(site["root"] / "results-gpu", "nli-full", 0) is None
    # --retry-failed without --profile: the profile recorded at submission, not 'local' (whose partition
    # `debug` this site does not have)
    results = site["root"] / "results-gpu"
    again = _launch(site, "gpu", "--only", "nli-full", "--seeds", "0", "--retry-failed", profile=False)
    assert again.returncode == 0, again.stdout
    assert f"profile: gpu (recorded at submission in {results / '.launch' / 'submissions.jsonl'}" in again.stdout
    assert "submitted hw5-nli-full-s0" in again.stdout and "invalid partition" not in again.stdout.lower()
    assert [r["profile_path"] for r in records(results)] == [str(profile)] * 2
    wait_until(lambda: not set(r["job_id"] for r in records(results)) & set(_queue(site["env"])), RUN_TIMEOUT_S,
               "the resubmitted job to end", poll=2)


def test_the_job_runs_the_config_submitted_and_cancelled_tasks_say_so(site):
    grid = site["root"] / "edited.yaml"
    grid.write_text(site["grid"].read_text())
    serial = _profile(site, "serial", array_parallelism=1)
    results = site["root"] / "results-frozen"
    out = _launch(site, "frozen", "--only", "nli-full", "--seeds", "0-2", profile=serial, grid=grid)
    assert out.returncode == 0, out.stdout
    submitted = {r["seed"]: r for r in records(results)}
    # while seed 1 waits for seed 0: the YAML changes, and seed 2's task is cancelled before it starts
    edited = yaml.safe_load(grid.read_text())
    edited["experiments"]["nli-full"]["head_dropout"] = 0.3
    grid.write_text(yaml.safe_dump(edited, sort_keys=False))
    subprocess.run(["scancel", submitted[2]["job_id"]], env=site["env"], check=True, timeout=30)
    watched = _launch(site, "frozen", "--status", "--watch", "--only", "nli-full", "--seeds", "0-2",
                      timeout=RUN_TIMEOUT_S)     # refreshes until nothing is queued or running
    assert re.search(r"\d\d:\d\d:\d\d 0/3 done, ", watched.stdout), watched.stdout   # progress lines
    assert "total: 2 done, 1 missing (of 3 runs)" in watched.stdout, watched.stdout
    # done is decided by metrics.json; a finished task may sit in squeue (COMPLETING) a few seconds more
    wait_until(lambda: not set(r["job_id"] for r in submitted.values()) & set(_queue(site["env"])), 60,
               "the finished tasks to leave the queue")
    ran = metrics(results, "nli-full", 1)
    assert ran and ran["config_hash"] == submitted[1]["config_hash"], "the job must run the submitted config"
    assert ran["config"]["head_dropout"] == 0.1
    assert "changed since submission" in job_log(submitted[1]) and "running the submitted config" in job_log(submitted[1])
    edited_rows = status_rows(_launch(site, "frozen", "--status", "--only", "nli-full", "--seeds", "0-2",
                                      grid=grid).stdout)
    assert [edited_rows[("nli-full", s)][0] for s in (0, 1, 2)] == ["stale", "stale", "missing"], edited_rows
    rows = status_rows(_launch(site, "frozen", "--status", "--only", "nli-full", "--seeds", "0-2").stdout)
    assert [rows[("nli-full", s)][0] for s in (0, 1)] == ["done", "done"], rows   # the YAML as submitted
    assert rows[("nli-full", 2)] == ("missing", f"job {submitted[2]['job_id']} was cancelled before it started: "
                                                "nothing ran"), rows


@pytest.fixture(scope="module")
def reference(site) -> dict:
    """nli-full seed 0 on this site, uninterrupted (the frozen-config test's, when it ran first)."""
    found = metrics(site["root"] / "results-frozen", "nli-full", 0)
    if found and found["config"]["head_dropout"] == 0.1:
        return found
    out = _launch(site, "reference", "--only", "nli-full", "--seeds", "0", "--wait", timeout=RUN_TIMEOUT_S)
    assert out.returncode == 0, out.stdout
    return metrics(site["root"] / "results-reference", "nli-full", 0)


def test_a_preemption_under_a_short_time_limit_is_not_a_timeout(site, reference):
    # timeout_min 10 = the partition's MaxTime: submitit's own rule would call this USR2 a time-out,
    # and with max_num_timeout 0 the run would then end instead of requeueing
    profile = _profile(site, "preempt", max_num_timeout=0)
    results = site["root"] / "results-preempt"
    out = _launch(site, "preempt", "--only", "nli-full", "--seeds", "0", profile=profile)
    assert out.returncode == 0, out.stdout
    record = latest_record(results, "nli-full", 0)
    wait_until(lambda: "trainable parameters" in job_log(record), RUN_TIMEOUT_S, "training to start")
    subprocess.run(["scancel", "--signal=USR2", record["job_id"]], env=site["env"], check=True, timeout=30)
    _wait_gone(site, [record["job_id"]], timeout=RUN_TIMEOUT_S + 60)
    log = job_log(record)
    assert "checkpoint saved after USR2" in log and "resumed from" in log and "restart 1" in log, log
    assert re.search(r"\d+ s left before the time limit: preemption", log), log
    resumed = metrics(results, "nli-full", 0)
    assert resumed and resumed["config_hash"] == reference["config_hash"], log
    assert comparable(resumed) == pytest.approx(comparable(reference), rel=1e-6, abs=1e-9)


def test_no_controller_is_an_error_never_a_silent_local_run(site, tmp_path):
    dead = tmp_path / "slurm.conf"   # the site's config with a controller port nothing listens on
    dead.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=6899", STRICT_CONF.read_text()))
    env = {**site["env"], "SLURM_CONF": str(dead)}
    base = ["--smoke", "--experiments", str(site["grid"]), "--only", "nli-full", "--seeds", "0",
            "--results", str(tmp_path / "results"), "--dry-run"]
    for extra in (["--profile", str(site["profile"])], ["--cluster", "slurm"]):
        out = launch(base + extra, env, timeout=120)
        assert out.returncode == 2, out.stdout
        assert "needs SLURM, but no controller answered: `scontrol ping` answered:" in out.stdout, out.stdout
        assert f"SLURM_CONF is {dead}" in out.stdout and "Are you on a login node?" in out.stdout
    plain = launch(base, env, timeout=120)   # no SLURM profile asked for: local, and it says so
    assert plain.returncode == 0 and "cluster: local (no SLURM controller: `scontrol ping`" in plain.stdout, plain.stdout
