"""Cluster profiles (slurm/profiles/<name>.yaml) -> submitit executor settings.

A profile says where jobs go (partition, account, QOS), what they get (GPUs, CPUs, memory, time),
how many array tasks run at once, and how the project runs on the node: the launcher's own venv python,
or the hw5 image through apptainer, pyxis or docker/podman (jobs/container.py composes those). Every
key is checked here; a typo is one error naming the file, the key and the fix.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw5.config import REPO_ROOT, ConfigError, parse_yaml, seed_ranges
from jobs.container import (CODE_SOURCES, DROPS_ENV, ENGINES, KINDS, Image, JobPaths, Step,
                            containerized_step)

PROFILE_DIR = REPO_ROOT / "slurm" / "profiles"

# The schema: every key a profile may set, with its default (the comments live in the profile files).
DEFAULTS: dict[str, Any] = {
    "slurm": {"partition": None, "account": None, "qos": None, "gpus_per_node": 0, "gpu_type": None,
              "gpu_flag": "gpus-per-node", "allow_cpu": False, "cpus_per_task": 1, "mem_gb": 4.0,
              "timeout_min": 60, "signal_delay_s": 90, "array_parallelism": 16, "max_num_timeout": 3,
              "constraint": None, "reservation": None, "exclusive": False, "mail_type": None,
              "mail_user": None, "job_name_prefix": "hw5", "setup": [], "additional_parameters": {}},
    "container": {"kind": "none", "image": None, "engine": "docker", "code": "image", "mounts": [],
                  "workdir": None, "python": None, "extra_args": []},
    "python": None,
    "runs_per_job": 1,
    "runs_per_gpu": 1,
    "env": {},
    "local": {"max_parallel": 2, "timeout_min": 120},
}
# Allowed types per key (None is allowed where the default is None).
TYPES: dict[str, Any] = {
    "partition": str, "account": str, "qos": str, "gpus_per_node": int, "gpu_type": str, "gpu_flag": str,
    "allow_cpu": bool, "cpus_per_task": int, "mem_gb": (int, float), "timeout_min": int,
    "signal_delay_s": int, "array_parallelism": int, "max_num_timeout": int, "constraint": str,
    "reservation": str, "exclusive": bool, "mail_type": str, "mail_user": str, "job_name_prefix": str,
    "setup": list, "additional_parameters": dict,
    "kind": str, "image": str, "engine": str, "code": str, "mounts": list, "workdir": str, "extra_args": list,
    "python": str, "env": dict, "max_parallel": int, "runs_per_job": int,
    "runs_per_gpu": int,
}
GPU_FLAGS = ("gpus-per-node", "gres", "gpus")   # how the GPU request is spelled to sbatch


class ProfileError(ValueError):
    """A user-facing profile problem; str() is the whole message."""


@dataclass
class Profile:
    name: str
    path: Path
    slurm: dict
    container: dict
    python: str | None
    runs_per_job: int
    runs_per_gpu: int
    env: dict
    local: dict


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_path(name_or_path: str) -> Path:
    """A profile name (slurm/profiles/<name>.yaml) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    return PROFILE_DIR / f"{name_or_path}.yaml"


def load_profile(name_or_path: str) -> Profile:
    path = profile_path(name_or_path)
    if not path.is_file():
        raise ProfileError(f"{path}: no such cluster profile (available: {', '.join(available_profiles())}; "
                           "or pass --profile path/to/profile.yaml)")
    try:
        data = parse_yaml(path) or {}       # the experiments file's strict reader: no key given twice
    except ConfigError as exc:
        raise ProfileError(str(exc)) from None
    merged = _merge(path, "", copy.deepcopy(DEFAULTS), data)
    _check_container(path, merged["container"])
    _check_slurm(path, merged["slurm"])
    if merged["local"]["max_parallel"] < 1:
        raise ProfileError(f"{path}: local.max_parallel must be >= 1")
    if merged["runs_per_job"] < 1:
        raise ProfileError(f"{path}: runs_per_job must be >= 1 (1: one job per run; e.g. 5: five runs share a job)")
    if merged["runs_per_gpu"] < 1:
        raise ProfileError(f"{path}: runs_per_gpu must be >= 1 (1: a pack's runs one after the other)")
    return Profile(name=path.stem, path=path.resolve(), **merged)


def _check_container(path: Path, c: dict) -> None:
    for key, allowed in (("kind", KINDS), ("engine", ENGINES), ("code", CODE_SOURCES)):
        if c[key] not in allowed:
            raise ProfileError(f"{path}: container.{key} is '{c[key]}', expected one of {', '.join(allowed)}")
    if c["kind"] != "none" and not c["image"]:
        raise ProfileError(f"{path}: container.kind '{c['kind']}' needs container.image (a .sif or .sqsh file, "
                           "or a docker image name)")
    dropped = [a for a in map(str, c["extra_args"]) if a in DROPS_ENV or a.startswith(("--cleanenv=", "--containall="))]
    if c["kind"] == "apptainer" and dropped:
        raise ProfileError(f"{path}: container.extra_args has {dropped[0]}, which drops the host environment and "
                           "with it SLURM_* and SUBMITIT_*, which the job needs; remove it (the launcher passes "
                           "what it sets explicitly, so the image's ENV cannot shadow it)")


def _check_slurm(path: Path, s: dict) -> None:
    for key in ("timeout_min", "cpus_per_task", "array_parallelism"):
        if s[key] < 1:
            raise ProfileError(f"{path}: slurm.{key} must be >= 1")
    for key in ("gpus_per_node", "signal_delay_s", "max_num_timeout"):
        if s[key] < 0:
            raise ProfileError(f"{path}: slurm.{key} must be >= 0")
    if s["signal_delay_s"] >= s["timeout_min"] * 60:
        raise ProfileError(f"{path}: slurm.signal_delay_s ({s['signal_delay_s']} s) must be shorter than the time "
                           f"limit slurm.timeout_min ({s['timeout_min']} min = {s['timeout_min'] * 60} s), or USR2 "
                           f"(checkpoint and requeue) is due before any training; e.g. signal_delay_s: "
                           f"{min(120, s['timeout_min'] * 15)}")
    if s["gpu_flag"] not in GPU_FLAGS:
        raise ProfileError(f"{path}: slurm.gpu_flag is '{s['gpu_flag']}', expected one of {', '.join(GPU_FLAGS)}")
    if s["gpu_type"] and not s["gpus_per_node"]:
        raise ProfileError(f"{path}: slurm.gpu_type '{s['gpu_type']}' needs slurm.gpus_per_node >= 1")
    if not s["job_name_prefix"]:
        raise ProfileError(f"{path}: slurm.job_name_prefix must not be empty (jobs are named <prefix>-<exp>-s<seeds>)")


def _merge(path: Path, where: str, defaults: dict, data: Any) -> dict:
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: {where or 'the file'} must be a mapping of key: value")
    for key, value in data.items():
        here = f"{where}{key}"
        if key not in defaults:
            near = difflib.get_close_matches(str(key), list(defaults), n=1)
            hint = f"; did you mean '{where}{near[0]}'?" if near else ""
            raise ProfileError(f"{path}: unknown key '{here}'{hint} (see slurm/profiles/local.yaml)")
        if isinstance(defaults[key], dict) and key not in ("env", "additional_parameters"):
            defaults[key] = _merge(path, f"{here}.", defaults[key], value or {})
            continue
        want = TYPES[key]
        if value is not None and (not isinstance(value, want) or isinstance(value, bool) and want is not bool):
            name = want.__name__ if isinstance(want, type) else "number"
            raise ProfileError(f"{path}: {here} must be {name}, got {value!r}")
        defaults[key] = value if value is not None else defaults[key]
    return defaults


def job_environment(profile: Profile, repo_root: Path) -> dict[str, str]:
    """Variables a job without a container exports: the checkout importable, plus the profile's env."""
    # the checkout is quoted (a path with a space or ';' stays one word); the expansion stays live
    env = {"PYTHONPATH": shlex.quote(str(repo_root)) + '"${PYTHONPATH:+:$PYTHONPATH}"'}
    env.update({str(k): str(v) for k, v in profile.env.items()})
    return env


def setup_lines(profile: Profile, repo_root: Path) -> list[str]:
    """Shell lines run before a bare job's python starts (in sbatch, or the local executor's shell)."""
    lines = [str(line) for line in profile.slurm["setup"]]
    for key, value in job_environment(profile, repo_root).items():
        # PYTHONPATH is quoted above with its ${...} expansion; profile values are quoted literally
        rhs = value if key == "PYTHONPATH" else shlex.quote(value)
        lines.append(f"export {key}={rhs}")
    return lines


def job_step(profile: Profile, paths: JobPaths, repo_root: Path, image: Image | None) -> Step:
    """How a SLURM job of this profile starts its step: bare, or in the image (`image` as inspected)."""
    c = profile.container
    if c["kind"] == "none":
        return Step(profile.python or shlex.quote(sys.executable), setup=tuple(setup_lines(profile, repo_root)))
    if image is None:
        raise ProfileError(f"{profile.path}: container.kind '{c['kind']}' needs its image inspected first")
    env = {str(k): str(v) for k, v in profile.env.items()}
    step = containerized_step(c, env, wants_gpu(profile), paths, repo_root, image, profile.slurm["signal_delay_s"])
    return dataclasses.replace(step, setup=tuple(map(str, profile.slurm["setup"])) + step.setup)


def executor_settings(profile: Profile, cluster: str, paths: JobPaths, repo_root: Path = REPO_ROOT,
                      image: Image | None = None) -> tuple[dict, dict]:
    """(AutoExecutor constructor kwargs, update_parameters kwargs) for `cluster`; pure, testable."""
    s = profile.slurm
    if cluster != "slurm":
        # local/debug: this machine's python; only the time limit and env carry over
        return ({"local_python": shlex.quote(sys.executable)} if cluster == "local" else {},
                {"timeout_min": int(profile.local["timeout_min"]), "local_setup": setup_lines(profile, repo_root)})
    step = job_step(profile, paths, repo_root, image)
    params = {"timeout_min": int(s["timeout_min"]), "cpus_per_task": s["cpus_per_task"],
              "mem_gb": s["mem_gb"], "slurm_signal_delay_s": s["signal_delay_s"],
              "slurm_array_parallelism": s["array_parallelism"], "slurm_setup": list(step.setup)}
    if step.teardown:
        params["slurm_teardown"] = list(step.teardown)
    if not step.use_srun:
        params["slurm_use_srun"] = False
    extra = dict(gpu_request(s))
    if step.signal:
        extra["signal"] = step.signal
    for key in ("partition", "account", "qos", "constraint", "mail_type", "mail_user"):
        if s[key]:
            params[f"slurm_{key}"] = s[key]
    if s["exclusive"]:
        params["slurm_exclusive"] = True
    if s["reservation"]:
        extra["reservation"] = s["reservation"]
    extra.update(s["additional_parameters"])   # sbatch options by name, '_' for '-': {nodelist: n1}
    if extra:
        params["slurm_additional_parameters"] = extra
    return {"slurm_python": step.python, "slurm_max_num_timeout": s["max_num_timeout"]}, params


def gpu_request(s: dict) -> dict:
    """The GPU request as sbatch spells it on this site: --gpus-per-node, --gres or --gpus."""
    if not s["gpus_per_node"]:
        return {}
    typed = f"{s['gpu_type']}:{s['gpus_per_node']}" if s["gpu_type"] else str(s["gpus_per_node"])
    flag = s["gpu_flag"]
    return {"gres": f"gpu:{typed}"} if flag == "gres" else {flag.replace("-", "_"): typed}


def wants_gpu(profile: Profile) -> bool:
    return bool(profile.slurm["gpus_per_node"])


def job_name(profile: Profile, experiment: str, seeds: list[int]) -> str:
    """<prefix>-<exp>-s<seeds>: squeue and sacct say which runs an array holds (s0-4, s1,3, s2)."""
    return f"{profile.slurm['job_name_prefix']}-{experiment}-s{seed_ranges(seeds)}"


def make_executor(profile: Profile, cluster: str, folder: Path, paths: JobPaths, image: Image | None = None):
    import submitit   # only the launcher needs it; `--help` and profile checks work without
    ctor, params = executor_settings(profile, cluster, paths, image=image)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **ctor)
    executor.update_parameters(name=profile.slurm["job_name_prefix"], **params)
    return executor
