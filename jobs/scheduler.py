"""The scheduler's side of a run: what SLURM (squeue while a job lives, sacct after) or the local
machine (/proc) says of its job, and what that means in the run contract's vocabulary
(hw5.contract.STATES): pending, blocked, running, interrupted, failed, missing, unknown. Also the
waiting that --wait and --watch do, with its progress line. Nothing here blocks: every command has a
timeout, and a scheduler that does not answer makes states `unknown`, never `failed`.
"""
from __future__ import annotations

import pickle
import re
import shutil
import time
from pathlib import Path

from jobs.ledger import Record
from jobs.pack import PackBook, StopNote, pack_book_path, stop_note_path
from jobs.slurm_site import NOT_ANSWERED, classify, run_command

# SLURM's states of a job that still lives, in the contract's words
SLURM_LIVE = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
        "CONFIGURING": "pending", "RESV_DEL_HOLD": "pending", "SUSPENDED": "pending",
        "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running",
        "RESIZING": "running"}
SCHEDULER_TIMEOUT_S = 30          # squeue / sacct: an answer within this, or states are unknown
NO_ANSWER = "NO_ANSWER"   # squeue failed: states unknown, which is not the same as "failed"


WAITING = ("pending", "running", "unknown")   # run states that may still change by waiting
WAIT_POLL_S = 10.0      # --wait on SLURM: squeue/sacct at most this often


def packed_state(record: Record) -> dict:
    """The record's run in its pack's book ({} for a lone run, or before the pack reached it)."""
    return PackBook(pack_book_path(record.folder, record.job_id)).read().get(record.name, {}) if record.pack > 1 else {}


def stop_note(record: Record) -> str | None:
    return StopNote(stop_note_path(record.folder, record.job_id)).read()


def job_result(record: Record) -> tuple[str, str] | None:
    """submitit's result pickle: ("success", value) or ("error", traceback text); None if absent."""
    try:
        with open(record.result_pickle, "rb") as handle:
            # our own file, written by submitit in our own job (not untrusted input)
            outcome, payload = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception as exc:   # half-written or from another submitit version
        return ("error", f"unreadable result file {record.result_pickle}: {exc}")
    return (outcome, payload if isinstance(payload, str) else repr(payload))


def _run(command: list[str]) -> str | None:
    code, out, err = run_command(command, timeout=SCHEDULER_TIMEOUT_S)
    if code == NOT_ANSWERED:
        print(f"warning: {' '.join(command[:2])} did not answer ({err}); scheduler states unknown")
        return None
    return out if code == 0 else None


def slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """(SLURM state, detail, partition) per job id ('123' or array task '123_4'): squeue's state, reason
    and partition for live jobs, then sacct's state for ended ones (detail "never started" when it never ran)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    states: dict[str, tuple[str, str, str]] = {}
    # -r: one line per array task, so pending tasks show as 123_4 and not 123_[4-9]
    queue = _run(["squeue", "-h", "-r", "-o", "%i|%T|%P|%r", "-u", _user()])
    if queue is None:
        return {j: (NO_ANSWER, "", "") for j in job_ids}
    for line in queue.splitlines():
        job_id, state, partition, reason = (line.split("|", 3) + ["", "", ""])[:4]
        states[job_id.strip()] = (state.strip(), reason.strip(), partition.strip())
    rest = [j for j in job_ids if j not in states]
    if rest and shutil.which("sacct"):
        acct = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Start", "-j", ",".join(_arrays(rest))])
        for line in (acct or "").splitlines():
            job_id, state, start = (line.split("|") + ["", ""])[:3]
            detail = "never started" if start in ("None", "Unknown") else ""
            state = state.split()[0] if state else "UNKNOWN"    # "CANCELLED by 0"
            # squeue is the authority on live jobs: a task it does not list has ended (sacct lags, and an
            # array's pending line still covers tasks cancelled since)
            state = "ENDED" if state in SLURM_LIVE else state
            for task in _expand(job_id):
                states.setdefault(task, (state, detail, ""))
    return {j: states[j] for j in job_ids if j in states}


def _arrays(job_ids: list[str]) -> list[str]:
    """Ask sacct for whole arrays: tasks cancelled while pending exist only in the array's line."""
    return sorted({j.split("_")[0] for j in job_ids})


def _expand(job_id: str) -> list[str]:
    """sacct's '123_[1-3,5%2]' -> ['123_1', '123_2', '123_3', '123_5']; other ids as they are."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    tasks = []
    for part in match.group(2).split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            tasks += [f"{match.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return tasks


def local_states(records: list[Record]) -> dict[str, str]:
    """Local executor jobs: the controller process (its pid is the job id) alive -> RUNNING."""
    states = {}
    for record in records:
        cmdline = Path(f"/proc/{record.job_id}/cmdline")
        alive = record.job_id.isdigit() and cmdline.exists() and b"submitit" in cmdline.read_bytes()
        states[record.job_id] = ("RUNNING" if alive else "FINISHED", "", "")
    return states


def _user() -> str:
    import getpass
    return getpass.getuser()


def scheduler_states(records: list[Record]) -> dict[str, tuple[str, str, str]]:
    slurm = [r.job_id for r in records if r.cluster == "slurm"]
    states = slurm_states(slurm)
    states.update(local_states([r for r in records if r.cluster == "local"]))
    return states


def job_state(record: Record, scheduler: tuple[str, str, str] | None) -> tuple[str, str]:
    """(state, detail) of a submitted run whose metrics.json is not (yet) there.

    state: pending | blocked | running | interrupted | failed | missing | unknown; detail: the
    scheduler's reason, the traceback of a failed run, or what became of a job that never ran.
    """
    state, reason, partition = scheduler or (None, "", "")
    packed = packed_state(record)
    if packed.get("state") == "failed":          # its pack goes on (or went on) without it
        return "failed", packed.get("error") or f"failed in pack job {record.job_id}; log: {record.stderr}"
    if state in SLURM_LIVE and SLURM_LIVE[state] == "running" and record.pack > 1 and packed.get("state") != "running":
        return "pending", f"packed in job {record.job_id} (running): starts when the runs before it end"
    if state in SLURM_LIVE:
        if SLURM_LIVE[state] == "pending":
            return classify(reason if state == "PENDING" else state, partition, record.profile_path)
        return SLURM_LIVE[state], state
    stopped = stop_note(record)
    if stopped:
        return "interrupted", f"{stopped}; its checkpoint is kept: launch again to resume it"
    outcome = job_result(record)
    if outcome and outcome[0] == "error":
        return "failed", outcome[1]
    if outcome and outcome[0] == "success":
        return "missing", f"job {record.job_id} succeeded but its metrics.json is gone (deleted?)"
    if state == NO_ANSWER:
        return "unknown", "the scheduler did not answer (squeue/sacct); try again"
    if not record.stdout.exists() and (state is None or reason == "never started" or state == "CANCELLED"):
        # nothing ran, so there is no log to point to (tasks cancelled while pending leave no trace)
        return "missing", f"job {record.job_id} was cancelled before it started: nothing ran"
    if state is None:
        return "failed", f"job {record.job_id} is unknown to the scheduler and left no result; log: {record.stderr}"
    if state == "CANCELLED":     # scancel after it started: the user's stop, not the run's failure
        return "interrupted", (f"job {record.job_id} was cancelled while running; its checkpoint is kept: "
                               "launch again to resume it")
    ended = {"ENDED": "ended"}.get(state, f"ended {state}")
    return "failed", f"job {record.job_id} {ended} without a result; log: {record.stderr}"


def descendants(pid: int) -> list[int]:
    """All processes below pid (children, grandchildren, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def progress_line(runs) -> str:
    """'17/50 done, 3 running, 2 blocked' (the states present, in a fixed order)."""
    order = ("running", "pending", "blocked", "interrupted", "failed", "stale", "corrupt", "partial", "missing",
             "unknown")
    counts = {s: sum(r.state == s for r in runs) for s in order}
    done = sum(r.state == "done" for r in runs)
    return f"{done}/{len(runs)} done" + "".join(f", {n} {s}" for s, n in counts.items() if n)


def wait_for_runs(refresh, show, poll_s: float = WAIT_POLL_S) -> int:
    """--wait / --watch: refresh until nothing is pending, running or unknown, printing a progress line
    when it changes; 0 when every run is done, else 1 (blocked runs end the wait: they never start)."""
    last = None
    while True:
        runs = refresh()
        line = progress_line(runs)
        if line != last:
            print(time.strftime("%H:%M:%S ") + line, flush=True)
            last = line
        if not any(r.state in WAITING for r in runs):
            show(runs)
            return 0 if all(r.state == "done" for r in runs) else 1
        time.sleep(poll_s)
