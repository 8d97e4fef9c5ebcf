"""jobs/launch.py without SLURM: profiles, run selection, records and the lock, job states, and the
local executor path of `make demo` (real smoke runs, a failing run, --retry-failed, USR2 + resume)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
import submitit.core.utils as submitit_utils

from launch_support import (BROKEN, REPO, comparable, farstail_dir, job_log, launch, launch_and_interrupt,  # noqa: E501
                            launcher_env, metrics, records, result_part, scratch_dir, start_launch,
                            status_rows, wait_until, write_grid)

sys.path.insert(0, str(REPO))
from jobs import scheduler  # noqa: E402
from jobs import slurm_site  # noqa: E402
from jobs.container import JobPaths  # noqa: E402
from jobs.launch import parse_seeds, select_experiments  # noqa: E402
from jobs.ledger import Ledger, Record  # noqa: E402
from jobs.profiles import (ProfileError, available_profiles, executor_settings, job_name, load_profile,  # noqa: E402
                           setup_lines)
from jobs.job import Job  # noqa: E402
from jobs.pack import RunSpec, room_for_another  # noqa: E402
from jobs.runner import make_packs, parallelism_shares, plan_arrays, sbatch_request  # noqa: E402
from jobs.scheduler import progress_line  # noqa: E402

RUN_TIMEOUT_S = 400     # smoke runs on a busy 2-core machine, with margin
PATHS = JobPaths(REPO / "results", REPO / "checkpoints", REPO / "data")


# ---------------------------------------------------------------- profiles

@pytest.mark.parametrize("name", ["local", "generic-gpu", "pyxis", "apptainer", "docker"])
def test_shipped_profiles_load_and_every_key_is_commented(name):
    profile = load_profile(name)
    assert profile.name == name
    lines = [line for line in profile.path.read_text().splitlines() if re.match(r"^\s+\w+:", line)]
    uncommented = [line for line in lines if "#" not in line and not line.rstrip().endswith(":")]
    assert not uncommented, f"{profile.path}: keys without a comment: {uncommented}"


def test_available_profiles_lists_the_shipped_ones():
    assert {"local", "generic-gpu", "pyxis", "apptainer", "docker"} <= set(available_profiles())


def test_local_profile_uses_this_interpreter_and_exports_the_repo():
    ctor, params = executor_settings(load_profile("local"), "slurm", PATHS)
    assert ctor["slurm_python"].strip("'") == sys.executable
    assert params["slurm_setup"][0].startswith(f"export PYTHONPATH={REPO}")
    assert "export HF_HUB_OFFLINE=1" in params["slurm_setup"]
    _, local = executor_settings(load_profile("local"), "local", PATHS)
    assert local["timeout_min"] == 120 and local["local_setup"] == params["slurm_setup"]


@pytest.mark.parametrize("text, message", [
    ("slurm:\n  partiton: gpu\n", "unknown key 'slurm.partiton'; did you mean 'slurm.partition'?"),
    ("slurm:\n  mem_gb: lots\n", "slurm.mem_gb must be number, got 'lots'"),
    ("container:\n  kind: podman\n", "container.kind is 'podman', expected one of none, pyxis, apptainer, docker"),
    ("container:\n  kind: pyxis\n", "container.kind 'pyxis' needs container.image"),
    ("slurm: [1, 2]\n", "slurm. must be a mapping"),
    ("slurm:\n  timeout_min: 2\n  signal_delay_s: 120\n",
     "slurm.signal_delay_s (120 s) must be shorter than the time limit slurm.timeout_min (2 min = 120 s)"),
    ("slurm:\n  gpu_flag: gpu\n", "slurm.gpu_flag is 'gpu', expected one of gpus-per-node, gres, gpus"),
    ("slurm:\n  gpu_type: a100\n", "slurm.gpu_type 'a100' needs slurm.gpus_per_node >= 1"),
    ("slurm:\n  exclusive: 1\n", "slurm.exclusive must be bool, got 1"),
    ("slurm:\n  job_name_prefix: ''\n", "slurm.job_name_prefix must not be empty"),
    ("runs_per_job: 0\n", "runs_per_job must be >= 1"),
    ("runs_per_job: two\n", "runs_per_job must be int, got 'two'"),
    ("runs_per_gpu: 0\n", "runs_per_gpu must be >= 1"),
])
def test_profile_mistakes_are_one_clear_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


@pytest.mark.parametrize("slurm, expected", [
    ({"gpus_per_node": 2}, {"gpus_per_node": "2"}),
    ({"gpus_per_node": 1, "gpu_type": "a100"}, {"gpus_per_node": "a100:1"}),
    ({"gpus_per_node": 1, "gpu_type": "a100", "gpu_flag": "gres"}, {"gres": "gpu:a100:1"}),
    ({"gpus_per_node": 4, "gpu_flag": "gpus"}, {"gpus": "4"}),
    ({"reservation": "maint", "additional_parameters": {"nodelist": "n1"}}, {"reservation": "maint", "nodelist": "n1"}),
])
def test_gpu_request_reservation_and_extra_options_reach_sbatch(tmp_path, slurm, expected):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"slurm": slurm}))
    _, params = executor_settings(load_profile(str(path)), "slurm", PATHS)
    assert params["slurm_additional_parameters"] == expected


def test_exclusive_mail_and_job_names_are_profile_keys(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("slurm:\n  exclusive: true\n  mail_type: END,FAIL\n  mail_user: me@example.org\n"
                    "  job_name_prefix: thesis\n")
    profile = load_profile(str(path))
    _, params = executor_settings(profile, "slurm", PATHS)
    assert (params["slurm_exclusive"], params["slurm_mail_type"], params["slurm_mail_user"]) == \
        (True, "END,FAIL", "me@example.org")
    assert job_name(profile, "nli-full", [0, 1, 2, 3, 4]) == "thesis-nli-full-s0-4"
    assert job_name(profile, "ser-mean", [3, 1]) == "thesis-ser-mean-s1,3"


def test_a_checkout_path_with_a_space_or_semicolon_stays_one_word(tmp_path):
    odd = tmp_path / "my repo;echo INJECTED"
    lines = setup_lines(load_profile("local"), odd)
    script = "\n".join(lines + ['printf "%s" "$PYTHONPATH"'])
    out = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"], "PYTHONPATH": "/old"},
                         capture_output=True, text=True, check=True)
    assert out.stdout == f"{odd}:/old" and "INJECTED" not in out.stdout.replace(str(odd), "")


def test_unknown_profile_name_lists_the_available_ones():
    with pytest.raises(ProfileError, match="no such cluster profile .*available: .*local"):
        load_profile("nosuchcluster")


# ---------------------------------------------------------------- run selection and CLI errors

def test_seeds_accept_lists_and_ranges():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3, 0-1,3") == [3, 0, 1]


def test_only_globs_select_in_grid_order_and_a_miss_is_an_error(tmp_path, capsys):
    names = ["nli-full", "nli-freeze9", "ser-mean"]
    assert select_experiments(names, ["ser-*,nli-full"], tmp_path) == ["nli-full", "ser-mean"]
    with pytest.raises(SystemExit) as exit_:
        select_experiments(names, ["nli-ful"], tmp_path / "grid.yaml")
    assert exit_.value.code == 2
    assert "matches no experiment" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "say which runs: --all, or --only GLOB"),
    (["--all", "--seeds", "zero"], "--seeds zero: 'zero' is not a seed or a range"),
    (["--all", "--profile", "nosuch"], "no such cluster profile"),
    (["--all", "--experiments", "/nonexistent/grid.yaml"], "experiments file not found"),
    (["--all", "--pack", "0"], "--pack 0: give the runs per job, 1 or more"),
    (["--all", "--runs-per-gpu", "2", "--seeds", "0", "--only", "nli-full"], "2 runs per GPU need packed jobs"),
])
def test_bad_command_lines_give_one_error_line_and_exit_2(args, message):
    out = launch(args + ["--dry-run", "--cluster", "local"], dict(os.environ))
    assert out.returncode == 2, out.stdout
    assert message in out.stdout and "Traceback" not in out.stdout, out.stdout


# ---------------------------------------------------------------- records, lock, job states

def _record(tmp_path: Path, experiment="nli-full", seed=0, job_id="7") -> Record:
    return Record(experiment, seed, True, "abcd1234", job_id, "slurm", str(tmp_path / job_id), "now")


def test_newest_record_of_a_run_wins_and_logs_link_to_its_job(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.add([_record(tmp_path, job_id="7"), _record(tmp_path, seed=1, job_id="8")])
    ledger.add([_record(tmp_path, job_id="9")])
    latest = ledger.latest()
    assert {key: r.job_id for key, r in latest.items()} == {("nli-full", 0, True): "9", ("nli-full", 1, True): "8"}
    assert ledger.log_link("nli-full", 0, smoke=True).resolve() == (tmp_path / "9").resolve()
    assert ledger.log_link("nli-full", 0, smoke=True).parent.parent.name == "smoke"   # never a full run's link


def test_corrupt_record_lines_are_skipped_with_one_warning_naming_them(tmp_path, capsys):
    ledger = Ledger(tmp_path)
    ledger.add([_record(tmp_path)])
    with open(ledger.records_path, "ab") as handle:
        handle.write(b'{"experiment": "half a line\n\xff\xfe\x00garbage bytes\n')
    ledger.add([_record(tmp_path, seed=1)])
    assert list(ledger.latest()) == [("nli-full", 0, True), ("nli-full", 1, True)]
    said = capsys.readouterr().err
    assert said.count("warning") == 1 and f"{ledger.records_path}: line(s) 2, 3 unreadable, skipped" in said


def test_job_state_reads_the_scheduler_and_submitit_result_files(tmp_path):
    record = _record(tmp_path)
    Path(record.folder).mkdir()
    assert scheduler.job_state(record, ("PENDING", "Priority", "debug")) == ("pending", "Priority")
    assert scheduler.job_state(record, ("RUNNING", "None", "debug")) == ("running", "RUNNING")
    assert scheduler.job_state(record, (scheduler.NO_ANSWER, "", ""))[0] == "unknown"
    # no log: the job never ran (a task cancelled while pending leaves no trace in sacct)
    assert scheduler.job_state(record, None) == ("missing", "job 7 was cancelled before it started: nothing ran")
    assert scheduler.job_state(record, ("CANCELLED", "never started", ""))[0] == "missing"
    record.stdout.write_text("started\n")
    state, detail = scheduler.job_state(record, ("TIMEOUT", "", ""))
    assert state == "failed" and "ended TIMEOUT without a result; log: " in detail
    assert "cancelled while running" in scheduler.job_state(record, ("CANCELLED", "", ""))[1]
    submitit_utils.cloudpickle_dump(("error", "Traceback ...\nValueError: boom"), record.result_pickle)
    assert scheduler.job_state(record, ("FAILED", "", "")) == ("failed", "Traceback ...\nValueError: boom")
    submitit_utils.cloudpickle_dump(("success", {}), record.result_pickle)
    assert scheduler.job_state(record, ("COMPLETED", "", ""))[0] == "missing"


@pytest.mark.parametrize("reason, state, says", [
    ("PartitionTimeLimit", "blocked", "change slurm.timeout_min in /p.yaml (see: scontrol show partition a100"),
    ("PartitionConfig", "blocked", "change slurm.cpus_per_task / slurm.mem_gb / slurm.gpus_per_node in /p.yaml"),
    ("Job's account not permitted to use this partition (a100 allows hw5lab not x)", "blocked",
     "change slurm.account or slurm.partition in /p.yaml"),
    ("QOSMinGRES", "blocked", "slurm.gpus_per_node / slurm.qos"),
    ("QOSMaxWallDurationPerJobLimit", "blocked", "change slurm.timeout_min"),
    ("ReqNodeNotAvail, UnavailableNodes:n1", "blocked", "sinfo -R"),
    ("ReqNodeNotAvail, Reserved for maintenance", "pending", "ReqNodeNotAvail, Reserved for maintenance"),
    ("JobHeldUser", "blocked", "scontrol release JOBID"),
    ("Priority", "pending", "Priority"), ("Resources", "pending", "Resources"),
    ("AssocGrpGRES", "pending", "AssocGrpGRES"), ("JobArrayTaskLimit", "pending", "JobArrayTaskLimit"),
])
def test_squeue_reasons_that_waiting_cannot_fix_are_blocked_with_the_key(reason, state, says):
    got, detail = slurm_site.classify(reason, "a100", "/p.yaml")
    assert got == state and says in detail, detail


def test_slurm_times_gres_and_array_ids_parse():
    assert [slurm_site.parse_minutes(t) for t in ("10", "00:10:00", "1-00:00:00", "2-12", "UNLIMITED")] == \
        [10, 10, 1440, 3600, None]
    assert slurm_site.parse_seconds("4:59") == 299 and slurm_site.parse_seconds("NOT_SET") is None
    assert slurm_site.parse_gres("gpu:a100:4(S:0-1),gpu:v100:2") == {"a100": 4, "v100": 2}
    assert slurm_site.parse_gres("gpu:2") == {"": 2} and slurm_site.parse_gres("(null)") == {}
    assert scheduler._expand("12_[1-3,5%2]") == ["12_1", "12_2", "12_3", "12_5"]
    assert scheduler._expand("12_4") == ["12_4"]


def _specs(task: str, experiments: list[str], seeds: range) -> list[RunSpec]:
    return [RunSpec(e, s, config={"task": task}) for e in experiments for s in seeds]


def test_packs_keep_one_task_each_in_grid_order_and_even_sizes():
    nli = _specs("nli", ["nli-full", "nli-freeze9", "nli-keep9", "nli-freezeall", "nli-prune50"], range(5))
    ser = _specs("ser", ["ser-mean", "ser-fixedpad"], range(5))
    packs = make_packs(nli + ser, 10)
    assert [len(p) for p in packs] == [9, 8, 8, 10]                  # 25 runs: 9 + 8 + 8, not 10 + 10 + 5
    assert [s for p in packs[:3] for s in p] == nli and packs[3] == ser
    assert all(len({s.config["task"] for s in p}) == 1 for p in packs)
    assert make_packs(nli, 1) == [[s] for s in nli] and make_packs(ser, 100) == [ser]


@pytest.mark.slurm
def test_packed_arrays_ask_sbatch_for_one_task_per_pack(tmp_path):
    if shutil.which("srun") is None and os.environ.get("HW5_REQUIRE_SLURM") != "1":
        pytest.skip("submitit writes sbatch scripts only where srun is installed (slurm/local_cluster.sh installs it)")
    specs = _specs("nli", ["nli-full", "nli-freeze9"], range(3)) + _specs("ser", ["ser-mean"], range(3))
    arrays = plan_arrays(specs, load_profile("local"), Ledger(tmp_path), PATHS, runs_per_job=4)
    assert [(a.name, [len(p) for p in a.packs]) for a in arrays] == [("hw5-nli-packed-s0-2", [3, 3]),
                                                                    ("hw5-ser-packed-s0-2", [3])]
    assert "--array=0-1%1" in sbatch_request(arrays[0].script) and arrays[0].specs == specs[:6]
    assert all("--array" not in flag for flag in sbatch_request(arrays[1].script))        # one job
    assert repr(Job(arrays[1].packs[0])) == "Job(pack of 3: ser-mean/seed-0, ser-mean/seed-1, ser-mean/seed-2)"


def test_a_packed_run_has_its_own_state_from_the_pack_book(tmp_path):
    record = _record(tmp_path)
    record.pack = 3
    Path(record.folder).mkdir()
    assert scheduler.job_state(record, ("RUNNING", "None", "debug"))[0] == "pending"     # not reached yet
    book = scheduler.pack_book_path(record.folder, record.job_id)
    book.write_text('{"runs": {"nli-full/seed-0": {"state": "running"}}}')
    assert scheduler.job_state(record, ("RUNNING", "None", "debug")) == ("running", "RUNNING")
    book.write_text('{"runs": {"nli-full/seed-0": {"state": "failed", "error": "Traceback ...\\nDataError: x"}}}')
    assert scheduler.job_state(record, ("RUNNING", "None", "debug")) == ("failed", "Traceback ...\nDataError: x")
    book.write_text("{half")                                       # a job killed mid-write: the job decides
    submitit_utils.cloudpickle_dump(("error", "Traceback ...\nPackFailed: 1 of 3"), record.result_pickle)
    assert scheduler.job_state(record, ("FAILED", "", "")) == ("failed", "Traceback ...\nPackFailed: 1 of 3")


def test_array_parallelism_is_shared_out_over_the_arrays():
    assert parallelism_shares(16, [5] * 10) == [2] * 6 + [1] * 4      # 16 at once over 10 arrays
    assert parallelism_shares(2, [5] * 10) == [1] * 10                # at least one each
    assert parallelism_shares(16, [2, 3]) == [2, 3]                   # never more than an array's tasks
    assert parallelism_shares(3, [1, 5]) == [1, 2]


def test_progress_line_counts_every_state():
    runs = [SimpleNamespace(state=s) for s in ("done", "done", "running", "blocked", "blocked", "pending")]
    assert progress_line(runs) == "2/6 done, 1 running, 1 pending, 2 blocked"


def test_a_second_launcher_waits_for_the_lock(tmp_path):
    data = farstail_dir() or tmp_path
    env = launcher_env(tmp_path / "cache", data)
    args = ["--all", "--smoke", "--dry-run", "--cluster", "local", "--results", str(tmp_path / "results")]
    with Ledger(tmp_path / "results").lock():
        proc = start_launch(args, env, tmp_path / "launch.log")
        wait_until(lambda: "waiting for another launcher" in (tmp_path / "launch.log").read_text(), 60,
                   "the launcher to report the lock")
        assert proc.poll() is None, "it must not plan while another launcher holds the lock"
    assert proc.wait(timeout=60) == 0
    assert "dry run: nothing submitted" in (tmp_path / "launch.log").read_text()


# ---------------------------------------------------------------- prefetch

def test_prefetch_skips_tiny_models_and_prepares_the_data(tmp_path):
    data = farstail_dir()
    if data is None:
        pytest.skip("FarsTail not found: set HW5_DATA_DIR to a folder holding farstail/")
    grid = write_grid(tmp_path / "experiments.yaml")
    out = launch(["--prefetch", "--only", "nli-full", "--smoke", "--experiments", str(grid), "--data-dir", str(data)],
                 launcher_env(tmp_path / "cache", data), timeout=300)
    assert out.returncode == 0, out.stdout
    assert "model tiny: built locally by the job" in out.stdout
    assert f"FarsTail ready in {data / 'farstail'}" in out.stdout and "prefetch done" in out.stdout


def test_prefetch_without_the_hub_names_the_model_and_the_fix(tmp_path):
    data = farstail_dir() or tmp_path
    env = {**launcher_env(tmp_path / "cache", data), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = launch(["--prefetch", "--only", "nli-full", "--data-dir", str(data)], env, timeout=300)
    assert out.returncode == 1, out.stdout
    assert "model HooshvareLab/bert-base-parsbert-uncased: download failed" in out.stdout, out.stdout
    assert "fix: run --prefetch where the hub is reachable" in out.stdout and "prefetch incomplete" in out.stdout


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
