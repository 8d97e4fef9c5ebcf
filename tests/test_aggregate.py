"""aggregate.py on hand-made metrics.json files: numbers, flags, exit codes, plots, report, notebook."""
from __future__ import annotations

import base64
import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import aggregate  # noqa: E402
from hw5.config import config_hash, resolve_config  # noqa: E402
from hw5.contract import data_fingerprint  # noqa: E402
from hw5.report.runs import Run, newest_hash  # noqa: E402
from hw5.statsdoc import section, write_stats  # noqa: E402

from conftest import experiments_file  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "aggregate"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_975_DF2 = 4.302652729911275   # Student t 97.5% quantile, 2 degrees of freedom (printed tables)
T_975_DF1 = 12.706204736174707  # ... 1 degree of freedom


@pytest.fixture(autouse=True)
def _no_data_here(tmp_path, monkeypatch):
    """The hand-made runs record no data fingerprint: judge them by config, as on a laptop without the
    data (tests that compare fingerprints pass --data-dir)."""
    monkeypatch.setenv("HW5_DATA_DIR", str(tmp_path / "no-data"))


def make_run(results: Path, experiment: str, seed: int, grid: Path | None = None, **values) -> Path:
    """Copy the hand-made example of the experiment's task, set its identity and `values`, whose keys
    are paths into metrics.json with '__' between levels (test__accuracy=0.8). With `grid`, the run
    carries the config hash that grid gives the experiment now (a current run) unless values set one."""
    task = experiment.split("-")[0]
    metrics = copy.deepcopy(json.loads((FIXTURES / f"{task}_metrics.json").read_text()))
    metrics.update(experiment=experiment, seed=seed)
    if grid is not None and "config_hash" not in values:
        values["config_hash"] = config_hash(resolve_config(experiment, values.get("smoke", False), grid))
    for dotted, value in values.items():
        *parents, leaf = dotted.split("__")
        node = metrics
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = results / ("smoke" if metrics["smoke"] else "") / experiment / f"seed-{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return path


def write_grid(path: Path, experiments: list[str], seeds: list[int]) -> Path:
    """A grid of these experiments, with the real file's report questions about them."""
    grid = {"seeds": seeds, "experiments": {e: {"task": e.split("-")[0]} for e in experiments},
            "report": report_section(experiments)}
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def report_section(experiments: list[str]) -> dict:
    real = experiments_file()["report"]
    return {"baselines": {t: e for t, e in real["baselines"].items() if e in experiments},
            "questions": [q for q in real["questions"] if {q["baseline"], q["variant"]} <= set(experiments)]}


STUDY = ["nli-full", "nli-freeze9", "ser-mean", "ser-noweight", "ser-fixedpad"]


def build_study(root: Path) -> tuple[Path, Path]:
    """3 seeds; nli complete; ser-noweight seed 2 stale; ser-fixedpad seed 1 partial, seed 2 missing."""
    results = root / "results"
    grid = write_grid(root / "experiments.yaml", STUDY, [0, 1, 2])
    for seed, acc in enumerate((0.80, 0.82, 0.84)):
        make_run(results, "nli-full", seed, grid, test__accuracy=acc)
    for seed, acc in enumerate((0.78, 0.81, 0.81)):
        make_run(results, "nli-freeze9", seed, grid, test__accuracy=acc,
                 config__description="freeze layers 1-9", config__freeze_first_layers=9)
    for seed, uar in enumerate((0.60, 0.66, 0.69)):
        make_run(results, "ser-mean", seed, grid, test__uar=uar)
    make_run(results, "ser-noweight", 0, grid, test__uar=0.50)
    make_run(results, "ser-noweight", 1, grid, test__uar=0.57)
    make_run(results, "ser-noweight", 2, test__uar=0.99, config_hash="ffff9999",
             provenance={"finished": "2030-01-01T00:00:00+00:00"})  # newest, but from another config
    make_run(results, "ser-fixedpad", 0, grid, test__uar=0.61)
    (results / "ser-fixedpad" / "seed-1").mkdir()  # started, never finished
    stats = results / "stats"
    stats.mkdir()
    write_stats(stats, "nli", "FarsTail statistics", ["Pairs."],
                [section("Pair lengths", table=pd.DataFrame({"split": ["train"], "mean": [77.5]}),
                         figure="nli_lengths.png", caption="lengths")])
    Image.new("RGB", (8, 8), "white").save(stats / "nli_lengths.png")
    return results, grid


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    results, grid = build_study(root)
    code = aggregate.main(["--results", str(results), "--experiments", str(grid), "--data-dir", str(root / "no-data")])
    return results, grid, code


def read_csv_rows(path: Path) -> dict[str, dict]:
    import pandas as pd
    return {r["experiment"]: r for r in pd.read_csv(path).to_dict("records")}


def test_means_stds_and_n_match_hand_computation(study):
    results, _, code = study
    assert code == 0
    nli = read_csv_rows(results / "tables" / "nli_summary.csv")
    assert nli["nli-full"]["n"] == 3
    assert nli["nli-full"]["accuracy_mean"] == pytest.approx(0.82)
    assert nli["nli-full"]["accuracy_std"] == pytest.approx(0.02)  # sqrt((.02² + 0 + .02²) / 2)
    ser = read_csv_rows(results / "tables" / "ser_summary.csv")
    assert ser["ser-mean"]["uar_mean"] == pytest.approx(0.65)
    assert ser["ser-mean"]["uar_std"] == pytest.approx(math.sqrt((0.05**2 + 0.01**2 + 0.04**2) / 2))
    table = (results / "tables" / "nli_summary.md").read_text()
    assert "| nli-full | 3 | 0.820 ± 0.020 |" in table


def test_single_seed_shows_dash_and_missing_partial_are_flagged(study):
    results = study[0]
    ser = read_csv_rows(results / "tables" / "ser_summary.csv")
    assert ser["ser-fixedpad"]["n"] == 1
    assert ser["ser-fixedpad"]["flags"] == "missing: 2; partial: 1"
    row = next(line for line in (results / "tables" / "ser_summary.md").read_text().splitlines()
               if line.startswith("| ser-fixedpad |"))
    assert "0.610 ± –" in row


def test_stale_hash_is_flagged_and_excluded(study):
    results = study[0]
    ser = read_csv_rows(results / "tables" / "ser_summary.csv")
    assert ser["ser-noweight"]["n"] == 2
    assert ser["ser-noweight"]["uar_mean"] == pytest.approx(0.535)  # the stale 0.99 is not averaged
    assert ser["ser-noweight"]["flags"] == "stale: 2"
    report = (results / "report.md").read_text()
    now = config_hash(resolve_config("ser-noweight", False, study[1]))
    assert f"made with config ffff9999, the experiments file now gives {now}" in report


def test_paired_difference_and_t_interval(study):
    results = study[0]
    import pandas as pd
    nli = pd.read_csv(results / "tables" / "nli_vs_baseline.csv").set_index(["experiment", "metric"])
    row = nli.loc[("nli-freeze9", "accuracy")]
    half = T_975_DF2 * 0.01 / math.sqrt(3)  # diffs -.02 -.01 -.03: mean -.02, sd .01
    assert row["n_pairs"] == 3 and row["diff_mean"] == pytest.approx(-0.02)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.02 - half, -0.02 + half))
    assert not row["interval_excludes_zero"]
    ser = pd.read_csv(results / "tables" / "ser_vs_baseline.csv").set_index(["experiment", "metric"])
    row = ser.loc[("ser-noweight", "uar")]  # pairs seeds 0, 1 only: diffs -.10 -.09
    half = T_975_DF1 * math.sqrt(0.00005) / math.sqrt(2)
    assert row["n_pairs"] == 2
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.095 - half, -0.095 + half))
    assert row["interval_excludes_zero"]


def test_plots_are_valid_pngs(study):
    results = study[0]
    expected = ["nli_metrics", "ser_metrics", "ser_class_recall", "ser_padding", "nli-full_curves",
                "nli-full_confusion", "ser-fixedpad_curves", "ser-mean_confusion"]
    for name in expected:
        path = results / "plots" / f"{name}.png"
        assert path.read_bytes().startswith(PNG_MAGIC), name
        with Image.open(path) as image:
            image.verify()


def test_report_links_resolve_and_include_everything(study):
    results = study[0]
    report = (results / "report.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", report)
    local = [t for t in targets if not re.match(r"^([a-z]+:|#)", t)]
    assert len(local) >= 10
    for target in local:
        assert (results / target).is_file(), target
    assert "stats/nli_lengths.png" in local  # stats Markdown inlined with its links rebased
    assert "plots/ser_padding.png" in local
    assert "### Pair lengths" in report
    assert "masked" in report.lower()  # docs/method.md is included
    assert "2026-11-26T11:02:00+00:00" in report  # fixed stamp from the inputs, no wall clock
    assert "| lr |" in report or "| lr " in report  # hyper-parameter table
    assert "freeze_first_layers" in report  # config differences between NLI experiments
    assert "fear       0.40" in report  # the classification report


def test_notebook_is_valid_and_embeds_every_figure(study):
    results = study[0]
    notebook = nbformat.read(results / "report.ipynb", as_version=4)
    nbformat.validate(notebook)
    images = [o["data"]["image/png"] for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    report = (results / "report.md").read_text()
    assert len(images) == report.count("![") >= 15  # every figure, the stats one included
    assert all(base64.b64decode(png).startswith(PNG_MAGIC) for png in images)
    assert any("0.820 ± 0.020" in c.source for c in notebook.cells if c.cell_type == "markdown")


def test_corrupt_metrics_is_named_skipped_and_exit_1(tmp_path, capsys):
    results = tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml", ["nli-full"], [0, 1, 2])
    make_run(results, "nli-full", 0, grid)
    bad = make_run(results, "nli-full", 1, grid)
    bad.write_text('{"experiment": "nli-full", "seed": 1, ')  # cut off mid-write
    make_run(results, "nli-full", 2, grid, test={"accuracy": 0.8})  # schema broken: no macro_f1 ...
    assert aggregate.main(["--results", str(results), "--experiments", str(grid)]) == 1
    err = capsys.readouterr()
    assert str(bad) in err.err and "not readable JSON" in err.err
    assert "test.macro_f1" in err.err
    assert "1/3 runs used" in err.out and "2 corrupt" in err.out
    assert read_csv_rows(results / "tables" / "nli_summary.csv")["nli-full"]["n"] == 1
    assert (results / "report.ipynb").is_file()


def test_empty_results_say_what_is_missing(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    grid = write_grid(tmp_path / "grid.yaml", ["nli-full", "ser-mean"], [0, 1])
    assert aggregate.main(["--results", str(results), "--experiments", str(grid)]) == 0
    assert "0/4 runs used; 4 missing" in capsys.readouterr().out
    report = (results / "report.md").read_text()
    assert "- `nli-full` seeds 0, 1: **missing**" in report and "- `ser-mean` seeds 0, 1: **missing**" in report
    assert "No dataset statistics found" in report
    assert read_csv_rows(results / "tables" / "summary.csv")["ser-mean"]["flags"] == "missing: 0, 1"


@pytest.fixture(scope="module")
def no_grid(tmp_path_factory):
    """nli-full seeds 0, 1, 5, no experiments file, only seeds 0 and 1 requested (few plots: fast)."""
    root = tmp_path_factory.mktemp("no_grid")
    results = root / "results"
    for seed in (0, 1, 5):
        make_run(results, "nli-full", seed, test__accuracy=0.5 + seed / 100)
    argv = ["--results", str(results), "--seeds", "0,1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aggregate, "DEFAULT_EXPERIMENTS", root / "absent.yaml")
        patch.delenv("HW5_EXPERIMENTS", raising=False)
        yield results, argv, aggregate.main(argv)


def test_without_grid_file_the_runs_found_are_expected_and_seeds_filter(no_grid, capsys):
    results, argv, code = no_grid
    assert code == 0
    row = read_csv_rows(results / "tables" / "nli_summary.csv")["nli-full"]
    assert (row["n"], row["accuracy_mean"], row["flags"]) == (2, pytest.approx(0.505), "ignored: 5")
    assert "the runs found (no experiments file)" in (results / "report.md").read_text()
    explicit = ["--results", str(results), "--experiments", str(results / "none.yaml")]
    assert aggregate.main(explicit) == 2  # an explicit grid file must exist
    assert "none.yaml: experiments file not found" in capsys.readouterr().err


def test_regeneration_is_byte_identical(no_grid):
    results, argv, _ = no_grid
    names = ["report.md", "report.ipynb", "tables/summary.csv", "tables/nli_summary.md",
             "plots/nli_metrics.png", "plots/nli-full_confusion.png", "plots/nli-full_curves.png"]
    before = {n: (results / n).read_bytes() for n in names}
    (results / "plots" / "old-experiment_curves.png").write_bytes(b"stale")
    assert aggregate.main(argv) == 0
    assert {n: (results / n).read_bytes() for n in names} == before
    assert not (results / "plots" / "old-experiment_curves.png").exists()
    assert not list(results.rglob("*.tmp"))


def test_missing_results_folder_and_bad_grid_exit_2(tmp_path, capsys):
    assert aggregate.main(["--results", str(tmp_path / "nowhere")]) == 2
    assert "results folder not found" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0\nexperiments: {")
    assert aggregate.main(["--results", str(tmp_path / "results"), "--experiments", str(bad)]) == 2
    assert f"{bad}: not valid YAML" in capsys.readouterr().err
    bad.write_text("seeds: [zero]\nexperiments: {nli-full: {task: nli}}\n")
    assert aggregate.main(["--results", str(tmp_path / "results"), "--experiments", str(bad)]) == 2
    assert "'seeds' must be a list of integers" in capsys.readouterr().err


def test_without_a_grid_the_newest_run_stands_for_the_config():
    def run(h, finished):
        return Run("x", 0, "done", metrics={"config_hash": h, "provenance": {"finished": finished}})
    assert newest_hash([run("a", "2026-01-02"), run("a", "2026-01-01"), run("b", "2027-01-01")]) == "b"
    assert newest_hash([run("a", "2026-01-04"), run("b", "2026-01-03")]) == "a"


def test_every_seed_is_judged_against_the_current_yaml_never_by_majority(tmp_path, capsys):
    """Seeds 1-2 from an old config, seed 4 from the current one: 1-2 are stale, seed 4 is used;
    when every seed is old, none is averaged."""
    results = tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml", ["nli-full", "nli-freeze9"], [1, 2, 4])
    for seed in (1, 2):
        make_run(results, "nli-full", seed, test__accuracy=0.9, config_hash="0ld0c0f9")
    make_run(results, "nli-full", 4, grid, test__accuracy=0.7)
    for seed in (1, 2, 4):
        make_run(results, "nli-freeze9", seed, test__accuracy=0.6, config_hash="0ld0c0f9")
    assert aggregate.main(["--results", str(results), "--experiments", str(grid)]) == 0
    rows = read_csv_rows(results / "tables" / "nli_summary.csv")
    assert (rows["nli-full"]["n"], rows["nli-full"]["accuracy_mean"]) == (1, pytest.approx(0.7))
    assert rows["nli-full"]["flags"] == "stale: 1, 2"
    assert rows["nli-freeze9"]["n"] == 0 and rows["nli-freeze9"]["flags"] == "stale: 1, 2, 4"
    out = capsys.readouterr()
    assert "1/6 runs used" in out.out and "5 stale" in out.out
    assert "--only nli-full --seeds 1 --force" in out.err


def test_data_fingerprints_are_compared_where_the_data_is(tmp_path, data_dir):
    results = tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml", ["nli-full"], [0, 1, 2])
    current = data_fingerprint(resolve_config("nli-full", False, grid), data_dir)
    make_run(results, "nli-full", 0, grid, data=current)
    make_run(results, "nli-full", 1, grid, data={**current, "digest": "0123456789ab"})
    make_run(results, "nli-full", 2, grid)   # no fingerprint: made by an older hw5
    argv = ["--results", str(results), "--experiments", str(grid)]
    assert aggregate.main([*argv, "--data-dir", str(data_dir)]) == 0
    assert read_csv_rows(results / "tables" / "nli_summary.csv")["nli-full"]["flags"] == "stale: 1, 2"
    report = (results / "report.md").read_text()
    assert f"made on data 0123456789ab, the data here is now {current['digest']}" in report
    assert "records no data fingerprint" in report and "the data fingerprint (data found here" in report
    assert aggregate.main([*argv, "--data-dir", str(tmp_path / "elsewhere")]) == 0   # no data here: config only
    assert read_csv_rows(results / "tables" / "nli_summary.csv")["nli-full"]["n"] == 3
    assert "config hash only (the data is not here" in (results / "report.md").read_text()


def test_smoke_runs_have_their_own_tree_and_report(tmp_path):
    results = tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml", ["nli-full"], [0])
    make_run(results, "nli-full", 0, grid, test__accuracy=0.8)
    smoke = make_run(results, "nli-full", 0, grid, smoke=True, test__accuracy=0.4)
    assert smoke == results / "smoke" / "nli-full" / "seed-0" / "metrics.json"
    assert aggregate.main(["--results", str(results), "--experiments", str(grid)]) == 0
    assert aggregate.main(["--results", str(results), "--experiments", str(grid), "--smoke"]) == 0
    full = read_csv_rows(results / "tables" / "nli_summary.csv")["nli-full"]
    tiny = read_csv_rows(results / "smoke" / "tables" / "nli_summary.csv")["nli-full"]
    assert (full["accuracy_mean"], tiny["accuracy_mean"]) == (pytest.approx(0.8), pytest.approx(0.4))
    assert "Smoke runs" in (results / "smoke" / "report.md").read_text()


def test_cli_help_and_no_torch_import():
    probe = ("import sys, aggregate; print(sorted(m for m in ('torch', 'hw5.contract') if m in sys.modules)); "
             "aggregate.parse_args(['--help'])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    imported, help_text = out.stdout.split("\n", 1)
    assert imported == "['hw5.contract']"   # the run contract, torch-free
    for option in ("--results", "--experiments", "--seeds", "Exit status"):
        assert option in help_text


@pytest.mark.parametrize("values, says", [
    ({"test__confusion_matrix": "x"}, "test.confusion_matrix (not rows of counts)"),
    ({"test__accuracy": 7.5}, "test.accuracy (7.5 is not a number in [0, 1])"),
    ({"history": [{"epoch": 1, "train_loss": "low"}]}, "history.train_loss (not a number)"),
    ({"history": "x"}, "history (not a list of epoch rows)"),
])
def test_a_wrongly_typed_or_out_of_range_metrics_file_is_corrupt_never_averaged(tmp_path, capsys, values, says):
    results = tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml", ["nli-full"], [0, 1])
    make_run(results, "nli-full", 0, grid, test__accuracy=0.8)
    bad = make_run(results, "nli-full", 1, grid, **values)
    assert aggregate.main(["--results", str(results), "--experiments", str(grid)]) == 1
    err = capsys.readouterr().err
    assert f"skipped corrupt {bad}" in err and says in err and "Traceback" not in err
    row = read_csv_rows(results / "tables" / "nli_summary.csv")["nli-full"]
    assert (row["n"], row["accuracy_mean"], row["flags"]) == (1, pytest.approx(0.8), "corrupt: 1")


def test_an_internal_error_exits_3_and_keeps_the_previous_outputs(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml", ["nli-full"], [0])
    make_run(results, "nli-full", 0, grid)
    argv = ["--results", str(results), "--experiments", str(grid)]
    assert aggregate.main(argv) == 0
    before = {p.relative_to(results): p.read_bytes() for p in results.rglob("*") if p.is_file()}

    def a_bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in a section")
    monkeypatch.setattr(aggregate.sections, "overall_section", a_bug)   # fails after tables and plots were written
    assert aggregate.main(argv) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug in a section" in err and "are kept" in err
    after = {p.relative_to(results): p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert after == before      # the previous set, whole: no mix of new and old tables


def test_statistics_render_from_their_json_and_a_broken_one_is_named_not_fatal(tmp_path):
    from hw5.report.document import Image as Figure
    from hw5.report.sections import Outputs, stats_section
    stats = tmp_path / "stats"
    stats.mkdir()
    (stats / "ser_stats.json").write_text("{not json")
    Image.new("RGB", (8, 8), "white").save(stats / "nli_lengths.png")
    write_stats(stats, "nli", "FarsTail", ["Pairs."],
                [section("Lengths", table=pd.DataFrame({"text": ["pair"], "mean": [74.93], "n": [12000]}),
                         figure="nli_lengths.png", caption="token lengths")])
    blocks = stats_section(Outputs(tmp_path))
    text = "\n".join(b.text for b in blocks if not isinstance(b, Figure))
    assert "| pair | 74.93 | 12,000 |" in text and "#### Lengths" in text
    assert "ser_stats.json: unreadable statistics" in text and "rerun `hw5 stats`" in text
    assert [b.caption for b in blocks if isinstance(b, Figure)] == ["token lengths"]     # shown once
