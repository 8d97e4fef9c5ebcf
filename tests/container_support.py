"""Helpers for the tests of SLURM jobs inside the hw5 image (test_slurm_docker.py, test_slurm_apptainer.py).

What those tests need, and where it comes from:
- the local SLURM cluster (slurm/local_cluster.sh; with SLURM_APPTAINER=1 its node has an `apptainer`);
- the Docker engine (docker/engine.sh) and the `hw5:ci` image built from this checkout's HEAD on the CPU
  stand-in base (docker/ci_build.sh --build-only); for apptainer, that image as a .sif (docker/build.sh --sif);
- a non-root user who submits, as on a cluster: `hw5ci`, created here, in the engine's `docker` group.
  It launches from its own clone of this repository, so a test may commit there without touching ours.
Each is required (a failure, not a skip) when CI says so: HW5_REQUIRE_SLURM / _DOCKER / _APPTAINER=1.
"""
from __future__ import annotations

import functools
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from launch_support import REPO, slurm_problem, wait_until

USER = "hw5ci"
DEFAULT_CONF = Path(os.environ.get("SLURM_PREFIX", "/tmp/hw5-slurm")) / "etc" / "slurm.conf"
DOCKER_ROOT = Path(os.environ.get("HW5_DOCKER_ROOT", "/tmp/hw5-docker"))
SIF = Path(os.environ.get("HW5_TEST_SIF", "/tmp/hw5-apptainer/hw5-ci.sif"))
IMAGE = "hw5:ci"
RUN_TIMEOUT_S = 400        # a containerized smoke run on a busy 2-core machine, with margin


def need(condition_problem: str | None, required_by: str) -> None:
    """Skip with the reason, or fail where CI requires the service (HW5_REQUIRE_*=1)."""
    if condition_problem:
        if os.environ.get(required_by) == "1":
            pytest.fail(f"{required_by}=1 but {condition_problem}")
        pytest.skip(condition_problem)


def run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def engine_env() -> dict:
    return {**os.environ, "DOCKER_HOST": f"unix://{DOCKER_ROOT / 'engine' / 'docker.sock'}"}


def engine_problem() -> str | None:
    if os.geteuid() != 0:
        return "the container tests create a user and build images: they need root"
    if shutil.which("docker") is None:
        return "no docker CLI"
    if run(["docker", "version"], env=engine_env(), timeout=30).returncode != 0:
        return "the Docker engine does not answer (bash docker/engine.sh start)"
    return None


def cluster_problem() -> str | None:
    if "SLURM_CONF" not in os.environ and DEFAULT_CONF.exists():
        os.environ["SLURM_CONF"] = str(DEFAULT_CONF)
    problem = slurm_problem()
    return f"no usable SLURM cluster: {problem} (bash slurm/local_cluster.sh start)" if problem else None


@functools.lru_cache(maxsize=None)
def built_image() -> dict:
    """hw5:ci built from this checkout's HEAD (cached layers make a rebuild seconds): its inspect data."""
    out = run(["bash", str(REPO / "docker" / "ci_build.sh"), "--build-only"], timeout=1800,
              env={**os.environ, "HW5_DOCKER_OUT": str(DOCKER_ROOT / "out-build")})
    assert out.returncode == 0, f"docker/ci_build.sh --build-only failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return inspect(IMAGE)


def inspect(image: str) -> dict:
    out = run(["docker", "image", "inspect", image], env=engine_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def base_image() -> str:
    """The CPU stand-in base docker/ci_build.sh built the image on (for rebuilding from another tree)."""
    return inspect(IMAGE)["Config"]["Labels"]["org.opencontainers.image.base.name"]


def head() -> str:
    return run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).stdout.strip()


def sif_labels(path: Path) -> dict:
    out = run(["apptainer", "inspect", "--labels", "--json", str(path)], timeout=60)
    return json.loads(out.stdout)["data"]["attributes"]["labels"] if out.returncode == 0 else {}


@functools.lru_cache(maxsize=None)
def built_sif() -> Path:
    """hw5:ci as a .sif, the way docker/build.sh --sif makes one (docker save + apptainer build);
    rebuilt only when its revision label is not HEAD."""
    built_image()
    if SIF.exists() and sif_labels(SIF).get("org.opencontainers.image.revision") == head():
        return SIF
    SIF.parent.mkdir(parents=True, exist_ok=True)
    env = {**engine_env(), "DOCKER": "/usr/bin/docker", "BASE_IMAGE": base_image(),
           "BUILD_ARGS": "--network host -q", "SIF_COMPRESSION": "lz4"}
    out = run(["bash", str(REPO / "docker" / "build.sh"), "-t", IMAGE, "--sif", str(SIF)], timeout=1800, env=env)
    assert out.returncode == 0, f"docker/build.sh --sif failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    os.chmod(SIF, 0o644)
    return SIF


# ---------------------------------------------------------------- the submitting user

@functools.lru_cache(maxsize=None)
def ci_user() -> pwd.struct_passwd:
    """The non-root user who submits (created once; in the engine's docker group)."""
    try:
        grp.getgrnam("docker")
    except KeyError:
        run(["groupadd", "--system", "docker"])
    try:
        pwd.getpwnam(USER)
    except KeyError:
        out = run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker", USER])
        assert out.returncode == 0, out.stderr
    run(["usermod", "-aG", "docker", USER])
    return pwd.getpwnam(USER)


def give(path: Path) -> Path:
    user = ci_user()
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, user.pw_uid, user.pw_gid)
    return path


def user_checkout(root: Path) -> Path:
    """The user's own clone of this repository at HEAD (cloned here, then handed over)."""
    tree = root / "checkout"
    out = run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(tree)])
    assert out.returncode == 0, out.stderr
    give(tree)
    as_user(["git", "-C", str(tree), "config", "user.email", "ci@hw5.invalid"], {})
    as_user(["git", "-C", str(tree), "config", "user.name", "hw5 ci"], {})
    return tree


@functools.lru_cache(maxsize=None)
def launcher_python() -> tuple[str, str | None]:
    """(python, PYTHONPATH) with which the user runs the launcher: this interpreter where the user may
    run it, else the system python of the same version on this environment's packages (a venv whose
    python lives in root's home is not runnable by another user)."""
    if as_user([sys.executable, "-c", "import submitit, yaml"], {}).returncode == 0:
        return sys.executable, None
    system = "/usr/bin/python3"
    version = run([system, "-c", "import sys; print(sys.version_info[:2])"]).stdout.strip()
    assert version == str(sys.version_info[:2]), f"{system} is {version}, not {sys.version_info[:2]}"
    return system, sysconfig.get_paths()["purelib"]


def as_user(cmd: list[str], env: dict, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run cmd as the test user with exactly `env` (plus PATH and HOME)."""
    user = pwd.getpwnam(USER)
    full = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": user.pw_dir, "USER": USER, "LANG": "C.UTF-8", **env}
    return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in full.items()], *cmd],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def launcher_env(root: Path, data: Path, extra: dict | None = None) -> dict:
    """What the user's shell exports when launching: the cluster, the engine, the hw5 paths."""
    python, path = launcher_python()
    env = {"SLURM_CONF": os.environ["SLURM_CONF"], "DOCKER_HOST": engine_env()["DOCKER_HOST"],
           "HW5_DATA_DIR": str(data), "HW5_CACHE_DIR": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    if path:
        env["PYTHONPATH"] = path
    return {**env, **(extra or {})}


def launch_as_user(tree: Path, args: list[str], env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    out = as_user([launcher_python()[0], str(tree / "jobs" / "launch.py"), *args], env, timeout=timeout, cwd=tree)
    out.stdout = out.stdout + out.stderr        # one text for asserts, as the launcher tests read it
    return out


def write_container_profile(path: Path, base: str, image: str, **container) -> Path:
    """A shipped container profile (docker.yaml, apptainer.yaml) fitted to the local cluster: its slurm
    resources, no GPU, no site mounts, `image`; the container keys given replace the shipped ones."""
    profile = yaml.safe_load((REPO / "slurm" / "profiles" / f"{base}.yaml").read_text(encoding="utf-8"))
    profile["slurm"].update(partition="debug", gpus_per_node=0, cpus_per_task=1, mem_gb=3, timeout_min=30,
                            signal_delay_s=30, array_parallelism=2)
    profile["container"].update(image=image, mounts=[], **container)
    profile["env"] = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
    return give(path)


def job_ids_of(results: Path) -> list[str]:
    from launch_support import records
    return [r["job_id"] for r in records(results)]


def queued(job_ids: list[str]) -> list[str]:
    out = run(["squeue", "-h", "-r", "-o", "%i"], timeout=30)
    return [j for j in out.stdout.split() if j in job_ids]


def wait_gone(job_ids: list[str], timeout: float = RUN_TIMEOUT_S) -> None:
    wait_until(lambda: not queued(job_ids), timeout, f"jobs {job_ids} to leave the queue", poll=2)


def owner(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


class Site:
    """One module's scratch site: a folder the user owns, its clone, a fast grid, a container profile, and
    launches as the user into <root>/results-<name> (checkpoints beside them)."""

    def __init__(self, root: Path, data: Path, profile_base: str, image_ref: str, **extra):
        from launch_support import write_grid
        self.root, self.data, self.user = give(root), data, ci_user()
        self.grid = write_grid(root / "experiments.yaml")
        grid = yaml.safe_load(self.grid.read_text())
        grid["smoke"]["ser"].update(synthetic_clips=150, epochs=1)    # SER in seconds, as NLI
        self.grid.write_text(yaml.safe_dump(grid, sort_keys=False))
        give(self.grid)
        self.tree = user_checkout(root)
        self.env = launcher_env(root, data)
        self.profile = write_container_profile(root / f"{profile_base}.yaml", profile_base, image_ref)
        self.profile_base = profile_base
        self.__dict__.update(extra)

    def launch(self, name: str, *args: str, tree: Path | None = None, profile: Path | None = None,
               env: dict | None = None, grid: Path | None = None) -> tuple[Path, subprocess.CompletedProcess]:
        results = self.root / f"results-{name}"
        out = launch_as_user(tree or self.tree, ["--smoke", "--experiments", str(grid or self.grid), "--cluster",
                                                "slurm", "--profile", str(profile or self.profile), "--results",
                                                str(results), "--checkpoints", str(self.root / f"ckpt-{name}"), *args],
                             env or self.env)
        return results, out

    def submit_and_wait(self, name: str, *args: str, **kw) -> Path:
        results, out = self.launch(name, *args, **kw)
        assert out.returncode == 0 and "submitted" in out.stdout, out.stdout
        wait_gone(job_ids_of(results))
        return results

    def long_grid(self) -> Path:
        """The site's grid with 40 NLI epochs: a run still training when a test stops it."""
        grid = yaml.safe_load(self.grid.read_text())
        grid["smoke"]["nli"]["epochs"] = 40
        path = self.root / "long.yaml"
        path.write_text(yaml.safe_dump(grid, sort_keys=False))
        return give(path)

    def later_clone(self, name: str) -> tuple[Path, str]:
        """A new clone of the user's with one more commit (a docs file): (its tree, its HEAD)."""
        tree = user_checkout(self.root / name)
        (tree / "docs" / f"{name}.md").write_text("a commit made after the image was built\n")
        give(tree / "docs" / f"{name}.md")
        assert as_user(["git", "-C", str(tree), "add", f"docs/{name}.md"], {}).returncode == 0
        assert as_user(["git", "-C", str(tree), "commit", "-qm", name], {}).returncode == 0
        return tree, as_user(["git", "-C", str(tree), "rev-parse", "HEAD"], {}).stdout.strip()

    def cancel_leftovers(self) -> None:
        ids = [j for results in self.root.glob("results*") for j in job_ids_of(results)]
        if queued(ids):
            run(["scancel", *queued(ids)])
            wait_gone(ids, 60)


def training(results: Path, experiment: str, seed: int) -> dict:
    """The run's submission record, once its job's log says training has begun."""
    from launch_support import job_log, latest_record
    record = wait_until(lambda: latest_record(results, experiment, seed), 60, "the submission record")
    wait_until(lambda: "trainable parameters" in job_log(record), RUN_TIMEOUT_S, "training to start")
    return record


def usr2_mid_training(site: Site, name: str = "usr2") -> tuple[str, dict | None]:
    """nli-full seed 0 launched, signalled the way SLURM signals a containerized job before its time
    limit (USR2 to the batch shell: --signal=B:USR2), waited for: (its job log, its metrics)."""
    from launch_support import job_log, metrics
    results, out = site.launch(name, "--only", "nli-full", "--seeds", "0")
    assert out.returncode == 0, out.stdout
    record = training(results, "nli-full", 0)
    run(["scancel", "--batch", "--signal=USR2", record["job_id"]], timeout=30)
    wait_gone([record["job_id"]], RUN_TIMEOUT_S + 60)
    return job_log(record), metrics(results, "nli-full", 0)
