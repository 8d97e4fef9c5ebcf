"""One list of blocks, two renderings: report.md (links to the PNGs) and report.ipynb (PNGs embedded)."""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import v4



@dataclass(frozen=True)
class Markdown:
    text: str


@dataclass(frozen=True)
class Image:
    path: Path        # the PNG on disk
    caption: str      # alt text in Markdown, text/plain in the notebook


def relative(path: Path, base: Path) -> str:
    """A POSIX link from the report's folder to `path`."""
    return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()


def demote_headings(text: str, levels: int = 1) -> str:
    """'# Title' -> '## Title' (outside fenced code), so an inlined document nests under our sections."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        out.append("#" * levels + line if not fenced and re.match(r"^#{1,5} ", line) else line)
    return "\n".join(out)


def render_markdown(blocks: list, base: Path) -> str:
    """report.md: text as is, figures as relative image links."""
    parts = []
    for block in blocks:
        if isinstance(block, Image):
            parts.append(f"![{block.caption}]({relative(block.path, base)})\n")
        else:
            parts.append(block.text.rstrip("\n") + "\n")
    return "\n".join(parts)


def render_notebook(blocks: list, base: Path) -> str:
    """report.ipynb: consecutive text blocks -> one Markdown cell; each figure -> a code cell whose
    display_data output holds the PNG, so the notebook shows everything without being run."""
    cells, pending = [], []

    def flush() -> None:
        if pending:
            cells.append(v4.new_markdown_cell("\n".join(pending), id=f"cell-{len(cells):03d}"))
            pending.clear()

    for block in blocks:
        if isinstance(block, Markdown):
            pending.append(block.text.rstrip("\n") + "\n")
            continue
        flush()
        link = relative(block.path, base)
        png = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
        output = v4.new_output("display_data", data={"image/png": png, "text/plain": [f"<{block.caption}>"]})
        source = f'from IPython.display import Image\nImage(filename="{link}")'
        cells.append(v4.new_code_cell(source, outputs=[output], id=f"cell-{len(cells):03d}"))
    flush()
    notebook = v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"
