"""Dataset statistics as data: `hw5 stats` writes `<task>_stats.json`, the source of truth; the Markdown
beside it and the report's "Data statistics" section are both rendered from that JSON, never parsed back.

A document: {"schema", "title", "intro": [paragraphs], "facts": {machine-readable numbers},
"sections": [{"heading", "text", "table": {"columns", "rows"}, "figure": {"file", "caption"}}]}.
Figures are PNG files beside the JSON, named relative to it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from hw5.io import write_json_atomic, write_text_atomic
from hw5.markdown import DASH, markdown_table

SCHEMA = "hw5-stats/1"
SUFFIX = "_stats.json"


def section(heading: str, *, text: str = "", table: pd.DataFrame | None = None, figure: str = "",
            caption: str = "") -> dict:
    """One section: a heading, a paragraph, a table (kept as columns + rows), a PNG beside the JSON."""
    entry: dict = {"heading": heading, "text": text}
    if table is not None:
        entry["table"] = {"columns": [str(c) for c in table.columns],
                          "rows": json.loads(table.to_json(orient="values", double_precision=10))}
    if figure:
        entry["figure"] = {"file": figure, "caption": caption or heading}
    return entry


def write_stats(out_dir: Path, task: str, title: str, intro: list[str], sections: list[dict],
                facts: dict | None = None) -> Path:
    """<task>_stats.json, then <task>_stats.md rendered from it; returns the JSON's path."""
    doc = {"schema": SCHEMA, "title": title, "intro": intro, "facts": facts or {}, "sections": sections}
    path = write_json_atomic(Path(out_dir) / f"{task}{SUFFIX}", doc)
    write_text_atomic(path.with_suffix(".md"), render_markdown(read_stats(path)))
    return path


def read_stats(path: Path) -> dict:
    """The document, or ValueError naming the file and the fix."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable statistics ({exc}); rerun `hw5 stats` to rewrite it") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("sections"), list):
        raise ValueError(f"{path}: not a {SCHEMA} statistics document; rerun `hw5 stats` to rewrite it")
    return doc


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10000 \
        else str(value)


def section_text(entry: dict, level: int) -> str:
    parts = [f"{'#' * level} {entry['heading']}"]
    parts += [entry["text"]] if entry.get("text") else []
    if entry.get("table"):
        table = entry["table"]
        parts.append(markdown_table(table["columns"], [[_cell(v) for v in row] for row in table["rows"]]))
    return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def render_markdown(doc: dict, level: int = 1) -> str:
    """The document as one Markdown file (figures as links relative to the JSON's folder)."""
    parts = [f"{'#' * level} {doc['title']}", *doc.get("intro", [])]
    for entry in doc["sections"]:
        parts.append(section_text(entry, level + 1).rstrip("\n"))
        if entry.get("figure"):
            parts.append(f"![{entry['figure']['caption']}]({entry['figure']['file']})")
    return "\n\n".join(parts) + "\n"
