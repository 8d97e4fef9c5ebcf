"""A SLURM job inside the hw5 image: the commands each container kind runs, what they pass in, and
whether the image holds the checkout's code. Pure composition plus the image inspection; profiles.py
puts it into submitit's settings, launch.py runs the check before anything is submitted.

The kinds (profile `container.kind`), each started by srun from the batch script's `hw5_step`:
- apptainer: `srun apptainer exec [--nv] --bind ... IMAGE python ...`;
- pyxis: `srun --container-image=IMAGE ... python ...` (the step's task is Python in the image);
- docker (engine docker or podman): a container is the engine's child, not the job's, so the step is
  slurm/docker_step.sh, which names it after the job, runs it as the submitting user with the job's
  GPUs and memory, forwards signals and removes it when the step ends or is killed.

The rules, one for every kind:
- Code (`container.code`): `image` (default) runs the hw5 installed in the image, never the checkout
  (no checkout bind, PYTHONPATH unset, the image's working directory, user site-packages off);
  preflight refuses an image whose revision is not the checkout's HEAD, or either side dirty.
  `checkout` binds the checkout and puts it first on the path.
- Environment: what the launcher sets goes in by each runtime's explicit way (APPTAINERENV_*,
  --container-env, -e NAME), so the image's ENV cannot shadow it. SLURM_* and SUBMITIT_*, which the
  job needs, go in too: apptainer and pyxis pass the host's environment (options that drop it are
  refused), docker_step.sh names each one.
- Signals: SLURM's USR2 (time limit, preemption) goes to the batch shell alone (`--signal=B:USR2`),
  which waits on the step and passes it on: to Python's pid for apptainer, through srun otherwise.
  Signalled directly, every process of an apptainer step would get it, and its FUSE helper
  (squashfuse, which serves the image's files) dies of it, taking the job down with a bus error.
- Requeue: an image has no SLURM client. The job leaves a request file (jobs/job.py) and the batch
  script requeues the job from the host once the step has ended (`teardown_lines`).
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from hw5.identity import CONTAINER_VARS, checkout_state
from jobs.slurm_site import run_command

KINDS = ("none", "pyxis", "apptainer", "docker")
ENGINES = ("docker", "podman")
CODE_SOURCES = ("image", "checkout")
IMAGE_WORKDIR = "/app"        # docker/Dockerfile's WORKDIR: nothing importable there
# What the image holds of a checkout, as git pathspecs. The experiments file is not among them: a job
# carries its resolved config, so editing the grid needs no rebuild.
CODE_PATHS = ("hw5", ":(glob)jobs/*.py", "pyproject.toml", "constraints/gpu.txt", "docker/Dockerfile",
              "docker/entrypoint.sh")
# Variables the launcher sets for a job (from its environment, the profile and this module), passed into
# the container by name where set.
PASSED = ("HF_HOME", "HF_HUB_OFFLINE", "HW5_DATA_DIR", "HW5_CACHE_DIR", "HW5_CHECKPOINT_DIR",
          "HW5_NUM_THREADS", "OMP_NUM_THREADS", "PYTHONNOUSERSITE", "HW5_STEP_DIR", "HW5_JOB_END",
          *CONTAINER_VARS.values())
# apptainer options that drop the host's environment, and with it SLURM_* and SUBMITIT_*
DROPS_ENV = ("--cleanenv", "-e", "--containall", "-C")
STEP_SCRIPT = "slurm/docker_step.sh"
REVISION_LABEL = "org.opencontainers.image.revision"
DIRTY_LABEL = "io.github.hw5.git-dirty"


class ContainerError(ValueError):
    """The image cannot be used or checked; str() is the whole message, with the fix."""


@dataclass(frozen=True)
class Image:
    kind: str
    reference: str           # as the profile names it
    id: str | None           # docker/podman image id, SIF header id, or a .sqsh file's sha256
    revision: str | None     # the commit it was built from (its label / build record)
    dirty: bool | None       # built from a tree with uncommitted changes
    run_as: str = ""         # what the job runs: docker/podman pin the inspected id

    def describe(self) -> str:
        dirty = {True: ", built dirty", False: "", None: ""}[self.dirty]
        return (f"{self.kind} image {self.reference} (id {self.id or 'unknown'}, revision "
                f"{self.revision or 'unknown'}{dirty})")


# ---------------------------------------------------------------- reading the image

def inspect_image(container: dict, kind: str) -> Image:
    """Read the image the profile names: its id and revision, before anything is submitted."""
    ref = container["image"]
    if kind == "docker":
        return _inspect_engine(container["engine"], ref)
    if kind == "apptainer":
        return _inspect_sif(ref)
    return _inspect_sqsh(ref)


def _inspect_engine(engine: str, ref: str) -> Image:
    code, out, err = run_command([engine, "image", "inspect", ref], timeout=60)
    if code != 0:
        said = " ".join((err or out).split()) or f"exit code {code}"
        raise ContainerError(f"{engine} cannot read image {ref} ({said}): build it with "
                             f"{rebuild_command('docker', ref, engine)}, or set container.image")
    found = json.loads(out)[0]
    labels = (found.get("Config") or {}).get("Labels") or found.get("Labels") or {}
    return Image("docker", ref, found.get("Id"), labels.get(REVISION_LABEL), _dirty(labels.get(DIRTY_LABEL)),
                 run_as=found.get("Id") or ref)


def _readable_file(ref: str, kind: str) -> Path:
    path = Path(ref).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        why = "is not readable" if path.exists() else "does not exist"
        raise ContainerError(f"container.image {ref} {why}: build it with {rebuild_command(kind, ref)}")
    return path.resolve()


def _inspect_sif(ref: str) -> Image:
    path = _readable_file(ref, "apptainer")
    code, out, err = run_command(["apptainer", "inspect", "--labels", "--json", str(path)], timeout=60)
    if code != 0:
        raise ContainerError(f"apptainer cannot read the labels of {path} ({' '.join(err.split())}): "
                             f"is it a SIF? Build it with {rebuild_command('apptainer', ref)}")
    labels = json.loads(out).get("data", {}).get("attributes", {}).get("labels") or {}
    code, header, _ = run_command(["apptainer", "sif", "header", str(path)], timeout=60)
    sif_id = next((line.split(":", 1)[1].strip() for line in header.splitlines()
                   if code == 0 and line.strip().startswith("ID:")), None)
    return Image("apptainer", ref, sif_id, labels.get(REVISION_LABEL), _dirty(labels.get(DIRTY_LABEL)),
                 run_as=str(path))


def _inspect_sqsh(ref: str) -> Image:
    if "#" in ref or "://" in ref or not Path(ref).expanduser().exists():
        raise ContainerError(f"container.image {ref} is not a local .sqsh file, so its revision cannot be "
                             f"read before submission: import it with {rebuild_command('pyxis', 'hw5.sqsh')} "
                             "and name that file")
    path = _readable_file(ref, "pyxis")
    code, out, err = run_command(["unsquashfs", "-cat", str(path), "opt/hw5/build.json"], timeout=60)
    if code != 0:
        raise ContainerError(f"cannot read opt/hw5/build.json from {path} ({' '.join(err.split())}): "
                             f"unsquashfs (squashfs-tools) must be installed and the image built by "
                             f"docker/build.sh")
    record = json.loads(out)
    from hw5.io import sha256_file
    return Image("pyxis", ref, "sha256:" + sha256_file(path), record.get("git_sha"),
                 _dirty(record.get("git_dirty")), run_as=str(path))


def _dirty(value) -> bool | None:
    return {"true": True, "false": False}.get(str(value).lower())


def rebuild_command(kind: str, ref: str, engine: str = "docker") -> str:
    if kind == "docker":
        return ("DOCKER=podman " if engine == "podman" else "") + f"bash docker/build.sh -t {ref}"
    if kind == "apptainer":
        return f"bash docker/build.sh -t hw5:latest --sif {ref}"
    return f"bash docker/build.sh -t hw5:latest && enroot import -o {ref} dockerd://hw5:latest"


# ---------------------------------------------------------------- which code runs

def code_problems(image: Image, code: str, tree: Path, profile_path: Path, engine: str = "docker") -> list[str]:
    """Why the image may not run this checkout's jobs (empty: it may). `checkout` runs the checkout's
    code, so only `image` compares the image's revision with the checkout."""
    if code == "checkout":
        return []
    sha, dirty = checkout_state(tree, CODE_PATHS)
    fix = (f"rebuild it ({rebuild_command(image.kind, image.reference, engine)}), or run the checkout's code "
           f"with container.code: checkout in {profile_path}")
    problems = []
    if not image.revision or image.revision == "unknown":
        problems.append(f"{image.describe()} names no commit: {fix}")
    elif sha and image.revision != sha:
        problems.append(f"{image.describe()} was built from {image.revision[:12]}, but the checkout is at "
                        f"{sha[:12]}: {fix}")
    if image.dirty:
        problems.append(f"{image.describe()} was built from a tree with uncommitted changes, so it holds no "
                        f"commit's code: commit, then {fix}")
    if dirty:
        problems.append(f"the checkout's code ({tree}) has uncommitted changes (git status): commit them, "
                        f"then {fix}")
    return problems


# ---------------------------------------------------------------- what the job runs

@dataclass(frozen=True)
class Bind:
    host: str
    inside: str
    read_only: bool = False

    def spec(self) -> str:
        return f"{self.host}:{self.inside}" + (":ro" if self.read_only else "")

    @classmethod
    def parse(cls, text: str) -> "Bind":
        """A profile mount: HOST[:INSIDE][:ro]."""
        parts = str(text).split(":")
        read_only = parts[-1] == "ro" and len(parts) > 1
        parts = parts[:-1] if read_only else parts
        return cls(parts[0], parts[1] if len(parts) > 1 else parts[0], read_only)


@dataclass(frozen=True)
class JobPaths:
    """The host paths a job reads and writes, as the launcher resolved them."""
    results: Path
    checkpoints: Path
    data: Path
    experiments: Path | None = None     # the grid file (read for the job's "YAML changed" note)
    steps: Path | None = None           # where a containerized job notes its pid and asks for its requeue
    caches: tuple[Path, ...] = ()       # HW5_CACHE_DIR, HF_HOME: where the launcher's environment sets them

    @classmethod
    def of_launch(cls, results: Path, checkpoints: Path, data: Path, experiments: Path | None,
                  steps: Path | None) -> "JobPaths":
        caches = tuple(Path(os.environ[v]).expanduser().resolve() for v in ("HW5_CACHE_DIR", "HF_HOME")
                       if os.environ.get(v))
        return cls(results.resolve(), checkpoints.resolve(), data.resolve(),
                   experiments.resolve() if experiments else None, steps, caches)

    def make_writable_folders(self) -> None:
        """Create what the job writes, as the submitting user: a runtime would create a missing bind
        source itself (docker as root) or refuse it (apptainer)."""
        for folder in (self.results, self.checkpoints, *self.caches, *([self.steps] if self.steps else [])):
            folder.mkdir(parents=True, exist_ok=True)


def binds(paths: JobPaths, mounts: list, checkout: Path | None) -> list[Bind]:
    """Host folders at the same paths inside: results, checkpoints and caches writable, data and the
    experiments file read-only, the checkout for `code: checkout` read-only, then the profile's mounts.
    A path inside a bound folder of the same or a looser mode comes through that bind; parents are
    bound before what lies inside them."""
    wanted = [(p, False) for p in (paths.results, paths.checkpoints, *paths.caches)]
    wanted += [(p, True) for p in (paths.data, paths.experiments, checkout) if p is not None]
    modes: dict[Path, bool] = {}
    for path, read_only in wanted:
        path = path.resolve()
        modes[path] = modes.get(path, True) and read_only
    kept = [p for p in modes if not any(q != p and q in p.parents and modes[q] <= modes[p] for q in modes)]
    every = [Bind(str(p), str(p), modes[p]) for p in kept] + [Bind.parse(m) for m in mounts]
    return sorted(every, key=lambda b: len(Path(b.inside).parts))     # stable: the profile's after ours


def passed_names(profile_env: dict, code: str) -> list[str]:
    """The variables passed in by name: the launcher's, the profile's, PYTHONPATH for `code: checkout`."""
    names = [*PASSED, *map(str, profile_env)] + (["PYTHONPATH"] if code == "checkout" else [])
    return list(dict.fromkeys(names))


def job_variables(image: Image, code: str, steps_dir: Path, checkout: Path) -> dict[str, str]:
    """What the batch script exports for a containerized step (literal values)."""
    env = {CONTAINER_VARS["kind"]: image.kind, CONTAINER_VARS["image"]: image.reference,
           CONTAINER_VARS["id"]: image.id or "", CONTAINER_VARS["revision"]: image.revision or "",
           "HW5_STEP_DIR": str(steps_dir), "PYTHONNOUSERSITE": "1"}
    if code == "checkout":
        env["PYTHONPATH"] = str(checkout)
    return env


def setup_lines(kind: str, names: list[str], variables: dict[str, str], code: str) -> list[str]:
    """Batch-script lines before the step, on the host."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in variables.items()]
    if code == "image":
        lines.append("unset PYTHONPATH   # the image's hw5 runs, never a checkout on the host's path")
    lines += ['rm -f "$HW5_STEP_DIR/$SLURM_JOB_ID".*   # notes left by an attempt killed before its end',
              # the time limit's end, for telling a time-out from a preemption where squeue is missing
              'hw5_end=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null || true)',
              'case $hw5_end in [0-9]*) export HW5_JOB_END="$(date -d "$hw5_end" +%s)" ;; esac']
    if kind == "apptainer":
        lines.append(f"for hw5_name in {' '.join(names)}; do "
                     '[ -z "${!hw5_name+set}" ] || export "APPTAINERENV_$hw5_name=${!hw5_name}"; done')
    return lines


def step_function(kind: str, srun_args: list[str], command: list[str]) -> list[str]:
    """`hw5_step`, the batch script's step: srun in the background and a `wait` that a signal can
    interrupt (a shell runs no trap while a foreground command runs), so SLURM's USR2, sent to this
    shell alone, is passed on while the step runs."""
    if kind == "apptainer":     # Python's own pid (no PID namespace): not the FUSE helper beside it
        notify = ('kill -USR2 "$(cat "$HW5_STEP_DIR/$SLURM_JOB_ID.pid" 2>/dev/null)" 2>/dev/null '
                  '|| echo "hw5: USR2 came before the step\'s Python started; not passed on"')
    else:                       # srun relays it to the step's processes (docker_step.sh / Python)
        notify = 'kill -USR2 "$hw5_srun"'
    return [f"hw5_usr2() {{ echo \"hw5: USR2 reached the batch shell; passing it to the step\"; {notify}; }}",
            "hw5_step() {",
            f'  srun --unbuffered {shlex.join([*srun_args, *command])} "$@" &',
            "  hw5_srun=$!",
            "  trap hw5_usr2 USR2",
            '  while :; do wait "$hw5_srun"; hw5_rc=$?; kill -0 "$hw5_srun" 2>/dev/null || return "$hw5_rc"; done',
            "}"]


def teardown_lines() -> list[str]:
    """After the step, on the host: requeue when the job asked for it (it has no scontrol inside)."""
    return ['if [ -f "$HW5_STEP_DIR/$SLURM_JOB_ID.requeue" ]; then',
            '  rm -f "$HW5_STEP_DIR/$SLURM_JOB_ID.requeue"',
            '  echo "hw5: the step checkpointed and asked for a requeue; requeueing job $SLURM_JOB_ID from the host"',
            '  scontrol requeue "$SLURM_JOB_ID"',
            'fi']


@dataclass(frozen=True)
class Step:
    """How a job's step is started: submitit's `python` (with or without srun around it), the
    signal SLURM sends before the end, and lines of the batch script before and after."""
    python: str
    setup: tuple[str, ...] = ()
    teardown: tuple[str, ...] = ()
    use_srun: bool = True            # False: `python` is the batch script's own hw5_step, which calls srun
    signal: str | None = None        # sbatch --signal value; None: submitit's USR2@delay to the step


def containerized_step(container: dict, profile_env: dict, gpus: bool, paths: JobPaths, repo_root: Path,
                       image: Image, signal_delay_s: int) -> Step:
    """The step of a job in the image, for the profile's container section (kind apptainer, pyxis, docker)."""
    kind, code = container["kind"], container["code"]
    checkout = repo_root.resolve() if code == "checkout" else None
    mounts = binds(paths, container["mounts"], checkout)
    names = passed_names(profile_env, code)
    workdir = container["workdir"] or (str(checkout) if checkout else IMAGE_WORKDIR)
    variables = job_variables(image, code, paths.steps or paths.results / ".launch" / "steps", repo_root)
    setup = [f"export {k}={shlex.quote(str(v))}" for k, v in profile_env.items()]
    setup += setup_lines(kind, names, variables, code)
    command = runtime_command(container, kind, image, mounts, names, gpus, workdir, repo_root)
    srun = pyxis_srun_args(container, image, mounts, names, workdir) if kind == "pyxis" else []
    setup += step_function(kind, srun, command)
    return Step("hw5_step", tuple(setup), tuple(teardown_lines()), use_srun=False,
                signal=f"B:USR2@{signal_delay_s}")


def runtime_command(container: dict, kind: str, image: Image, mounts: list[Bind], names: list[str],
                    gpus: bool, workdir: str, repo_root: Path) -> list[str]:
    """What srun starts, up to the image's python (submitit appends `-u -m submitit.core._submit DIR`)."""
    extra, python = [str(a) for a in container["extra_args"]], container["python"] or "python"
    if kind == "apptainer":
        return ["apptainer", "exec", *(["--nv"] if gpus else []), "--bind", ",".join(b.spec() for b in mounts),
                "--pwd", workdir, *extra, image.run_as, python]
    if kind == "docker":
        return [str(repo_root / STEP_SCRIPT), container["engine"], "gpus" if gpus else "nogpus",
                *[a for name in names for a in ("-e", name)], *[a for b in mounts for a in ("-v", b.spec())],
                "-w", workdir, *extra, image.run_as, python]
    return [python]         # pyxis: srun's --container-image puts the step in the image


def pyxis_srun_args(container: dict, image: Image, mounts: list[Bind], names: list[str], workdir: str) -> list[str]:
    return [f"--container-image={image.run_as}", f"--container-mounts={','.join(b.spec() for b in mounts)}",
            f"--container-workdir={workdir}", f"--container-env={','.join(names)}",
            *map(str, container["extra_args"])]
