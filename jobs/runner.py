"""Putting runs on an executor: SLURM arrays (returns at once), local processes (waits), debug (inline)."""
from __future__ import annotations

import time
from pathlib import Path

from jobs import ledger as ledger_mod
from jobs.job import Job, RunSpec
from jobs.ledger import Ledger, Record, now_iso
from jobs.profiles import Profile, make_executor

POLL_S = 2.0            # how often the local runner looks at its processes
HEARTBEAT_S = 60.0      # a "still running" line at least this often
WAIT_POLL_S = 10.0      # --wait on SLURM: squeue/sacct at most this often


def _record(spec: RunSpec, job, hashes: dict, cluster: str, profile: Profile) -> Record:
    return Record(spec.experiment, spec.seed, spec.smoke, hashes[(spec.experiment, spec.seed, spec.smoke)],
                  str(job.job_id), cluster, str(job.paths.folder), now_iso(), profile.name)


def submit_to_slurm(specs: list[RunSpec], hashes: dict, profile: Profile, ledger: Ledger,
                    shared: list[Path]) -> None:
    """One job array for all runs (executor.batch()); records them; does not wait."""
    executor = make_executor(profile, "slurm", ledger.submitit_folder, shared)
    try:
        with executor.batch():
            jobs = [executor.submit(Job(spec)) for spec in specs]
    except Exception as exc:   # sbatch's own message (bad partition, account, ...) is the useful part
        raise SystemExit(f"error: sbatch refused the submission ({profile.path}):\n{exc}") from None
    ledger.add([_record(spec, job, hashes, "slurm", profile) for spec, job in zip(specs, jobs)])
    array = str(jobs[0].job_id).split("_")[0]
    print(f"submitted {len(jobs)} run(s) as SLURM job {array} ({jobs[0].job_id} .. {jobs[-1].job_id}), "
          f"at most {profile.slurm['array_parallelism']} at once")
    for spec, job in zip(specs, jobs):
        print(f"  {job.job_id:<12} {spec.name}")
    print(f"logs: {ledger.root / 'logs'}/<experiment>/seed-<n>/   state: python jobs/launch.py --status")


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


def run_locally(specs: list[RunSpec], hashes: dict, profile: Profile, ledger: Ledger,
                shared: list[Path]) -> int:
    """Local processes, at most profile.local.max_parallel at once; waits and summarises."""
    executor = make_executor(profile, "local", ledger.submitit_folder, shared)
    limit, queue, running, failed = profile.local["max_parallel"], list(specs), {}, []
    started, beat = time.time(), time.time()
    print(f"running {len(specs)} run(s) locally, {limit} at once", flush=True)
    while queue or running:
        while queue and len(running) < limit:
            spec = queue.pop(0)
            job = executor.submit(Job(spec))
            record = _record(spec, job, hashes, "local", profile)
            ledger.add([record])
            running[spec] = (job, record, _LogFollower(spec.name, record.stdout), time.time())
            print(f"started {spec.name} (local job {job.job_id}; log {record.stdout})", flush=True)
        time.sleep(POLL_S)
        for spec, (job, record, follower, t0) in list(running.items()):
            follower.poll()
            if job.done():
                del running[spec]
                if not _report_local(spec, record, time.time() - t0):
                    failed.append(spec)
        if running and time.time() - beat > HEARTBEAT_S:
            beat = time.time()
            print(f"still running: {', '.join(s.name for s in running)} ({time.time() - started:.0f} s)")
    print(f"local runs finished in {time.time() - started:.0f} s: {len(specs) - len(failed)} ok, "
          f"{len(failed)} failed" + (f" ({', '.join(s.name for s in failed)})" if failed else ""))
    return 1 if failed else 0


def _report_local(spec: RunSpec, record: Record, seconds: float) -> bool:
    outcome = ledger_mod.job_result(record)
    if outcome and outcome[0] == "success":
        print(f"finished {spec.name} in {seconds:.0f} s", flush=True)
        return True
    detail = outcome[1] if outcome else f"the job process ended without a result; see {record.stderr}"
    print(f"FAILED {spec.name} after {seconds:.0f} s (log {record.stderr}):", flush=True)
    print("\n".join("    " + line for line in detail.rstrip().splitlines()[-20:]), flush=True)
    return False


def run_in_process(specs: list[RunSpec], hashes: dict, profile: Profile, ledger: Ledger,
                   shared: list[Path]) -> int:
    """submitit's DebugExecutor: every run in this process, one after the other (pdb on errors)."""
    executor = make_executor(profile, "debug", ledger.submitit_folder, shared)
    failed = 0
    for spec in specs:
        print(f"running {spec.name} in this process", flush=True)
        try:
            executor.submit(Job(spec)).result()
        except Exception as exc:   # reported and counted; the next run still goes
            failed += 1
            print(f"FAILED {spec.name}: {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


def wait_for_runs(refresh, show) -> int:
    """--wait: poll states until nothing is pending or running; 1 if a run failed."""
    last = None
    while True:
        runs = refresh()
        counts = {s: sum(r.state == s for r in runs) for s in ("pending", "running", "done", "failed")}
        if counts != last:
            print(time.strftime("%H:%M:%S ") + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
            last = counts
        if not counts["pending"] and not counts["running"]:
            show(runs)
            return 1 if counts["failed"] else 0
        time.sleep(WAIT_POLL_S)
