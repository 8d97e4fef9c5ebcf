"""Containerized jobs without a cluster: the exact commands each kind composes, what they pass in, the
code-identity rule and its messages, and what a run reads of its own code. The same paths run for real
in test_slurm_docker.py and test_slurm_apptainer.py; pyxis is composed only (no enroot here)."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch_support import REPO, wait_until

sys.path.insert(0, str(REPO))
from hw5 import identity  # noqa: E402
from jobs import container  # noqa: E402
from jobs.container import Bind, ContainerError, Image, JobPaths, binds, code_problems  # noqa: E402
from jobs.profiles import ProfileError, executor_settings, load_profile  # noqa: E402

PATHS = JobPaths(Path("/r/results"), Path("/r/ckpt"), Path("/data"), Path("/repo/jobs/experiments.yaml"),
                 Path("/r/results/.launch/steps"), (Path("/r/cache"),))
SHA = "a" * 40
NAMES = ("HF_HOME HF_HUB_OFFLINE HW5_DATA_DIR HW5_CACHE_DIR HW5_CHECKPOINT_DIR HW5_NUM_THREADS OMP_NUM_THREADS "
         "PYTHONNOUSERSITE HW5_STEP_DIR HW5_JOB_END HW5_CONTAINER_KIND HW5_IMAGE HW5_IMAGE_ID HW5_IMAGE_REVISION").split()


def settings(name: str, tmp_path: Path | None = None, **container_keys):
    profile = load_profile(name)
    profile.container.update(container_keys)
    kind = profile.container["kind"]
    image = Image(kind, profile.container["image"], "sha256:feed" if kind == "docker" else "the-id", SHA, False,
                  run_as="sha256:feed" if kind == "docker" else profile.container["image"])
    return executor_settings(profile, "slurm", PATHS, Path("/repo"), image)


def srun_line(params: dict) -> str:
    return next(line for line in params["slurm_setup"] if line.lstrip().startswith("srun "))


# own binds, then the profile's, parents before what lies inside them
BINDS_IMAGE = ("/data:/data:ro,/shared/hf-cache:/cache,/r/results:/r/results,/r/ckpt:/r/ckpt,/r/cache:/r/cache,"
               "/repo/jobs/experiments.yaml:/repo/jobs/experiments.yaml:ro")


def test_apptainer_step_is_srun_apptainer_exec_with_explicit_binds_and_gpus():
    ctor, params = settings("apptainer")
    assert ctor["slurm_python"] == "hw5_step" and params["slurm_use_srun"] is False
    assert srun_line(params) == ("  srun --unbuffered apptainer exec --nv --bind " + BINDS_IMAGE +
                                 ' --pwd /app /shared/images/hw5.sif python "$@" &')
    # USR2 to the batch shell alone, which passes it to Python's pid (not to the FUSE helper beside it)
    assert params["slurm_additional_parameters"]["signal"] == "B:USR2@120"
    assert any('kill -USR2 "$(cat "$HW5_STEP_DIR/$SLURM_JOB_ID.pid"' in line for line in params["slurm_setup"])
    # every launcher value by apptainer's own way past the image's ENV
    loop = next(line for line in params["slurm_setup"] if line.startswith("for hw5_name in"))
    assert loop.split(";")[0].split()[3:] == NAMES
    assert 'export "APPTAINERENV_$hw5_name=${!hw5_name}"' in loop


def test_pyxis_step_names_every_launcher_variable_in_container_env():
    _, params = settings("pyxis")
    assert srun_line(params) == (
        "  srun --unbuffered --container-image=/shared/images/hw5.sqsh --container-mounts=" + BINDS_IMAGE +
        " --container-workdir=/app --container-env=" + ",".join(NAMES) + ' python "$@" &')
    assert any('kill -USR2 "$hw5_srun"' in line for line in params["slurm_setup"])    # srun relays it


def test_docker_step_goes_through_docker_step_sh_with_each_variable_named():
    _, params = settings("docker")
    expected = ["/repo/slurm/docker_step.sh", "docker", "gpus", *[a for n in NAMES for a in ("-e", n)],
                *[a for b in BINDS_IMAGE.split(",") for a in ("-v", b)], "-w", "/app", "sha256:feed", "python"]
    assert srun_line(params) == f'  srun --unbuffered {shlex.join(expected)} "$@" &'


@pytest.mark.parametrize("name", ["apptainer", "pyxis", "docker"])
def test_code_image_keeps_the_checkout_out_and_code_checkout_puts_it_first(name):
    _, image = settings(name)
    assert "unset PYTHONPATH   # the image's hw5 runs, never a checkout on the host's path" in image["slurm_setup"]
    assert "/repo:/repo" not in srun_line(image) and "export PYTHONNOUSERSITE=1" in image["slurm_setup"]
    _, checkout = settings(name, code="checkout")
    line = srun_line(checkout)
    assert "export PYTHONPATH=/repo" in checkout["slurm_setup"] and "unset PYTHONPATH" not in " ".join(checkout["slurm_setup"])
    assert "/repo:/repo:ro" in line
    if name != "apptainer":        # apptainer: the APPTAINERENV_ loop carries it (its names are checked above)
        assert "PYTHONPATH" in line
    assert ("--pwd /repo" if name == "apptainer" else "-w /repo" if name == "docker" else "--container-workdir=/repo") in line


def test_the_identity_and_host_requeue_lines_of_the_batch_script():
    _, params = settings("docker")
    setup, teardown = params["slurm_setup"], params["slurm_teardown"]
    for line in ("export HW5_CONTAINER_KIND=docker", "export HW5_IMAGE=hw5:latest", "export HW5_IMAGE_ID=sha256:feed",
                 f"export HW5_IMAGE_REVISION={SHA}", "export HW5_STEP_DIR=/r/results/.launch/steps"):
        assert line in setup
    assert teardown[0] == 'if [ -f "$HW5_STEP_DIR/$SLURM_JOB_ID.requeue" ]; then'
    assert '  scontrol requeue "$SLURM_JOB_ID"' in teardown


def test_binds_cover_nested_folders_once_and_mount_parents_first():
    paths = JobPaths(Path("/w/results"), Path("/w/results/ckpt"), Path("/w/data"), Path("/w/repo/jobs/g.yaml"))
    found = binds(paths, ["/site/cache:/cache", "/ro:/inside/ro:ro"], checkout=Path("/w/repo"))
    # ckpt comes through results; the grid file through the checkout, both read-only
    assert [b.spec() for b in found] == ["/site/cache:/cache", "/w/results:/w/results", "/w/data:/w/data:ro",
                                         "/w/repo:/w/repo:ro", "/ro:/inside/ro:ro"]
    # a writable folder inside a read-only one needs its own bind, after its parent's
    inner = binds(JobPaths(Path("/w/repo/results"), Path("/c"), Path("/d")), [], checkout=Path("/w/repo"))
    specs = [b.spec() for b in inner]
    assert specs.index("/w/repo:/w/repo:ro") < specs.index("/w/repo/results:/w/repo/results")
    assert Bind.parse("/a") == Bind("/a", "/a") and Bind.parse("/a:/b:ro") == Bind("/a", "/b", True)


@pytest.mark.parametrize("text, message", [
    ("container:\n  kind: apptainer\n  image: x.sif\n  extra_args: [--cleanenv]\n",
     "container.extra_args has --cleanenv, which drops the host environment and with it SLURM_* and SUBMITIT_*"),
    ("container:\n  kind: apptainer\n  image: x.sif\n  extra_args: [--containall]\n", "has --containall"),
    ("container:\n  kind: docker\n  image: hw5\n  engine: rkt\n", "container.engine is 'rkt', expected one of docker, podman"),
    ("container:\n  kind: docker\n  image: hw5\n  code: mine\n", "container.code is 'mine', expected one of image, checkout"),
    ("container:\n  kind: docker\n", "container.kind 'docker' needs container.image"),
])
def test_container_mistakes_in_a_profile_are_one_line(tmp_path, text, message):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- which code, and the rule

def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    tree = tmp_path / "tree"
    for name in ("hw5/__init__.py", "jobs/job.py", "jobs/experiments.yaml", "docs/a.md", "pyproject.toml"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x = 1\n")
    git(tree.parent, "init", "-q", str(tree))
    git(tree, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git(tree, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    return tree


def image_at(revision: str | None, dirty: bool | None = False) -> Image:
    return Image("docker", "hw5:latest", "sha256:1", revision, dirty, "sha256:1")


def test_an_image_of_the_checkouts_head_may_run_its_jobs(checkout):
    assert code_problems(image_at(git(checkout, "rev-parse", "HEAD")), "image", checkout, Path("p.yaml")) == []


def test_an_image_of_another_commit_is_refused_with_the_rebuild_and_the_other_way(checkout):
    [problem] = code_problems(image_at("b" * 40), "image", checkout, Path("p.yaml"))
    head = git(checkout, "rev-parse", "HEAD")
    assert f"was built from {'b' * 12}, but the checkout is at {head[:12]}" in problem
    assert "rebuild it (bash docker/build.sh -t hw5:latest), or run the checkout's code with container.code: " \
           "checkout in p.yaml" in problem
    assert code_problems(image_at("b" * 40), "checkout", checkout, Path("p.yaml")) == []


def test_uncommitted_code_is_refused_but_an_edited_grid_or_doc_is_not(checkout):
    head = git(checkout, "rev-parse", "HEAD")
    (checkout / "jobs" / "experiments.yaml").write_text("edited: 1\n")
    (checkout / "docs" / "a.md").write_text("edited\n")
    assert code_problems(image_at(head), "image", checkout, Path("p.yaml")) == []
    (checkout / "jobs" / "job.py").write_text("x = 2\n")
    [problem] = code_problems(image_at(head), "image", checkout, Path("p.yaml"))
    assert "has uncommitted changes (git status): commit them, then rebuild it" in problem
    [dirty_image] = code_problems(image_at(head, dirty=True), "image", checkout.parent / "none", Path("p.yaml"))
    assert "was built from a tree with uncommitted changes" in dirty_image
    assert "names no commit" in code_problems(image_at(None), "image", checkout, Path("p.yaml"))[0]


def test_a_run_reads_its_code_identity_from_the_code_itself(checkout, tmp_path, monkeypatch):
    head = git(checkout, "rev-parse", "HEAD")
    monkeypatch.setenv("HW5_GIT_SHA", "f" * 40)        # a variable naming a commit is never believed
    assert identity.code_identity(checkout / "hw5") == {"source": "checkout", "path": str(checkout),
                                                        "git_sha": head, "git_dirty": False}
    installed = tmp_path / "site-packages" / "hw5"
    installed.mkdir(parents=True)
    assert identity.code_identity(installed)["source"] == "installed"
    assert identity.code_identity(installed)["git_sha"] is None
    (installed / identity.BUILD_RECORD).write_text(json.dumps({"git_sha": "c" * 40, "git_dirty": "false"}))
    assert identity.code_identity(installed) == {"source": "image", "path": str(installed),
                                                 "git_sha": "c" * 40, "git_dirty": False}


def test_without_git_the_commit_comes_from_the_files_loose_packed_or_a_worktree(checkout, tmp_path, monkeypatch):
    head, path = git(checkout, "rev-parse", "HEAD"), os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))     # an image: no git binary
    assert identity.checkout_state(checkout) == (head, None)
    monkeypatch.setenv("PATH", path)
    git(checkout, "pack-refs", "--all")
    assert identity.head_from_files(checkout) == head
    git(checkout, "worktree", "add", "-q", str(tmp_path / "wt"))
    assert identity.head_from_files(tmp_path / "wt") == head


def test_provenance_names_the_container_the_launcher_inspected(monkeypatch):
    from hw5.io import provenance
    assert provenance("cpu")["container"] is None
    for key, value in {"HW5_CONTAINER_KIND": "apptainer", "HW5_IMAGE": "/x/hw5.sif", "HW5_IMAGE_ID": "uuid",
                       "HW5_IMAGE_REVISION": SHA}.items():
        monkeypatch.setenv(key, value)
    assert provenance("cpu")["container"] == {"kind": "apptainer", "image": "/x/hw5.sif", "id": "uuid",
                                              "revision": SHA}


@pytest.mark.parametrize("kind, ref, message", [
    ("apptainer", "/nonexistent/hw5.sif", "container.image /nonexistent/hw5.sif does not exist: build it with "
                                          "bash docker/build.sh -t hw5:latest --sif /nonexistent/hw5.sif"),
    ("pyxis", "nvcr.io#me/hw5:1", "is not a local .sqsh file, so its revision cannot be read before submission"),
    ("docker", "hw5:none", "cannot read image hw5:none"),
])
def test_an_image_that_cannot_be_read_is_one_error_with_the_fix(kind, ref, message):
    with pytest.raises(ContainerError, match=None) as error:
        container.inspect_image({"image": ref, "engine": "no-such-engine"}, kind)
    assert message in str(error.value)


# ---------------------------------------------------------------- the docker step, with a stand-in engine

ENGINE = """#!/usr/bin/env bash
# records each call; `run` keeps running (as a container would) until it is killed or told to stop
echo "$*" >> "$CALLS"
case $1 in
  run) trap 'echo "got USR2" >> "$CALLS"' USR2; for _ in $(seq 100); do sleep 0.1; done ;;
  kill) pkill -USR2 -f "fake-engine run" ;;
esac
"""


def test_docker_step_sh_asks_for_the_jobs_gpus_memory_user_and_identity(tmp_path):
    engine = tmp_path / "fake-engine"
    engine.write_text(ENGINE)
    engine.chmod(0o755)
    calls = tmp_path / "calls"
    env = {"PATH": os.environ["PATH"], "CALLS": str(calls), "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "hw5-nli-full-s0,1",
           "SLURM_STEP_GPUS": "2,3", "SLURM_MEM_PER_NODE": "3072", "SLURM_CPUS_PER_TASK": "4",
           "SUBMITIT_EXECUTOR": "slurm"}
    step = subprocess.Popen(["bash", str(REPO / "slurm" / "docker_step.sh"), str(engine), "gpus", "-v", "/a:/a",
                             "IMG", "python"], env=env)
    wait_until(lambda: calls.exists() and "run" in calls.read_text(), 10, "the engine's run")
    run_args = calls.read_text().split()
    expected = ["--name", "hw5-nli-full-s0_1-77", "--user", f"{os.getuid()}:{os.getgid()}", "--cpus", "4",
                "--memory", "3072m", "--gpus", '"device=2,3"']
    assert all(" ".join(expected[i:i + 2]) in " ".join(run_args) for i in range(0, len(expected), 2)), run_args
    assert {"-e SLURM_JOB_ID", "-e SUBMITIT_EXECUTOR"} <= {f"-e {a}" for a in run_args}
    assert run_args[-3:] == ["/a:/a", "IMG", "python"] and "--sig-proxy=false" in run_args and "--init" in run_args
    step.send_signal(signal.SIGUSR2)          # passed on once, by the engine's own kill
    wait_until(lambda: "kill --signal USR2 hw5-nli-full-s0_1-77" in calls.read_text(), 10, "USR2 passed on")
    step.send_signal(signal.SIGTERM)          # scancel: stop, then remove the container
    assert step.wait(timeout=20) == 143
    assert "rm -f hw5-nli-full-s0_1-77" in calls.read_text()


def test_docker_step_sh_refuses_a_gpu_job_that_slurm_gave_no_gpu(tmp_path):
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "5"}
    out = subprocess.run(["bash", str(REPO / "slurm" / "docker_step.sh"), "docker", "gpus", "IMG", "python"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "asked for GPUs but SLURM named none" in out.stderr


# ---------------------------------------------------------------- the job's side, in the image

def test_the_job_asks_the_host_to_requeue_and_reads_its_time_left_from_the_host(tmp_path, monkeypatch):
    from jobs import job
    monkeypatch.setenv("HW5_STEP_DIR", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))     # no squeue, no scontrol: as in the image

    class Env:
        def _requeue(self, countdown):
            raise AssertionError("the image has no scontrol")

    class Handler:
        env = Env()

        def __call__(self, signum, frame):
            self.env._requeue(2)

    handler = Handler()
    job._requeue_through_the_host(handler.__call__)
    handler(signal.SIGUSR2, None)
    assert (tmp_path / "42.requeue").read_text().startswith("requeue job 42: 2 time-out(s) left")
    monkeypatch.setenv("HW5_JOB_END", str(int(time.time()) + 600))
    assert 590 <= job._seconds_left("42") <= 600
    job._note_pid_for_the_host()
    assert (tmp_path / "42.pid").read_text().strip() == str(os.getpid())
