"""A site's limits on how many jobs a user may have, read before anything is submitted.

SLURM counts every array task as a job. An association (user + account) or a QOS may cap the jobs a
user has queued and running (MaxSubmitJobs / MaxSubmitPU) and those running at once (MaxJobs /
MaxJobsPU); the cluster caps an array's size (MaxArraySize). sbatch refuses what goes over the first
and the last, and a launch that meets the refusal halfway leaves half a grid queued. So preflight
adds this launch's jobs to what the user already has queued and refuses a grid that does not fit,
naming the numbers and a fix that fits: the smallest `--pack N`, else fewer runs.
"""
from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Callable

from jobs.slurm_site import default_account, run_command


@dataclass
class Limits:
    max_submit: int | None = None     # jobs queued + running (the smaller of the association's and the QOS's)
    max_jobs: int | None = None       # jobs running at once
    max_array_size: int | None = None  # an array's tasks must number fewer than this
    source: str = ""                  # where max_submit comes from, for the message


def _number(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def read_limits(account: str | None, qos: str | None, partition: str | None = None) -> Limits:
    """The limits that apply to `account` (None: the user's default) on `partition` and `qos` (None: the
    association's default QOS)."""
    limits = Limits()
    account = account or default_account()
    code, out, _ = run_command(["sacctmgr", "-n", "-P", "show", "assoc", f"user={getpass.getuser()}",
                                "format=account,partition,maxsubmit,maxjobs,defaultqos"])
    rows = [(line.split("|") + [""] * 5)[:5] for line in out.splitlines() if code == 0 and line.strip()]
    mine = [r for r in rows if r[0] == account]    # an association per partition wins over the account's own
    row = next((r for r in mine if partition and r[1] == partition), next((r for r in mine if not r[1]), None))
    if row:
        limits.max_submit, limits.max_jobs = _number(row[2]), _number(row[3])
        limits.source = f"association of account {row[0]}"
        qos = qos or row[4] or None
    if qos:
        _apply_qos(limits, qos)
    code, out, _ = run_command(["scontrol", "show", "config"])
    for line in out.splitlines() if code == 0 else []:
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            limits.max_array_size = _number(value)
    return limits


def _apply_qos(limits: Limits, qos: str) -> None:
    code, out, _ = run_command(["sacctmgr", "-n", "-P", "show", "qos", qos, "format=name,maxsubmitpu,maxjobspu"])
    fields = (out.splitlines()[0].split("|") + ["", ""])[:3] if code == 0 and out.strip() else ["", "", ""]
    submit, jobs = _number(fields[1]), _number(fields[2])
    if submit is not None and (limits.max_submit is None or submit < limits.max_submit):
        limits.max_submit, limits.source = submit, f"QOS {qos}"
    if jobs is not None and (limits.max_jobs is None or jobs < limits.max_jobs):
        limits.max_jobs = jobs


def queued_jobs() -> int:
    """The user's jobs now queued or running, each array task counted (as SLURM counts them)."""
    code, out, _ = run_command(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i"])
    return len(out.split()) if code == 0 else 0


def limit_problems(limits: Limits, array_sizes: list[int], jobs_with_pack: Callable[[int], int],
                   queued: int, largest_pack: int) -> list[str]:
    """Why this launch does not fit the limits (empty when it does), each with a fix that fits."""
    problems = []
    adding = sum(array_sizes)
    if limits.max_submit == 0:
        return [f"the {limits.source} may submit no jobs at all (MaxSubmitJobs=0): set slurm.account to "
                "another of your accounts (sacctmgr show assoc user=$USER format=account,maxsubmit)"]
    if limits.max_submit is not None and queued + adding > limits.max_submit:
        room = limits.max_submit - queued
        problems.append(f"this launch adds {adding} job(s) to the {queued} you have queued, {queued + adding} in "
                        f"all, over MaxSubmitJobs={limits.max_submit} ({limits.source}): "
                        + _fix(lambda n: jobs_with_pack(n) <= room, jobs_with_pack, largest_pack, room))
    if limits.max_array_size is not None and array_sizes and max(array_sizes) >= limits.max_array_size:
        problems.append(f"an array of {max(array_sizes)} tasks is over the cluster's MaxArraySize="
                        f"{limits.max_array_size}: " + _fix(lambda n: jobs_with_pack(n) < limits.max_array_size,
                                                             jobs_with_pack, largest_pack, limits.max_array_size - 1))
    return problems


def _fix(fits: Callable[[int], bool], jobs_with_pack: Callable[[int], int], largest_pack: int, room: int) -> str:
    pack = next((n for n in range(2, largest_pack + 1) if fits(n)), None)
    if pack:
        return f"add --pack {pack} ({jobs_with_pack(pack)} job(s), {pack} runs each at most)"
    if room <= 0:
        return "wait until some of your queued jobs end (squeue -u $USER), then launch again"
    return f"select fewer runs with --only or --seeds (at most {room} job(s) fit now), or wait for queued jobs"
