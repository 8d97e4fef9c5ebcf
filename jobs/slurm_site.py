"""What a SLURM site allows, read before anything is submitted, and what its answers mean.

- `controller_problem()`: does a slurmctld answer (`scontrol ping`)? Nothing falls back silently.
- `preflight(...)`: the partition (`scontrol show partition`), its nodes (`sinfo`), the account
  (`sacctmgr`) and `sbatch --test-only` on the exact script of each array. Every problem names the
  profile key to change.
- `classify(reason)`: a pending job's squeue reason -> "pending" (waiting helps) or "blocked" (it
  cannot: the reason and the key to change).
- `refusal_hint(message, ...)`: what to change when sbatch refuses (accounts, QOS).

Every command has a timeout; a site that hides a table (no sacctmgr, say) skips that check.
"""
from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 30
NOT_ANSWERED = 127     # run_command's code for a command that is missing or did not answer in time
# squeue reasons that waiting never fixes: (pattern, what it means, the profile key to change).
BLOCKED = [
    (r"PartitionConfig", "the request exceeds every node of the partition",
     "slurm.cpus_per_task / slurm.mem_gb / slurm.gpus_per_node (see: sinfo -p PARTITION -N -o '%N %c %m %G')"),
    (r"PartitionTimeLimit", "--time is above the partition's MaxTime",
     "slurm.timeout_min (see: scontrol show partition PARTITION | grep MaxTime)"),
    (r"PartitionNodeLimit", "the node count is outside the partition's limits", "slurm.partition"),
    (r"account not permitted|AccountNotAllowed|InvalidAccount", "the account may not use this partition",
     "slurm.account or slurm.partition (see: sacctmgr show assoc user=$USER format=account,partition,qos)"),
    (r"QOS not permitted|QOSNotAllowed|InvalidQOS", "the QOS may not be used here", "slurm.qos or slurm.partition"),
    (r"^QOSMin", "the request is below a minimum of the QOS (e.g. it must ask for a GPU)",
     "slurm.gpus_per_node / slurm.qos"),
    (r"MaxWallDurationPerJob", "--time is above a per-job limit of the account or QOS", "slurm.timeout_min"),
    (r"PerJob", "the request is above a per-job limit of the account or QOS",
     "slurm.cpus_per_task / slurm.mem_gb / slurm.gpus_per_node"),
    (r"BadConstraints", "no node has the requested features", "slurm.constraint"),
    (r"ReqNodeNotAvail", "nodes the job needs are down, drained or do not exist",
     "slurm.constraint / slurm.additional_parameters (nodelist, exclude); see: sinfo -R"),
    (r"DependencyNeverSatisfied", "its dependency can never be satisfied", "slurm.additional_parameters (dependency)"),
    (r"JobHeldAdmin", "an administrator holds it", "nothing in the profile: ask the admins"),
    (r"JobHeldUser", "it is held", "nothing in the profile: scontrol release JOBID"),
]
# ReqNodeNotAvail during a maintenance reservation ends with the reservation.
WAITS_ANYWAY = re.compile(r"Reserved for maintenance", re.I)


def run_command(command: list[str], timeout: float = TIMEOUT_S) -> tuple[int, str, str]:
    """(returncode, stdout, stderr); NOT_ANSWERED when the command is missing or does not answer in time."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return NOT_ANSWERED, "", f"{command[0]}: {exc}"
    return done.returncode, done.stdout, done.stderr


def controller_problem() -> str | None:
    """None when a slurmctld answers; else what was tried and what it said."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (no SLURM client here)"
    code, out, err = run_command(["scontrol", "ping"], timeout=15)
    if code == 0 and " is UP" in out:
        return None
    said = " ".join((out.strip() or err.strip() or f"exit code {code}").split())
    return f"`scontrol ping` answered: {said}"


def no_controller_message(why: str, asked: str) -> str:
    conf = os.environ.get("SLURM_CONF")
    return (f"{asked} needs SLURM, but no controller answered: {why}; SLURM_CONF is "
            f"{conf or 'unset (the default /etc/slurm/slurm.conf is used)'}. Are you on a login node? "
            f"(export SLURM_CONF=... for another cluster, or --cluster local to run on this machine)")


def classify(reason: str, partition: str = "", profile_path: str = "") -> tuple[str, str]:
    """("pending", reason) or ("blocked", "reason: what it means; change KEY in PROFILE (see: ...)")."""
    for pattern, meaning, key in BLOCKED:
        if re.search(pattern, reason) and not WAITS_ANYWAY.search(reason):
            key, _, see = key.partition(" (see: ")
            where = f" in {profile_path}" if profile_path and key.startswith("slurm.") else ""
            see = f" (see: {see}" if see else ""
            return "blocked", f"{reason}: {meaning}; change {key}{where}{see}".replace("PARTITION", partition or "<partition>")
    return "pending", reason or "PENDING"


# ---------------------------------------------------------------- what the site allows

@dataclass
class Partition:
    name: str
    max_time_min: int | None          # None = UNLIMITED
    allow_accounts: list[str] | None  # None = ALL
    deny_accounts: list[str]
    allow_qos: list[str] | None
    max_mem_per_node_mb: int | None
    raw: dict = field(repr=False, default_factory=dict)


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: dict[str, int]              # gpu type ("" = untyped) -> count


def parse_seconds(text: str) -> int | None:
    """SLURM durations (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in seconds; None for no limit
    (UNLIMITED, INFINITE, NONE, NOT_SET) or anything else."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not clock or not all(p.isdigit() for p in parts) or len(parts) > 3 or (days and not days.isdigit()):
        return None
    numbers = [int(p) for p in parts]
    if days:      # after "D-" the first number is hours
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    elif len(numbers) == 1:
        hours, minutes, seconds = 0, numbers[0], 0
    else:
        hours, minutes, seconds = ([0] + numbers)[-3:]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_minutes(text: str) -> int | None:
    seconds = parse_seconds(text)
    return None if seconds is None else seconds // 60


def _fields(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def read_partition(name: str | None) -> Partition | None:
    """The named partition, or the default one (name None); None when there is no such partition."""
    code, out, _ = run_command(["scontrol", "show", "partition", "-o", *([name] if name else [])])
    if code != 0:
        return None
    rows = [_fields(line) for line in out.splitlines() if line.strip()]
    row = next((r for r in rows if (r.get("PartitionName") == name if name else r.get("Default") == "YES")), None)
    if row is None:
        return None
    listed = lambda key: None if row.get(key, "ALL") == "ALL" else row[key].split(",")  # noqa: E731
    mem = row.get("MaxMemPerNode", "UNLIMITED")
    return Partition(row["PartitionName"], parse_minutes(row.get("MaxTime", "UNLIMITED")), listed("AllowAccounts"),
                     (row.get("DenyAccounts") or "").split(",") if row.get("DenyAccounts") else [],
                     listed("AllowQos"), int(mem) if mem.isdigit() else None, row)


def partition_names() -> list[str]:
    code, out, _ = run_command(["scontrol", "show", "partition", "-o"])
    rows = [_fields(line) for line in out.splitlines() if code == 0 and line.strip()]
    return [r["PartitionName"] + ("*" if r.get("Default") == "YES" else "") for r in rows if "PartitionName" in r]


def parse_gres(text: str) -> dict[str, int]:
    """sinfo's %G ("gpu:2", "gpu:a100:4(S:0-1),gpu:v100:2", "(null)") -> {type: count}."""
    gpus: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            kind = parts[1] if len(parts) == 3 else ""
            gpus[kind] = gpus.get(kind, 0) + int(parts[-1])
    return gpus


def read_nodes(partition: str) -> list[Node]:
    code, out, _ = run_command(["sinfo", "-N", "-h", "-p", partition, "-o", "%N|%c|%m|%G"])
    nodes = []
    for line in out.splitlines() if code == 0 else []:
        name, cpus, mem, gres = (line.split("|") + ["", "", ""])[:4]
        if cpus.isdigit() and mem.rstrip("+").isdigit():
            nodes.append(Node(name, int(cpus), int(mem.rstrip("+")), parse_gres(gres)))
    return nodes


def default_account(user: str | None = None) -> str | None:
    code, out, _ = run_command(["sacctmgr", "-n", "-P", "show", "user", user or getpass.getuser(),
                                "format=defaultaccount"])
    value = out.strip().splitlines()[0].strip() if code == 0 and out.strip() else ""
    return value or None


def user_accounts(user: str | None = None) -> list[str]:
    """The user's associations as 'account (partition, qos)' lines; [] when sacctmgr says nothing."""
    code, out, _ = run_command(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user or getpass.getuser()}",
                                "format=account,partition,qos"])
    lines = []
    for line in out.splitlines() if code == 0 else []:
        account, partition, qos = (line.split("|") + ["", ""])[:3]
        lines.append(f"{account} (partition {partition or 'any'}, qos {qos or '-'})")
    return lines


# ---------------------------------------------------------------- preflight

def preflight(slurm: dict, profile_path: Path, scripts: list[str]) -> list[str]:
    """Problems with submitting `scripts` (sbatch files) under the profile's `slurm` section."""
    partition = read_partition(slurm["partition"])
    if partition is None:
        where = f"partition '{slurm['partition']}'" if slurm["partition"] else "a default partition"
        return [f"the cluster has no {where}: set slurm.partition in {profile_path} to one of: "
                f"{', '.join(partition_names()) or '(none listed: sinfo -s)'}"]
    problems = limits_problems(slurm, partition, read_nodes(partition.name), profile_path)
    problems += account_problems(slurm, partition, profile_path)
    for script in scripts[:1] if problems else scripts:
        refused = test_only(script)
        if refused:
            problems.append(f"sbatch --test-only refused the request: {refused}" +
                            refusal_hint(refused, profile_path))
    return problems


def limits_problems(slurm: dict, partition: Partition, nodes: list[Node], profile_path: Path) -> list[str]:
    out, p = [], partition.name
    if partition.max_time_min is not None and slurm["timeout_min"] > partition.max_time_min:
        out.append(f"slurm.timeout_min is {slurm['timeout_min']} but partition {p} allows at most "
                   f"{partition.max_time_min} min (MaxTime): set slurm.timeout_min <= {partition.max_time_min} "
                   f"in {profile_path} (longer runs resume after each requeue)")
    if not nodes:
        return out
    cpus, mem_mb = max(n.cpus for n in nodes), max(n.mem_mb for n in nodes)
    if partition.max_mem_per_node_mb:
        mem_mb = min(mem_mb, partition.max_mem_per_node_mb)
    if slurm["cpus_per_task"] > cpus:
        out.append(f"slurm.cpus_per_task is {slurm['cpus_per_task']} but no node of {p} has more than {cpus} "
                   f"CPUs: lower it in {profile_path}")
    if slurm["mem_gb"] * 1024 > mem_mb:
        out.append(f"slurm.mem_gb is {slurm['mem_gb']} but nodes of {p} offer at most {mem_mb / 1024:.1f} GB: "
                   f"lower it in {profile_path}")
    out += _gpu_problems(slurm, p, nodes, profile_path)
    return out


def _gpu_problems(slurm: dict, partition: str, nodes: list[Node], profile_path: Path) -> list[str]:
    want, kind = slurm["gpus_per_node"], slurm["gpu_type"]
    if not want:
        return []
    have = max((n.gpus.get(kind, 0) if kind else sum(n.gpus.values())) for n in nodes)
    if want <= have:
        return []
    kinds = sorted({k or "untyped" for n in nodes for k in n.gpus}) or ["none"]
    what = f"'{kind}' GPUs" if kind else "GPUs"
    return [f"slurm.gpus_per_node is {want} but nodes of {partition} have at most {have} {what} "
            f"(types there: {', '.join(kinds)}): fix slurm.gpus_per_node / slurm.gpu_type in {profile_path}"]


def account_problems(slurm: dict, partition: Partition, profile_path: Path) -> list[str]:
    account = slurm["account"] or default_account()
    named = f"account '{account}'" + ("" if slurm["account"] else " (your default: slurm.account is null)")
    out = []
    if account and partition.allow_accounts is not None and account not in partition.allow_accounts:
        out.append(f"{named} may not use partition {partition.name} (AllowAccounts "
                   f"{','.join(partition.allow_accounts)}): set slurm.account in {profile_path}")
    if account and account in partition.deny_accounts:
        out.append(f"{named} is denied on partition {partition.name}: set slurm.account in {profile_path}")
    qos = slurm["qos"]
    if qos and partition.allow_qos is not None and qos not in partition.allow_qos:
        out.append(f"slurm.qos '{qos}' may not be used on partition {partition.name} (AllowQos "
                   f"{','.join(partition.allow_qos)}): fix slurm.qos in {profile_path}")
    return out


def test_only(script: str) -> str | None:
    """sbatch --test-only on the script: None when SLURM would take it, else its error lines."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="hw5-preflight-", delete=False) as handle:
        handle.write(script)
    try:
        code, out, err = run_command(["sbatch", "--test-only", handle.name])
    finally:
        os.unlink(handle.name)
    said = (err + out).strip()
    if code == 0 and "to start at" in said:
        return None
    return " / ".join(line.strip() for line in said.splitlines() if line.strip()) or f"exit code {code}"


def refusal_hint(message: str, profile_path: Path, limit_reached: bool = False) -> str:
    """What to do about an sbatch refusal, when it is about accounts, QOS, limits or the partition.
    limit_reached: the account may submit, but not that many jobs (jobs/limits.py knows)."""
    if re.search(r"MaxSubmitJob", message) and limit_reached:
        return ("\n  hint: you reached the site's limit on queued jobs (MaxSubmitJobs): wait until some of "
                "yours end (squeue -u $USER), or pack runs into fewer jobs (--pack N); launching the same "
                "command again submits what is missing")
    if re.search(r"Invalid qos|InvalidQOS", message, re.I):
        code, out, _ = run_command(["sacctmgr", "-n", "-P", "show", "qos", "format=name"])
        names = ", ".join(out.split()) if code == 0 and out.strip() else "(sacctmgr show qos)"
        return (f"\n  hint: set slurm.qos in {profile_path} to a QOS of the site ({names}) that your associations "
                f"allow (sacctmgr show assoc user=$USER format=account,partition,qos), or null for the default")
    if re.search(r"QOSMin(GRES|TRES)", message):
        return (f"\n  hint: the partition's QOS requires a GPU: set slurm.gpus_per_node >= 1 in {profile_path} "
                f"(slurm.allow_cpu: true if the runs may then train on the CPU)")
    if re.search(r"AssocMaxSubmitJobLimit|Invalid account|InvalidAccount|account/QOS policy|Assoc", message):
        accounts = user_accounts()
        listed = ("; yours: " + "; ".join(accounts)) if accounts else ""
        return (f"\n  hint: set slurm.account (and slurm.qos where the site names one) in {profile_path}; "
                f"list your accounts with: sacctmgr show assoc user=$USER format=account,partition,qos{listed}")
    if re.search(r"invalid partition", message, re.I):
        return f"\n  hint: set slurm.partition in {profile_path} to one of: sinfo -s"
    return ""
