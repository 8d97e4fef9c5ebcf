"""`hw5 stats nli|ser --smoke` write their tables and plots."""
from __future__ import annotations

import pytest

from hw5.__main__ import main
from hw5.statsdoc import read_stats, render_markdown

from conftest import fast_grid


# slow: it tokenizes all of FarsTail (10-20 s on two cores), over the fast tier's limit
@pytest.mark.slow
def test_nli_stats_tables_and_plot(tmp_path, data_dir, capsys):
    assert main(["stats", "nli", "--smoke", "--data-dir", str(data_dir), "--results", str(tmp_path),
                 "--experiments", str(fast_grid(tmp_path))]) == 0
    stats = tmp_path / "smoke" / "stats"   # smoke statistics beside the smoke runs
    for name in ("nli_classes", "nli_lengths", "nli_truncation", "nli_normalization"):
        assert (stats / f"{name}.csv").exists()
    assert (stats / "nli_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    classes = (stats / "nli_classes.csv").read_text().splitlines()
    assert classes[1] == "train,7266,2389,2429,2448"          # real FarsTail counts (c, e, n)
    doc = read_stats(stats / "nli_stats.json")                # the source; the Markdown is rendered from it
    assert doc["sections"][0]["table"]["rows"][0] == ["train", 7266, 2389, 2429, 2448]
    assert doc["facts"]["pairs"] == {"train": 7266, "val": 1537, "test": 1564}
    assert (stats / "nli_stats.md").read_text() == render_markdown(doc)
    assert "| train | 7266 | 2389 | 2429 | 2448 |" in render_markdown(doc) and "any_change" in render_markdown(doc)


def test_ser_stats_on_the_synthetic_corpus(tmp_path, capsys):
    grid = fast_grid(tmp_path, ser={"synthetic_clips": 120})
    assert main(["stats", "ser", "--smoke", "--results", str(tmp_path), "--experiments", str(grid)]) == 0
    stats = tmp_path / "smoke" / "stats"   # smoke statistics beside the smoke runs
    assert "fear" in (stats / "ser_emotions.csv").read_text()
    doc = read_stats(stats / "ser_stats.json")
    assert doc["facts"]["clips"] == 120 and (stats / "ser_stats.md").read_text() == render_markdown(doc)
    assert all((stats / s["figure"]["file"]).is_file() for s in doc["sections"] if "figure" in s)
