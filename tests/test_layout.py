"""The package's layout keeps the data flow readable: no import circles, the bench outside the run path."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "hw5"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """hw5 modules imported anywhere in the file (function-level imports included)."""
    found, here = set(), module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hw5")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("hw5"):
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES and m != here}


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def cycle_from(start: str) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in GRAPH.get(node, ()):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_module_of_hw5_imports_itself_round_a_circle():
    circles = [c for m in sorted(GRAPH) if (c := cycle_from(m))]
    assert not circles, " ; ".join(" -> ".join(c) for c in circles[:5])


def test_a_run_never_imports_the_bench_and_the_report_never_imports_torch_code():
    reach, todo = set(), ["hw5.run"]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert not {m for m in reach if m.startswith("hw5.bench")}
    report = {m for m in GRAPH if m.startswith("hw5.report")}
    assert all(dep.startswith(("hw5.report", "hw5.config", "hw5.contract", "hw5.io")) or dep == "hw5"
               for m in report for dep in GRAPH[m]), {m: GRAPH[m] for m in report}
