"""`hw5 bench`: the three paths run on tiny models and the report is consistent (no timing asserts)."""
from __future__ import annotations

import json

import torch

from hw5.__main__ import main
from hw5.bench import PATHS, plan, warmup_steps
from hw5.bench_work import ser_workload


def test_bench_writes_json_and_markdown_with_ratios(tmp_path, capsys):
    assert main(["bench", "--tiny", "--nli-pairs", "64", "--ser-clips", "12", "--results", str(tmp_path),
                 "--data-dir", str(tmp_path / "nodata")]) == 0
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    rows = {(r["task"], r["path"]): r for r in report["rows"]}
    assert set(rows) == {(t, p) for t in ("nli", "ser") for p in ("naive", "project", "ceiling")}
    for task in ("nli", "ser"):
        naive, project, ceiling = (rows[(task, p)] for p in ("naive", "project", "ceiling"))
        assert ceiling["padding_share"] == 0 and project["padding_share"] < naive["padding_share"]
        assert naive["vs_naive"] == 1 and ceiling["vs_ceiling"] == 1
        assert abs(project["vs_naive"] - project["units_per_s"] / naive["units_per_s"]) < 1e-9
    assert rows[("ser", "project")]["prep_seconds"] > 0            # CNN features computed once
    assert "| ser    | project |" in (tmp_path / "bench" / "bench.md").read_text()
    assert report["models"] == "tiny" and report["provenance"]["versions"]["torch"]


def test_plans_cover_every_example_and_the_ceiling_has_one_shape():
    work = ser_workload(torch.device("cpu"), full=False, n=40)
    for path in ("naive", "project"):
        steps = plan(work, PATHS[path])
        assert sorted(i for batch, _ in steps for i in batch) == list(range(40))
    ceiling = plan(work, PATHS["ceiling"])
    assert len({(len(b), w) for b, w in ceiling}) == 1
