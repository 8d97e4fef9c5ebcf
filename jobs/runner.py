"""Putting runs on an executor: SLURM arrays (returns at once), local processes (waits), debug (inline)."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hw5.io import now_iso
from jobs.container import Image, JobPaths
from jobs.job import Job
from jobs.ledger import Ledger, Record
from jobs.limits import read_limits
from jobs.pack import RunSpec
from jobs.profiles import Profile, job_name, make_executor
from jobs.scheduler import cmdline, descendants, job_result, packed_state
from jobs.slurm_site import refusal_hint

POLL_S = 2.0            # how often the local runner looks at its processes
# After Ctrl-C the local runs finish their step and save a checkpoint: seconds for the tiny models, the
# full models' optimizer state in well under a minute; then whatever still runs is killed.
STOP_WAIT_S = 120.0
HEARTBEAT_S = 60.0      # a "still running" line at least this often


def _record(spec: RunSpec, job, key, cluster: str, profile: Profile, pack: int = 1) -> Record:
    return Record(spec.experiment, spec.seed, spec.smoke, key.config_hash, str(job.job_id), cluster,
                  str(job.paths.folder), now_iso(), profile.name, str(profile.path), key.data, pack)


class SubmissionRefused(Exception):
    """sbatch said no; str() is its message with what to change."""


@dataclass
class Array:
    """One sbatch submission: a job array (or one job) whose tasks are packs of runs (one run each
    unless runs_per_job > 1)."""
    name: str
    packs: list[list[RunSpec]]
    parallelism: int = 1   # its tasks running at once: its share of the profile's array_parallelism
    script: str = ""       # the exact sbatch file submitit will submit
    lanes: int = 1         # runs of a pack at once on its GPU (runs_per_gpu)

    @property
    def specs(self) -> list[RunSpec]:
        return [spec for pack in self.packs for spec in pack]


def make_packs(specs: list[RunSpec], runs_per_job: int) -> list[list[RunSpec]]:
    """Jobs of at most runs_per_job runs, each of one task (its runs share weights and data), in grid
    order, as even in size as the count allows (25 runs, 10 per job: 9 + 8 + 8, not 10 + 10 + 5)."""
    if runs_per_job <= 1:
        return [[spec] for spec in specs]
    by_task: dict[str, list[RunSpec]] = {}
    for spec in specs:
        by_task.setdefault(str((spec.config or {}).get("task", spec.experiment)), []).append(spec)
    packs = []
    for group in by_task.values():
        count = -(-len(group) // runs_per_job)
        size, extra = divmod(len(group), count)
        start = 0
        for i in range(count):
            end = start + size + (i < extra)
            packs.append(group[start:end])
            start = end
    return packs


def plan_arrays(specs: list[RunSpec], profile: Profile, ledger: Ledger, paths: JobPaths,
                runs_per_job: int = 1, lanes: int = 1, image: Image | None = None) -> list[Array]:
    """One array per experiment (per task when runs are packed), each with its sbatch script rendered."""
    executor = make_executor(profile, "slurm", ledger.submitit_folder, paths, image)
    groups: dict[str, list[list[RunSpec]]] = {}
    for pack in make_packs(specs, runs_per_job):
        group = pack[0].experiment if runs_per_job <= 1 else f"{(pack[0].config or {}).get('task', 'runs')}-packed"
        groups.setdefault(group, []).append(pack)
    arrays = []
    shares = parallelism_shares(profile.slurm["array_parallelism"], [len(g) for g in groups.values()])
    for (group, packs), share in zip(groups.items(), shares):
        name = job_name(profile, group, [s.seed for pack in packs for s in pack])
        arrays.append(Array(name, packs, share, sbatch_script(executor, name, len(packs), share), lanes))
    return arrays


def parallelism_shares(total: int, sizes: list[int]) -> list[int]:
    """Split the profile's array_parallelism over the arrays (at least 1 each), so that all arrays
    together run about as many tasks at once as one array of the whole grid would."""
    shares = [1] * len(sizes)
    spare = total - len(sizes)
    while spare > 0 and any(share < size for share, size in zip(shares, sizes)):
        for i, size in enumerate(sizes):
            if spare > 0 and shares[i] < size:
                shares[i] += 1
                spare -= 1
    return shares


def sbatch_script(executor, name: str, tasks: int, parallelism: int) -> str:
    """What submitit writes for this array (its private renderer: the request shown is the one sent)."""
    from submitit.slurm.slurm import _make_sbatch_string
    inner = executor._executor
    params = {**inner.parameters, "job_name": name, "array_parallelism": parallelism}
    return _make_sbatch_string(command=inner._submitit_command_str, folder=inner.folder,
                               map_count=tasks if tasks > 1 else None, **params)


def sbatch_request(script: str) -> list[str]:
    """The #SBATCH lines of a script, as `--key=value` (what is asked of sbatch)."""
    return [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def submit_to_slurm(arrays: list[Array], keys: dict, profile: Profile, ledger: Ledger,
                    paths: JobPaths, image: Image | None = None) -> None:
    """Submit each array (recorded as soon as sbatch accepts it); does not wait."""
    if image is not None:
        paths.make_writable_folders()
    executor = make_executor(profile, "slurm", ledger.submitit_folder, paths, image)
    for array in arrays:
        executor.update_parameters(name=array.name, slurm_array_parallelism=array.parallelism)
        before = _loose_files(ledger)
        try:
            with executor.batch():
                jobs = [executor.submit(Job(pack, array.lanes)) for pack in array.packs]
        except Exception as exc:   # sbatch's own message (bad partition, account, ...) is the useful part
            _remove_new_files(ledger, before)   # a refused submission leaves no pickles behind
            text = " ".join(str(exc).split())
            done = arrays[:arrays.index(array)]
            so_far = (f"\n  submitted before it: {', '.join(a.name for a in done)}; not submitted: "
                      f"{', '.join(a.name for a in arrays[len(done):])}" if done else "")
            raise SubmissionRefused(f"sbatch refused {array.name} ({profile.path}): {text}{so_far}"
                                    + refusal_hint(text, profile.path, _limit_reached(profile))) from None
        ledger.add([_record(spec, job, keys[spec.id], "slurm", profile, len(pack))
                    for pack, job in zip(array.packs, jobs) for spec in pack])
        first = str(jobs[0].job_id).split("_")[0]
        runs = f"{len(array.specs)} run(s)" + (f" in {len(jobs)} packed job(s)" if len(jobs) < len(array.specs) else "")
        print(f"submitted {array.name}: {runs} as SLURM job {first}"
              + (f" ({jobs[0].job_id} .. {jobs[-1].job_id}), at most {array.parallelism} at once"
                 if len(jobs) > 1 else ""))
        for pack, job in zip(array.packs, jobs):
            print(f"  {job.job_id:<12} {', '.join(spec.name for spec in pack)}")
    smoke = "smoke/" if arrays and arrays[0].specs[0].smoke else ""
    print(f"logs: {ledger.root / 'logs'}/{smoke}<experiment>/seed-<n>/   state: python jobs/launch.py --status")


def _limit_reached(profile: Profile) -> bool:
    """The account may submit jobs at all (a refusal for MaxSubmitJobs is then a limit reached)."""
    return read_limits(profile.slurm["account"], profile.slurm["qos"], profile.slurm["partition"]).max_submit != 0


def _loose_files(ledger: Ledger) -> set[Path]:
    folder = ledger.submitit_folder.parent      # where submitit stages pickles and sbatch files
    return {p for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def _remove_new_files(ledger: Ledger, before: set[Path]) -> None:
    for path in _loose_files(ledger) - before:
        path.unlink(missing_ok=True)


class _LogFollower:
    """Prints the new lines of a job's stdout, prefixed with the run's name (local progress)."""

    def __init__(self, name: str, path: Path):
        self.name, self.path, self.offset = name, path, 0

    def poll(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                handle.seek(self.offset)
                text = handle.read()
                self.offset = handle.tell()
        except FileNotFoundError:
            return
        for line in text.splitlines():
            if line.strip() and not line.startswith("submitit "):
                print(f"  [{self.name}] {line}", flush=True)


def pack_label(pack: list[RunSpec]) -> str:
    return pack[0].name if len(pack) == 1 else f"pack of {len(pack)} ({pack[0].name} .. {pack[-1].name})"


class LocalRunsStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the local runs; str() is the one line that says what and how to resume."""


def run_locally(packs: list[list[RunSpec]], keys: dict, profile: Profile, ledger: Ledger,
                paths: JobPaths, lanes: int = 1) -> int:
    """Local processes (one per pack), at most profile.local.max_parallel at once; waits and summarises.
    Ctrl-C / SIGTERM: the running runs save a checkpoint and stop (`interrupted`), LocalRunsStopped."""
    executor = make_executor(profile, "local", ledger.submitit_folder, paths)
    limit, queue, running, failed = profile.local["max_parallel"], list(packs), {}, []
    started, beat = time.time(), time.time()
    total = sum(len(pack) for pack in packs)
    print(f"running {total} run(s) locally" + (f" in {len(packs)} packed jobs" if len(packs) < total else "")
          + f", {limit} at once", flush=True)
    try:
        while queue or running:
            while queue and len(running) < limit:
                pack = queue.pop(0)
                with children_ignore_sigint():
                    job = executor.submit(Job(pack, lanes))
                records = [_record(spec, job, keys[spec.id], "local", profile, len(pack)) for spec in pack]
                ledger.add(records)
                running[job.job_id] = (job, records, _LogFollower(pack_label(pack), records[0].stdout), time.time())
                print(f"started {pack_label(pack)} (local job {job.job_id}; log {records[0].stdout})", flush=True)
            time.sleep(POLL_S)
            for job_id, (job, records, follower, t0) in list(running.items()):
                follower.poll()
                if job.done():
                    del running[job_id]
                    failed += [r.name for r in records if not _report_local(r, time.time() - t0)]
            if running and time.time() - beat > HEARTBEAT_S:
                beat = time.time()
                print(f"still running: {', '.join(f.name for _, _, f, _ in running.values())} "
                      f"({time.time() - started:.0f} s)")
    except KeyboardInterrupt:
        stopped = [r.name for _, records, _, _ in running.values() for r in records]
        stop_local_jobs([job for job, _, _, _ in running.values()])
        waiting = sum(len(pack) for pack in queue)
        raise LocalRunsStopped(f"stopped: {len(stopped)} run(s) interrupted ({', '.join(stopped) or 'none'}), "
                               f"their checkpoints kept; {waiting} not started. Run the same command again to "
                               "resume") from None
    print(f"local runs finished in {time.time() - started:.0f} s: {total - len(failed)} ok, "
          f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


@contextlib.contextmanager
def children_ignore_sigint():
    """Processes started here begin with SIGINT ignored. A terminal's Ctrl-C goes to its whole process
    group: it should reach the launcher and the runs (which install their own handler: jobs/job.py),
    not submitit's local controllers, which would print a traceback and kill their run mid-checkpoint."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_local_jobs(jobs: list, wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM to each local job's run (it checkpoints at its next step and exits), wait for them, then
    kill whatever is left of the jobs' processes. A second Ctrl-C stops the waiting at once."""
    for job in jobs:
        for pid in _run_pids(int(job.job_id)):
            _signal(pid, signal.SIGTERM)
    if jobs:
        print(f"\nstopping {len(jobs)} local job(s): each saves a checkpoint at its next step "
              "(Ctrl-C again stops at once)", flush=True)
    deadline = time.time() + wait_s
    try:
        while any(not job.done() for job in jobs) and time.time() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for job in jobs:
        for pid in [int(job.job_id), *descendants(int(job.job_id))]:
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _run_pids(job_pid: int) -> list[int]:
    """The run processes (submitit's task, `python -m submitit.core._submit`) under a local job."""
    return [pid for pid in descendants(job_pid) if "submitit.core._submit" in cmdline(pid)]


def _report_local(record: Record, seconds: float) -> bool:
    """Say how one run of a finished local job ended; True when it succeeded."""
    packed = packed_state(record)
    outcome = job_result(record)
    if packed.get("state") == "done" or (not packed and outcome and outcome[0] == "success"):
        print(f"finished {record.name} in {seconds:.0f} s", flush=True)
        return True
    detail = (packed.get("error") if packed.get("state") == "failed" else None) or (
        outcome[1] if outcome else f"the job process ended without a result; see {record.stderr}")
    print(f"FAILED {record.name} after {seconds:.0f} s (log {record.stderr}):", flush=True)
    print("\n".join("    " + line for line in detail.rstrip().splitlines()[-20:]), flush=True)
    return False


def run_in_process(packs: list[list[RunSpec]], keys: dict, profile: Profile, ledger: Ledger,
                   paths: JobPaths, lanes: int = 1) -> int:
    """submitit's DebugExecutor: every pack in this process, one after the other (pdb on errors)."""
    executor = make_executor(profile, "debug", ledger.submitit_folder, paths)
    failed = 0
    for pack in packs:
        print(f"running {pack_label(pack)} in this process", flush=True)
        try:
            executor.submit(Job(pack, lanes)).result()
        except Exception as exc:   # reported and counted; the next pack still goes
            failed += 1
            print(f"FAILED {pack_label(pack)}: {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0
