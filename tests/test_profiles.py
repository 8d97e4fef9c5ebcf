"""Cluster profiles: every shipped one loads, each key reaches sbatch as the site wants it, a mistake
is one error naming the file (the container kinds: tests/test_containers.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from launch_support import REPO

sys.path.insert(0, str(REPO))
from jobs.container import JobPaths  # noqa: E402
from jobs.profiles import (ProfileError, available_profiles, executor_settings, job_name, load_profile,  # noqa: E402
                           setup_lines)

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
