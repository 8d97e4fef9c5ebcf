"""Odd values given to the launcher and aggregate.py, each caught early in one line: seeds, launches too
big to be meant, experiment names too long for a folder, a site's job limits, a missing install."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from launch_support import LAUNCH, REPO, launch, launcher_env

sys.path.insert(0, str(REPO))
from hw5.config import ConfigError, load_grid, parse_seeds, seed_ranges  # noqa: E402
from jobs.limits import Limits, limit_problems  # noqa: E402


@pytest.mark.parametrize("text, seeds", [("0,1,2", [0, 1, 2]), ("0-4", [0, 1, 2, 3, 4]), ("3, 0-1,3", [3, 0, 1]),
                                         ("7", [7]), ("2-2", [2])])
def test_one_seeds_grammar(text, seeds):
    assert parse_seeds(text) == seeds
    assert parse_seeds(seed_ranges(seeds)) == sorted(seeds)


@pytest.mark.parametrize("text, says", [("3-1", "'3-1' counts down; a range goes up: 1-3"),
                                        ("0,x", "'x' is not a seed or a range"), ("-1", "'-1' is not a seed"),
                                        ("1,,2", "'' is not a seed")])
def test_bad_seeds_are_one_error_in_the_launcher_and_in_aggregate(tmp_path, text, says):
    out = launch(["--only", "nli-full", "--seeds", text, "--smoke", "--cluster", "local", "--dry-run",
                  "--results", str(tmp_path)], launcher_env(tmp_path / "cache", tmp_path))
    assert out.returncode == 2 and f"error: --seeds {text}: {says}" in out.stdout, out.stdout
    report = subprocess.run([sys.executable, str(REPO / "aggregate.py"), "--seeds", text, "--results", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 2 and says in report.stderr and "Traceback" not in report.stderr, report.stderr


def test_seed_ranges_write_runs_of_three_or_more_as_ranges():
    assert seed_ranges([9, 0, 1, 2, 3, 7]) == "0-3,7,9" and seed_ranges([1, 3]) == "1,3" and seed_ranges([0, 1]) == "0,1"


def test_a_launch_of_over_a_thousand_runs_asks_for_yes_and_a_dry_run_summarises(tmp_path):
    env = launcher_env(tmp_path / "cache", tmp_path)
    args = ["--only", "nli-full,nli-freeze9", "--seeds", "0-600", "--smoke", "--cluster", "local",
            "--results", str(tmp_path / "results")]
    refused = launch(args, env)
    assert refused.returncode == 2, refused.stdout
    assert ("error: this launch plans 1,202 runs (2 experiment(s) x 601 seed(s)), more than 1,000: check --seeds, "
            "look first with --dry-run, or pass --yes") in refused.stdout
    dry = launch([*args, "--dry-run"], env)
    assert dry.returncode == 0 and len(dry.stdout.splitlines()) < 20, dry.stdout[:2000]
    assert "nli-full              601  601 missing; 601 submit; 0-600" in dry.stdout, dry.stdout


def test_an_experiment_name_too_long_for_a_folder_is_one_error(tmp_path):
    grid = yaml.safe_load((REPO / "jobs" / "experiments.yaml").read_text())
    grid["experiments"]["x" * 300] = {"task": "nli"}
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match=r"experiment name 'x{20}\.\.\.' is 300 characters long; at most 64 fit"):
        load_grid(path)


def jobs_per_pack(*tasks: int):
    return lambda n: sum(-(-count // n) for count in tasks)


def test_a_grid_over_the_sites_submit_limit_is_refused_with_the_smallest_pack_that_fits():
    site = Limits(max_submit=6, max_jobs=4, max_array_size=1001, source="association of account lab")
    [problem] = limit_problems(site, [5, 5], jobs_per_pack(10), queued=1, largest_pack=10)
    assert problem == ("this launch adds 10 job(s) to the 1 you have queued, 11 in all, over MaxSubmitJobs=6 "
                       "(association of account lab): add --pack 2 (5 job(s), 2 runs each at most)")
    assert limit_problems(site, [2, 2], jobs_per_pack(4), queued=1, largest_pack=4) == []
    [full] = limit_problems(site, [1], jobs_per_pack(1), queued=6, largest_pack=1)
    assert full.endswith("wait until some of your queued jobs end (squeue -u $USER), then launch again")
    [barred] = limit_problems(Limits(max_submit=0, source="association of account nobudget"), [1], jobs_per_pack(1),
                              queued=0, largest_pack=1)
    assert "may submit no jobs at all (MaxSubmitJobs=0): set slurm.account" in barred


def test_an_array_over_the_clusters_array_size_gets_a_pack_that_fits():
    [problem] = limit_problems(Limits(max_array_size=1001), [1500], jobs_per_pack(1500), queued=0, largest_pack=1500)
    assert problem == ("an array of 1500 tasks is over the cluster's MaxArraySize=1001: add --pack 2 (750 job(s), "
                       "2 runs each at most)")


def test_a_python_without_the_projects_packages_is_one_line_naming_the_install(tmp_path):
    hide = "import runpy, sys; sys.modules['submitit'] = None; sys.argv = ['launch.py', '--help']; "
    out = subprocess.run([sys.executable, "-c", hide + f"runpy.run_path({str(LAUNCH)!r}, run_name='__main__')"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == ("error: python module 'submitit' is not installed here: run the launcher with the "
                                  "project's environment (make venv, then .venv/bin/python jobs/launch.py), or "
                                  "pip install -e '.[launch]'")
