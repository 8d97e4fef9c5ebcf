"""Which code is running, read from the code itself, and which container it runs in.

A run's provenance must name the code that ran. Two places hold a copy of hw5:
- a git checkout (editable install, PYTHONPATH, `container.code: checkout`): the commit is read from its
  `.git`, with the git binary where there is one and from the files where there is not (an image has
  no git);
- an installed copy built into the hw5 image: docker/Dockerfile writes a build record (`_build.json`:
  the commit and whether the tree was dirty) beside the installed package.

Nothing here reads a variable that names a commit: an image's ENV or a host's export could then name
code that did not run. The container itself (kind, image reference, id, revision) is what the launcher
inspected before submitting, passed in by the runtime's own explicit mechanism (jobs/container.py).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

BUILD_RECORD = "_build.json"       # written by docker/Dockerfile into the installed hw5 package
PACKAGE_DIR = Path(__file__).resolve().parent
# Set by the launcher for a containerized job: what it inspected before submission (jobs/container.py).
CONTAINER_VARS = {"kind": "HW5_CONTAINER_KIND", "image": "HW5_IMAGE", "id": "HW5_IMAGE_ID",
                  "revision": "HW5_IMAGE_REVISION"}


def code_identity(package_dir: Path = PACKAGE_DIR) -> dict:
    """{"source": image | checkout | installed, "path", "git_sha", "git_dirty"} of the hw5 at package_dir."""
    record = package_dir / BUILD_RECORD
    if record.is_file():
        try:
            built = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            built = {}
        dirty = {"true": True, "false": False}.get(str(built.get("git_dirty")).lower())
        return {"source": "image", "path": str(package_dir), "git_sha": built.get("git_sha"), "git_dirty": dirty}
    tree = package_dir.parent
    if (tree / ".git").exists():
        sha, dirty = checkout_state(tree)
        return {"source": "checkout", "path": str(tree), "git_sha": sha, "git_dirty": dirty}
    return {"source": "installed", "path": str(package_dir), "git_sha": None, "git_dirty": None}


def checkout_state(tree: Path, pathspecs: tuple[str, ...] = ()) -> tuple[str | None, bool | None]:
    """(HEAD sha, tracked files changed) of a git working tree; dirty is None where git cannot tell
    (no git binary inside an image, or a tree owned by another user)."""
    try:
        sha = _git(tree, "rev-parse", "HEAD")
        changed = _git(tree, "status", "--porcelain", "--untracked-files=no", "--", *pathspecs)
        return sha, changed != ""
    except (OSError, subprocess.SubprocessError):
        return head_from_files(tree), None


def _git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=20,
                          check=True).stdout.strip()


def head_from_files(tree: Path) -> str | None:
    """HEAD's commit read from .git's files (a worktree's `.git` file, loose and packed refs)."""
    try:
        git_dir = tree / ".git"
        if git_dir.is_file():                     # a worktree or submodule: "gitdir: PATH"
            git_dir = (tree / git_dir.read_text().split(":", 1)[1].strip()).resolve()
        common = git_dir / "commondir"
        refs_dir = (git_dir / common.read_text().strip()).resolve() if common.is_file() else git_dir
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        for folder in (git_dir, refs_dir):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()
        for line in (refs_dir / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref) and not line.startswith(("#", "^")):
                return line.split()[0]
    except (OSError, IndexError):
        pass
    return None


def container_identity() -> dict | None:
    """The container this process runs in, as the launcher inspected it; None outside one."""
    found = {key: os.environ.get(var) for key, var in CONTAINER_VARS.items()}
    return found if found["kind"] else None
