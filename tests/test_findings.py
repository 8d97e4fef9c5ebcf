"""The report's Findings and published references: the sentences follow the numbers (flip one, flip the other)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hw5.report.findings import findings_section, verdict  # noqa: E402
from hw5.report.numbers import paired_difference, run_frame  # noqa: E402
from hw5.report.references import references_section  # noqa: E402
from hw5.report.runs import collect  # noqa: E402

from test_aggregate import make_run, write_grid  # noqa: E402

SEEDS = [0, 1, 2]
NOISE = (0.01, -0.012, 0.002)          # seed-to-seed wiggle of a baseline
OTHER_NOISE = (-0.006, 0.009, -0.003)   # ... and of a variant


def study(tmp_path: Path, runs: dict[str, list[dict]], smoke: bool = False) -> str:
    """Write one run per (experiment, seed) with the given values; return Findings + references as text."""
    results = tmp_path / "results"
    tmp_path.mkdir(parents=True, exist_ok=True)
    grid = write_grid(tmp_path / "experiments.yaml", list(runs), SEEDS)   # + the real questions about them
    for experiment, per_seed in runs.items():
        for seed, values in zip(SEEDS, per_seed):
            make_run(results, experiment, seed, grid, smoke=smoke, **values)
    collection = collect(results, grid, grid_explicit=True, seeds=None, smoke=smoke, data_dir=tmp_path / "no-data")
    blocks = findings_section(collection, run_frame(collection)) + references_section(collection)
    return "\n\n".join(b.text for b in blocks)


def seeds_of(noise=NOISE, **values) -> list[dict]:
    """The same values on every seed, each float nudged by `noise` (so intervals have a width)."""
    return [{k: v + noise[i] if isinstance(v, float) else v for k, v in values.items()} for i in range(3)]


def variant_of(**values) -> list[dict]:
    return seeds_of(OTHER_NOISE, **values)


def paragraph(text: str, start: str) -> str:
    return next(p for p in text.split("\n\n") if p.startswith(start))


def test_verdict_follows_the_interval():
    lower = paired_difference({0: 0.8, 1: 0.82, 2: 0.81}, {0: 0.70, 1: 0.73, 2: 0.71})
    noise = paired_difference({0: 0.8, 1: 0.82, 2: 0.81}, {0: 0.81, 1: 0.80, 2: 0.815})
    one = paired_difference({0: 0.8}, {0: 0.7})
    assert verdict("accuracy", lower).startswith("accuracy is lower by 0.097 (95% CI [")
    assert verdict("accuracy", lower).endswith("n = 3)")
    assert verdict("accuracy", noise).startswith("accuracy is within seed-to-seed noise (Δ -0.002")
    assert "no conclusion" in verdict("accuracy", one)


@pytest.mark.parametrize("variant_acc, says, literature", [
    (0.60, "accuracy is lower by 0.200", "here the loss is larger"),
    (0.80, "accuracy is within seed-to-seed noise", "our point estimate is in line with that"),
])
def test_nli_variant_sentence_flips_with_its_numbers(tmp_path, variant_acc, says, literature):
    text = study(tmp_path, {"nli-full": seeds_of(test__accuracy=0.80, throughput__train_seconds=100.0),
                            "nli-freeze9": variant_of(test__accuracy=variant_acc, throughput__train_seconds=40.0,
                                                    params__trainable=21_000_000)})
    finding = paragraph(text, "**`nli-freeze9`**")
    assert says in finding and literature in finding and "Lee et al. (2019" in finding
    assert f"keeps {variant_acc / 0.80:.1%} of `nli-full`'s accuracy" in finding
    assert "12.9% of the full model's parameters (21.0M)" in finding      # of the fixture's 162.8M
    assert "takes 0.40× the training seconds" in finding


@pytest.mark.parametrize("speaker_uar, says", [
    (0.50, "The random split flatters SER by 0.150 UAR"),
    (0.65, "No leakage effect is visible at this n."),
])
def test_leakage_sentence_flips_with_its_numbers(tmp_path, speaker_uar, says):
    text = study(tmp_path, {"ser-mean": seeds_of(test__uar=0.65), "ser-speaker": variant_of(test__uar=speaker_uar)})
    assert says in paragraph(text, "**Speaker leakage.**")


@pytest.mark.parametrize("noweight, says", [
    ({"test__uar": 0.55, "test__accuracy": 0.77}, "The weights raise UAR beyond seed noise and cost no accuracy"),
    ({"test__uar": 0.55, "test__accuracy": 0.85}, "The weights trade accuracy"),
    ({"test__uar": 0.65, "test__accuracy": 0.77}, "the intervals do not show the weights improving the balance"),
])
def test_imbalance_sentence_flips_with_its_numbers(tmp_path, noweight, says):
    fear_low = {"test__per_class__fear__recall": 0.05}
    text = study(tmp_path, {"ser-mean": seeds_of(test__uar=0.65, test__accuracy=0.77),
                            "ser-noweight": variant_of(**noweight, **fear_low)})
    finding = paragraph(text, "**The imbalance remedy.**")
    assert says in finding
    assert "recall of the rarest class, fear (4 test clips per seed, so few that" in finding   # the fixture's support


def test_padding_sentence_reports_cost_and_flips_on_quality(tmp_path):
    history = [{"epoch": 1, "seconds": 90.0, "padding_share": 0.55, "peak_memory_mb": 9000.0}]
    same = study(tmp_path / "a", {"ser-mean": seeds_of(test__uar=0.65), "ser-fixedpad": [
        {"test__uar": 0.65 + n, "history": history} for n in NOISE]})
    finding = paragraph(same, "**Dynamic vs fixed padding.**")
    assert finding.startswith("**Dynamic vs fixed padding.** 55% of what fixed padding (`ser-fixedpad`) feeds the "
                              "model is padding, against 12% with dynamic padding")
    assert "an epoch takes 2.31× the seconds (90.0 s vs 39.0 s)" in finding   # the fixture's 38 + 40 s epochs
    assert "changes the cost and not the result" in finding
    worse = study(tmp_path / "b", {"ser-mean": seeds_of(test__uar=0.65), "ser-fixedpad": [
        {"test__uar": 0.45 + n, "history": history} for n in NOISE]})
    assert "The quality differs beyond seed noise" in paragraph(worse, "**Dynamic vs fixed padding.**")


@pytest.mark.parametrize("fast_uar, says", [
    (0.65, "within seed-to-seed noise: at this n the recipe changes the cost, not the result"),
    (0.55, "It costs UAR beyond seed noise: keep the study's recipe"),
])
def test_fast_recipe_says_whether_it_moves_the_scores_beyond_seed_noise(tmp_path, fast_uar, says):
    history = [{"epoch": 1, "seconds": 20.0, "padding_share": 0.04, "peak_memory_mb": 4000.0}]
    text = study(tmp_path, {"ser-mean": seeds_of(test__uar=0.65, throughput__train_seconds=100.0),
                            "ser-fast": [{"test__uar": fast_uar + n, "history": history,
                                          "throughput__train_seconds": 50.0} for n in OTHER_NOISE]})
    finding = paragraph(text, "**The fast recipe.**")
    assert finding.startswith("**The fast recipe.** `ser-fast` (") and "against the study's recipe (`ser-mean`)" in finding
    assert "4% padding against 12%" in finding and "training takes 0.50× the seconds" in finding
    assert says in finding


def test_pooling_cites_okabe_and_follows_the_interval(tmp_path):
    text = study(tmp_path, {"ser-mean": seeds_of(test__uar=0.65), "ser-attnstats": variant_of(test__uar=0.72)})
    finding = paragraph(text, "**Mean vs attentive statistics pooling.**")
    assert "UAR is higher by 0.070" in finding and "Okabe et al. (2018" in finding and "Here too it helps." in finding


def test_smoke_runs_are_said_to_describe_the_pipeline_and_not_compared_with_papers(tmp_path):
    real = study(tmp_path / "real", {"nli-full": seeds_of(test__accuracy=0.80)})
    smoke = study(tmp_path / "smoke", {"nli-full": seeds_of(test__accuracy=0.40)}, smoke=True)
    assert "describe the pipeline, not the study" in smoke and "Smoke runs" not in real
    row = next(line for line in real.splitlines() if line.startswith("| ParsBERT"))
    assert "| 0.8252 |" in row and "| 0.800 ± 0.011 | 3 |" in row and "official FarsTail test split" in row
    smoke_row = next(line for line in smoke.splitlines() if line.startswith("| ParsBERT"))
    assert "no: smoke runs" in smoke_row


def test_missing_runs_are_named_not_compared(tmp_path):
    text = study(tmp_path, {"ser-mean": seeds_of(test__uar=0.65), "ser-attnstats": []})
    assert "**Mean vs attentive statistics pooling.** No finished runs of `ser-attnstats` yet." in text


def test_every_claim_a_question_may_name_has_its_literature():
    from hw5.report.findings import LITERATURE, WRITERS
    from hw5.report_spec import CLAIMS, KINDS
    assert set(LITERATURE) == set(CLAIMS) and set(WRITERS) | {"variant"} == set(KINDS)


def test_a_new_experiment_joins_the_findings_by_one_line_of_yaml(tmp_path):
    runs = {"nli-full": seeds_of(test__accuracy=0.80), "nli-distil": variant_of(test__accuracy=0.60)}
    text = study(tmp_path, runs)
    assert "nli-distil" not in text.split("## Published")[0]          # not asked about: no paragraph
    grid = tmp_path / "experiments.yaml"
    data = yaml.safe_load(grid.read_text())
    data["report"]["questions"].append({"kind": "variant", "baseline": "nli-full", "variant": "nli-distil"})
    grid.write_text(yaml.safe_dump(data))
    collection = collect(tmp_path / "results", grid, grid_explicit=True, seeds=None, smoke=False,
                         data_dir=tmp_path / "no-data")
    text = findings_section(collection, run_frame(collection))[0].text
    assert "**`nli-distil`**" in text and "accuracy is lower by 0.200" in text


@pytest.mark.parametrize("question, says", [
    ("{kind: paddding, baseline: ser-mean, variant: nli-full}", "kind is 'paddding'"),
    ("{kind: padding, baseline: ser-mean, variant: nli-full}", "a nli experiment; it must be a ser one"),
    ("{kind: padding, baseline: ser-mean, variant: ser-fixed}", "'ser-fixed', not an experiment of this file"),
    ("{kind: variant, baseline: nli-full, variant: nli-full, claim: lee2020}", "claim is 'lee2020'"),
])
def test_a_wrong_question_is_one_error_naming_the_file_and_key(tmp_path, question, says):
    from hw5.config import ConfigError, load_grid
    grid = tmp_path / "experiments.yaml"
    grid.write_text("seeds: [0]\nexperiments:\n" + "".join(f"  {e}: {{task: {e[:3]}}}\n" for e in
                    ("nli-full", "ser-mean", "ser-fixedpad")) + f"report:\n  questions:\n  - {question}\n")
    with pytest.raises(ConfigError, match=rf"experiments.yaml: report.questions\[0\].*{re.escape(says)}"):
        load_grid(grid)
