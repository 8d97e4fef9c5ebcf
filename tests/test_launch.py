"""jobs/launch.py's logic without running anything: run selection and CLI errors, the submission records
and the lock, job states from the scheduler's answers, packs and arrays, prefetch."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit.core.utils as submitit_utils

from launch_support import REPO, farstail_dir, launch, launcher_env, start_launch, wait_until, write_grid

sys.path.insert(0, str(REPO))
from jobs import scheduler, slurm_site  # noqa: E402
from jobs.container import JobPaths  # noqa: E402
from jobs.job import Job  # noqa: E402
from jobs.launch import parse_seeds, select_experiments  # noqa: E402
from jobs.ledger import Ledger, Record  # noqa: E402
from jobs.pack import RunSpec  # noqa: E402
from jobs.profiles import load_profile  # noqa: E402
from jobs.runner import make_packs, parallelism_shares, plan_arrays, sbatch_request  # noqa: E402
from jobs.scheduler import progress_line  # noqa: E402

PATHS = JobPaths(REPO / "results", REPO / "checkpoints", REPO / "data")


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
