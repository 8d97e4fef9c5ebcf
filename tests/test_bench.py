"""`hw5 bench`: the three paths run on tiny models and the report is consistent (no timing asserts)."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from hw5.__main__ import main
from hw5.bench.core import PATHS, can_compile, step_plan, warmup_steps
from hw5.bench.report import write_report
from hw5.bench.work import ser_workload
from hw5.config import load_grid


@pytest.mark.slow
def test_bench_writes_json_and_markdown_with_ratios(tmp_path, capsys):
    assert main(["bench", "--tiny", "--nli-pairs", "64", "--ser-clips", "12", "--results", str(tmp_path),
                 "--data-dir", str(tmp_path / "nodata")]) == 0
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    rows = {(r["task"], r["path"]): r for r in report["rows"]}
    paths = ("naive", "project", "ceiling", "peer-trainer")       # the compiled peer: CUDA, or named
    assert set(rows) == {(t, p) for t in ("nli", "ser") for p in paths}
    for task in ("nli", "ser"):
        naive, project, ceiling, peer = (rows[(task, p)] for p in paths)
        assert ceiling["padding_share"] == 0 and project["padding_share"] < naive["padding_share"]
        assert naive["vs_naive"] == 1 and ceiling["vs_ceiling"] == 1 and peer["vs_peer"] == 1
        assert abs(project["vs_naive"] - project["units_per_s"] / naive["units_per_s"]) < 1e-9
        assert project["vs_peer"] == pytest.approx(project["units_per_s"] / peer["units_per_s"])
        assert peer["units_per_s"] > 0 and 0 <= peer["padding_share"] < 1
    assert rows[("ser", "project")]["prep_seconds"] > 0            # CNN features computed once
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert re.search(r"\| ser +\| project +\|", md) and "Against the Hugging Face Trainer" in md
    assert f"| ser | project | {rows[('ser', 'project')]['units_per_s']:.4g} | peer-trainer |" in md
    assert report["models"] == "tiny" and report["provenance"]["versions"]["torch"]
    assert report["grid_estimate"] is None                # its forward-only and batching rows not timed


@pytest.mark.slow
def test_paths_naming_the_rows_the_grid_needs_also_estimate_the_grid(tmp_path):
    assert main(["bench", "--tiny", "--nli-pairs", "32", "--ser-clips", "12", "--results", str(tmp_path),
                 "--paths", "project-random,project-fixed,project-eval", "--data-dir", str(tmp_path / "x")]) == 0
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    estimate = report["grid_estimate"]
    assert list(estimate["seconds_per_run"]) == load_grid().experiments and estimate["hours"] > 0
    assert "Estimated time of the default grid" in (tmp_path / "bench" / "bench.md").read_text()


def test_plans_cover_every_example_and_the_ceiling_has_one_shape():
    work = ser_workload(torch.device("cpu"), full=False, n=40)
    for path in ("naive", "project"):
        steps = step_plan(work, PATHS[path])
        assert sorted(i for batch, _ in steps for i in batch) == list(range(40))
    ceiling = step_plan(work, PATHS["ceiling"])
    assert len({(len(b), w) for b, w in ceiling}) == 1


@pytest.mark.slow
def test_ablations_name_what_each_optimization_buys_and_estimate_the_grid(tmp_path):
    from hw5.bench.core import BenchOptions, bench
    table = bench(tmp_path, BenchOptions(tasks=("ser",), full=False, ser_clips=12, ablations=True))
    paths = set(table["path"])
    assert {"project-fp32", "project-random", "project-fixed", "project-waves", "project-x2",
            "project-eval", "project-sdpa"} <= paths
    assert ("ceiling-compiled" in paths) == can_compile(torch.device("cpu"))
    assert "project+graphs" not in paths and "ceiling+graphs" not in paths    # CUDA graphs: GPU only
    assert not {"project-conv-pos", "project-matmul-pos"} & paths   # positional conv methods: CUDA only
    assert "project-all-tokens" not in paths                        # NLI only: SER pools every frame
    rows = table.set_index("path")
    assert rows.loc["project-random", "padding_share"] > rows.loc["project", "padding_share"]
    assert rows.loc["project-x2", "steps"] < rows.loc["project", "steps"]        # fuller steps
    assert (table["warmup_seconds"] > 0).all()
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["grid_estimate"] is None                # NLI rates missing: no partial estimate


def test_each_row_trains_with_its_own_attention_function_and_last_layer():
    """The naive row and project-sdpa run transformers' stock sdpa, the project rows hw5's; the project
    NLI rows compute only [CLS] in the last layer, the naive row and project-all-tokens every token.
    Rows share one model, so each must undo the row before it."""
    from hw5.bench.core import ABLATIONS, PATHS, timed_pass
    from hw5.bench.work import nli_workload
    work = nli_workload(torch.device("cpu"), full=False, n=8)
    batch = work.make_batch([0, 1], 32)
    rows = {**PATHS, **ABLATIONS}
    for name, attention, width in [("naive", "sdpa", 32), ("project", "hw5", 1), ("naive", "sdpa", 32),
                                   ("project", "hw5", 1), ("project-sdpa", "sdpa", 1),
                                   ("project-all-tokens", "hw5", 32)]:
        timed_pass(work, name, rows[name], torch.device("cpu"))
        assert work.model.encoder.config._attn_implementation == attention, name
        assert work.model.encoder(**batch).last_hidden_state.shape[1] == width, name


def test_the_graphs_path_steps_in_a_few_rounded_shapes_of_batch_size_examples():
    from hw5.bench.core import ABLATIONS, PROJECT, step_plan
    from hw5.bench.work import ser_workload
    work = ser_workload(torch.device("cpu"), full=False, n=200)
    graphed, project = step_plan(work, ABLATIONS["project+graphs"]), step_plan(work, PROJECT)
    assert all(w % work.width_step == 0 for _, w in graphed)                  # whole seconds
    assert sum(len(b) != work.batch_size for b, _ in graphed) <= 1           # no audio budget
    assert len({(len(b), w) for b, w in graphed}) < len({(len(b), w) for b, w in project})
    assert sorted(i for b, _ in graphed for i in b) == list(range(200))      # every clip once


@pytest.mark.slow
def test_repeat_times_several_passes_and_reports_one_pass():
    from hw5.bench.core import PROJECT, timed_pass
    work = ser_workload(torch.device("cpu"), full=False, n=40)
    calls = []
    work.model.register_forward_hook(lambda *_: calls.append(1))
    once = timed_pass(work, "project", PROJECT, torch.device("cpu"))
    warm_and_one = len(calls)
    calls.clear()
    thrice = timed_pass(work, "project", PROJECT, torch.device("cpu"), repeat=3)
    assert len(calls) == warm_and_one + 2 * once.steps          # two more passes ran
    assert thrice.steps == once.steps and thrice.padding_share == once.padding_share
    # the rate is one pass's work over one pass's seconds, however many passes ran
    assert thrice.units_per_s * thrice.seconds == pytest.approx(once.units_per_s * once.seconds)
    assert thrice.examples_per_s * thrice.seconds == pytest.approx(once.examples_per_s * once.seconds)


def test_a_pass_takes_the_median_of_the_timed_passes_and_never_the_warm_up():
    from hw5.bench.core import pass_seconds
    assert pass_seconds([0.0, 10.0, 11.0, 13.0, 14.5]) == pytest.approx(1.5)    # passes 1, 2, 1.5 s
    assert pass_seconds([0.0, 10.0, 12.0]) == pytest.approx(2.0)


def test_warmup_visits_every_step_shape_once():
    steps = [([0, 1], 10), ([2, 3], 12), ([4, 5], 10), ([6], 12)]
    assert warmup_steps(steps) == [([0, 1], 10), ([0, 1], 10), ([2, 3], 12), ([6], 12)]


def test_decode_bench_decodes_each_clip_once(tmp_path):
    from hw5.bench.decode import decode_bench
    result = decode_bench(12, workers=2)
    assert result["clips"] == 12 and result["first_pass_clips_per_s"] > 0 and result["decode_clips_per_s"] > 0
    assert result["second_pass_decoded"] == 0 and result["audio_seconds"] > 12 * 0.3


def test_grid_estimate_charges_each_experiment_the_rate_of_its_batching():
    import pandas as pd
    from hw5.bench.grid import estimate
    rates = {"project": 1000, "project-random": 500, "project-fixed": 250, "project-waves": 800, "project-eval": 4000}
    rows = [dict(task=task, path=path, units_per_s=rate * unit, examples_per_s=rate, seconds=1.0,
                 prep_seconds=12.0 if (task, path) == ("ser", "project") else 0.0)       # 12 ms per clip
            for task, unit in (("nli", 75.0), ("ser", 4.0)) for path, rate in rates.items()]
    est = estimate(pd.DataFrame(rows), "test device")
    per_run = est["seconds_per_run"]
    assert per_run["nli-full"] == pytest.approx(3 * 7266 / 1000 + (3 * 1537 + 1564) / 4000)   # bucketed
    assert per_run["ser-mean"] == pytest.approx(10 * 2400 / 500 + (10 * 300 + 300) / 4000)    # random batches
    assert per_run["ser-fixedpad"] == pytest.approx(10 * 2400 / 250 + (10 * 300 + 300) / 4000)
    assert est["feature_seconds_once"] == pytest.approx(3000 * 0.012)   # once for the grid, not per run
    assert est["hours"] == pytest.approx((5 * sum(per_run.values()) + 3000 * 0.012) / 3600)
    started = estimate(pd.DataFrame(rows), "test device", startup={"nli_run_seconds": 10.0, "ser_run_seconds": 12.0})
    assert started["seconds_per_run"]["nli-full"] == pytest.approx(per_run["nli-full"] + 10.0)
    assert started["seconds_per_run"]["ser-speaker"] == pytest.approx(per_run["ser-speaker"] + 12.0)
    graphed = rows + [dict(task=t, path="project+graphs", units_per_s=3000 * unit, examples_per_s=3000, seconds=1.0,
                           prep_seconds=0.0) for t, unit in (("nli", 75.0), ("ser", 4.0))]
    on_gpu = estimate(pd.DataFrame(graphed), "test device")["seconds_per_run"]     # NLI runs use graphs
    assert on_gpu["nli-full"] == pytest.approx(3 * 7266 / 3000 + (3 * 1537 + 1564) / 4000)
    assert on_gpu["ser-mean"] == per_run["ser-mean"]          # graphs off, and benched on buckets only


@pytest.mark.slow
def test_startup_bench_times_a_runs_host_work_before_its_first_step(tmp_path, data_dir):
    """Full-size models saved and loaded back; SER reads every clip's features from the store."""
    from hw5.bench.core import BenchOptions, bench
    bench(tmp_path, BenchOptions(tasks=(), data_dir=data_dir, startup_clips=60))
    startup = json.loads((tmp_path / "bench.json").read_text())["startup"]
    assert startup["clips"] == 60 and startup["ser_features_computed"] == 0      # all loaded
    assert startup["ser_feature_megabytes"] > 60 * 0.3 * 50 * 512 * 4 / 2**20   # 512-dim, >= 0.4 s clips
    for key in ("import_seconds", "nli_build_seconds", "ser_build_seconds", "ser_features_seconds"):
        assert startup[key] > 0
    assert "Start-up of one run" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_paths_time_the_named_rows_plus_the_three_paths_and_the_peer(tmp_path, capsys):
    assert main(["bench", "--tiny", "--tasks", "ser", "--ser-clips", "12", "--paths", "project-eval",
                 "--results", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]
    assert [r["path"] for r in rows] == ["naive", "project", "ceiling", "peer-trainer", "project-eval"]
    assert main(["bench", "--tiny", "--paths", "project,projcet-x2", "--results", str(tmp_path / "typo")]) == 2
    assert "--paths: unknown projcet-x2; choose from naive, project" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_posconv_bench_times_each_method_and_shows_they_compute_the_same_conv(tmp_path):
    from hw5.bench.posconv import CPU_METHODS, posconv_bench, posconv_markdown
    rows = posconv_bench(torch.device("cpu"), shapes=((2, 40), (1, 70)), repeat=1, channels=32, groups=4,
                         kernel=16)
    assert [(r["method"], r["clips"], r["frames"]) for r in rows] == [
        (m, b, t) for b, t in ((2, 40), (1, 70)) for m, _ in CPU_METHODS]
    for row in rows:
        assert row["ms"] > 0 and row["max_error"] < 1e-5 and row["peak_mb"] is None
        assert (row["vs_conv"] == 1.0) == (row["method"] == "conv")
    table = posconv_markdown(rows, "cpu")
    assert table.count("\n| ") == 1 + len(rows) and "| 2 x 40 | fft | fp32 |" in table
    write_report(tmp_path, pd.DataFrame(), torch.device("cpu"), False, None, None, posconv=rows)
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("### hw5 bench (cpu, ") and table in md   # no model size: no training paths ran
    assert json.loads((tmp_path / "bench.json").read_text())["posconv"] == rows


def test_the_trainer_peer_trains_a_copy_of_the_bench_model_with_its_cnn_frozen(tmp_path):
    """SER's peer: the same encoder weights, trained from padded waveforms, the CNN never moving; the
    bench's own model is left as it was; every clip is seen once per epoch."""
    from hw5.bench.peer import PEERS, peer_trainer
    work = ser_workload(torch.device("cpu"), full=False, n=40)
    before = {k: v.clone() for k, v in work.model.encoder.state_dict().items()}
    trainer, clock = peer_trainer(work, torch.device("cpu"), PEERS["peer-trainer"], tmp_path, epochs=1)
    start = {k: v.clone() for k, v in trainer.model.hubert.state_dict().items()}
    assert all(torch.equal(start[k], before[k]) for k in before)               # the same random init
    trainer.train()
    after = trainer.model.hubert.state_dict()
    cnn = [k for k in after if k.startswith("feature_extractor.")]
    assert cnn and all(torch.equal(after[k], start[k]) for k in cnn)           # frozen
    assert not torch.equal(after["encoder.layers.0.attention.q_proj.weight"],
                           start["encoder.layers.0.attention.q_proj.weight"])  # the transformer trained
    assert all(torch.equal(v, before[k]) for k, v in work.model.encoder.state_dict().items())
    assert sum(rows for rows, _ in trainer.shapes) == 40 and len(clock.marks) == 1
    # the stock attention, as a user would run it; the bench model keeps the project's
    assert (trainer.model.hubert.config._attn_implementation, work.model.encoder.config._attn_implementation) \
        == ("sdpa", "hw5")
    assert all(width <= max(work.lengths) for _, width in trainer.shapes)


def test_the_nli_peer_is_bert_for_sequence_classification_holding_the_bench_encoder(tmp_path):
    from hw5.bench.peer import peer_model
    from hw5.bench.work import nli_workload
    work = nli_workload(torch.device("cpu"), full=False, n=8)
    peer = peer_model(work)
    assert type(peer).__name__ == "BertForSequenceClassification" and peer.config.num_labels == 3
    ours = work.model.encoder.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in peer.bert.state_dict().items() if k in ours)
    assert set(ours) <= set(peer.bert.state_dict())
    assert (peer.config._attn_implementation, work.model.encoder.config._attn_implementation) == ("sdpa", "hw5")


def test_the_peer_groups_lengths_as_on_the_study_split_not_as_on_the_bench_sample():
    """The Trainer's group_by_length sorts within mega-batches sized by the dataset: on a 320-clip
    sample that is 5 batches; the peer rows group as the study's 2,400 training clips would be."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from hw5.bench.peer import study_scale_grouping
    lengths = ser_workload(torch.device("cpu"), full=False, n=320).lengths
    items = [{"input_values": [0] * n} for n in lengths]

    def padding(order):
        batches = [order[i:i + 16] for i in range(0, len(order), 16)]
        return 1 - sum(lengths) / sum(max(lengths[i] for i in b) * len(b) for b in batches)
    torch.manual_seed(0)
    ours = list(study_scale_grouping("ser", 16, items, "input_values"))
    stock = list(LengthGroupedSampler(16, dataset=items, model_input_name="input_values"))
    assert sorted(ours) == list(range(320))
    assert padding(ours) < padding(stock) / 2


def test_without_accelerate_the_bench_times_the_rest_and_says_why_the_peers_are_missing(tmp_path, monkeypatch):
    import hw5.bench.core as core
    monkeypatch.setattr(core, "missing_dependency", lambda: "the Trainer needs accelerate: pip install -e '.[bench]'")
    table = core.bench(tmp_path, core.BenchOptions(tasks=("ser",), full=False, ser_clips=8))
    assert set(table["path"]) == {"naive", "project", "ceiling"} and table["vs_peer"].isna().all()
    assert "Peer rows not timed: the Trainer needs accelerate" in (tmp_path / "bench.md").read_text()


def test_the_trainer_peer_always_runs_and_its_compiled_row_by_default_only_on_cuda():
    from hw5.bench.core import selected_variants
    from hw5.config import ConfigError
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert list(selected_variants((), False, cpu)) == ["naive", "project", "ceiling", "peer-trainer"]
    assert "peer-trainer+compile" in selected_variants((), False, cuda)
    assert "peer-trainer+compile" not in selected_variants((), True, cpu)           # minutes on a CPU
    named = selected_variants(("peer-trainer+compile", "project-eval"), False, cpu)
    assert list(named) == ["naive", "project", "ceiling", "peer-trainer", "peer-trainer+compile", "project-eval"]
    with pytest.raises(ConfigError, match="peer-trainer"):
        selected_variants(("peer-trainr",), False, cpu)
