"""The layout keeps the data flow readable: jobs/experiments.yaml -> jobs/ -> hw5 run -> metrics.json ->
aggregate.py. Checked on the import graph of hw5/, jobs/ and aggregate.py (imports inside functions
count: a circle hidden in one is still a circle)."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

FILES = [*sorted((REPO / "hw5").rglob("*.py")), *sorted((REPO / "jobs").rglob("*.py")), REPO / "aggregate.py"]


def in_report(module: str) -> bool:
    return module == "hw5.report" or module.startswith("hw5.report.")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in FILES}


def imported(path: Path) -> set[str]:
    """Every module the file imports anywhere (absolute names; ours resolved to the module imported)."""
    found, here = set(), module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return found - {here}


IMPORTS = {module_name(p): imported(p) for p in FILES}
GRAPH = {m: {d for d in deps if d in MODULES} for m, deps in IMPORTS.items()}


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


def reach(start: str) -> set[str]:
    found, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in found:
                found.add(nxt)
                todo.append(nxt)
    return found


def test_no_module_of_hw5_or_jobs_imports_itself_round_a_circle():
    circles = [c for m in sorted(GRAPH) if (c := cycle_from(m))]
    assert not circles, " ; ".join(" -> ".join(c) for c in circles[:5])


def test_hw5_never_imports_the_launcher_or_submitit():
    wrong = {m: sorted(d for d in IMPORTS[m] if d.split(".")[0] in ("jobs", "submitit", "aggregate"))
             for m in IMPORTS if m.startswith("hw5")}
    assert not {m: d for m, d in wrong.items() if d}


def test_arrows_run_down_the_data_flow():
    """The run never reaches the bench or the report; nothing below the report imports it; the launcher
    is imported by nothing of hw5 and aggregate.py by nothing at all."""
    assert not {m for m in reach("hw5.run") if m.startswith("hw5.bench") or in_report(m)}
    upward = {m: sorted(d for d in GRAPH[m] if in_report(d))
              for m in GRAPH if not (in_report(m) or m in ("aggregate", "hw5.__main__"))}
    assert not {m: d for m, d in upward.items() if d}, upward
    assert not [m for m in GRAPH if "aggregate" in GRAPH[m]]


def test_the_report_and_aggregate_py_never_import_torch():
    report = {"aggregate", *reach("aggregate")}
    heavy = {m: sorted(d for d in IMPORTS[m] if d.split(".")[0] in ("torch", "transformers", "submitit"))
             for m in report if m == "aggregate" or in_report(m)}
    assert not {m: d for m, d in heavy.items() if d}, heavy
    assert all(in_report(d) or d.startswith(("hw5.config", "hw5.contract", "hw5.io", "hw5.statsdoc",
                             "hw5.report_spec", "hw5.markdown", "hw5.errors", "hw5.sweep")) or d == "hw5"
               for m in report if in_report(m) for d in GRAPH[m]), {m: GRAPH[m] for m in report}


def test_the_graph_sees_function_level_imports():
    """The circle test would miss a circle hidden in a function if this failed."""
    assert "jobs.scheduler" in GRAPH["jobs.runner"] and "jobs.pack" in GRAPH["jobs.job"]
    assert "hw5.identity" in IMPORTS["hw5.io"]        # imported inside provenance()
