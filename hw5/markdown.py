"""Markdown text shared by the statistics documents (hw5/statsdoc.py) and the report (hw5/report/)."""
from __future__ import annotations

DASH = "–"  # shown for a value that does not exist (no runs, or the std of a single run)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; pipes and newlines inside cells are escaped."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
