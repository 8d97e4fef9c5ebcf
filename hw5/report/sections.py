"""The report's sections; each writes its tables / plots and returns the blocks that show them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hw5 import statsdoc
from hw5.config import REPO_ROOT

from . import plots
from .document import Image, Markdown, demote_headings, relative
from .numbers import COMPARED, comparison_frame, per_class_frame, summary_frame
from .runs import Collection, Run
from .tables import (comparison_markdown, config_markdown, hyperparameter_markdown, per_class_markdown,
                     resource_markdown, resource_summary, status_frame, status_markdown, summary_markdown,
                     write_table)

METHOD_DOC = REPO_ROOT / "docs" / "method.md"
UNITS = {"nli": "tokens", "ser": "audio-seconds"}  # what throughput.units_per_s counts
TASK_TITLES = {"nli": "Persian NLI (ParsBERT on FarsTail)", "ser": "Speech emotion recognition (HuBERT on ShEMO)"}


@dataclass
class Outputs:
    """Where the generated files go (aggregate.py replaces tables/, plots/ and the report as a set)."""
    results: Path

    @property
    def tables(self) -> Path:
        return self.results / "tables"

    @property
    def plots(self) -> Path:
        return self.results / "plots"

    def figure(self, path: Path | None, caption: str) -> list:
        return [] if path is None else [Image(path, caption)]

    def link(self, path: Path, text: str) -> str:
        return f"[{text}]({relative(path, self.results)})"


def header(collection: Collection, runs: pd.DataFrame) -> list:
    expected = len(collection.scope.tasks) * len(collection.scope.seeds)
    done = [r for r in collection.runs.values() if r.status == "done"]
    provenance = [r.metrics.get("provenance") or {} for r in done]
    finished = max((str(p.get("finished")) for p in provenance if p.get("finished")), default="–")
    shas = sorted({f"{p.get('git_sha') or 'unknown'}{' (dirty)' if p.get('git_dirty') else ''}" for p in provenance})
    devices = sorted({str(p.get("device") or "unknown") for p in provenance})
    lines = [
        "# HW5 study report: Persian NLI and speech emotion recognition", "",
        "Built by `python aggregate.py` from the `metrics.json` of every run under this folder; no number "
        "here is typed by hand.", "",
        f"- Runs used: **{len(done)} of {expected}** expected ({len(collection.scope.tasks)} experiments × "
        f"seeds {', '.join(map(str, collection.scope.seeds)) or '–'}; grid from {collection.scope.source}).",
        f"- Latest run finished: {finished}. Code version(s): {', '.join(shas) or '–'}. "
        f"Device(s): {', '.join(devices) or '–'}.",
        "- Every number is mean ± sample std (ddof = 1) over the seeds used (n); '–' where n = 1. Stale, "
        "partial and corrupt runs are never averaged.",
        f"- {judged_by(collection)}",
    ]
    if any(r.metrics.get("smoke") for r in done):
        lines += ["", "> **Smoke runs.** Some runs used tiny models on tiny data (`smoke: true`): their numbers "
                  "test the pipeline and say nothing about the study."]
    return [Markdown("\n".join(lines))]


def judged_by(collection: Collection) -> str:
    """How seeds were judged current or stale (the run contract, hw5/contract.py)."""
    if not collection.scope.declared:
        return "No experiments file: a seed whose config differs from its experiment's newest run is stale."
    checked = [e for e in collection.scope.tasks if e in collection.data_checked]
    data = ("and the data fingerprint (data found here for all experiments)" if len(checked) == len(collection.scope.declared)
            else f"and, for {', '.join(f'`{e}`' for e in checked)}, the data fingerprint (the other experiments' "
                 "data is not here: config only)" if checked else "only (the data is not here to compare fingerprints)")
    return f"Each seed is judged against the experiments file's current config hash {data}."


def status_section(collection: Collection, outputs: Outputs) -> list:
    write_table(outputs.tables, "status", status_frame(collection), status_markdown(collection))
    blocks = [Markdown("## Run status\n\n" + (status_markdown(collection) if collection.runs
                                              else "No runs found and none expected (no experiments file)."))]
    # corrupt and stale runs one by one (each has its own reason); the rest grouped per experiment
    lines = [f"- `{r.experiment}` seed {r.seed}: **{r.status}** – {r.problem} (`{relative(r.path, outputs.results)}`)"
             for r in collection.with_status("corrupt", "stale")]
    for status in ("partial", "missing", "ignored"):
        by_experiment: dict[str, list[Run]] = {}
        for run in collection.with_status(status):
            by_experiment.setdefault(run.experiment, []).append(run)
        lines += [f"- `{e}` seed{'s' if len(rs) > 1 else ''} {', '.join(str(r.seed) for r in rs)}: "
                  f"**{status}** – {rs[0].problem}" for e, rs in by_experiment.items()]
    blocks.append(Markdown("Not averaged:\n\n" + "\n".join(lines) if lines
                           else "Every expected run is done and consistent."))
    return blocks


def method_section(path: Path = METHOD_DOC) -> list:
    if not path.is_file():
        return [Markdown(f"## Method\n\n(The method notes `{path.name}` were not found next to the code.)")]
    text = demote_headings(path.read_text(encoding="utf-8"))
    return [Markdown(text if text.lstrip().startswith("## ") else "## Method\n\n" + text)]


def stats_blocks(doc: dict, folder: Path, level: int = 3) -> list:
    """A statistics document as report blocks: text as Markdown, each figure that exists as an Image."""
    blocks = [Markdown("\n\n".join([f"{'#' * level} {doc['title']}", *doc.get("intro", [])]))]
    for entry in doc["sections"]:
        blocks.append(Markdown(statsdoc.section_text(entry, level + 1)))
        figure = entry.get("figure")
        if figure and (folder / figure["file"]).is_file():
            blocks.append(Image(folder / figure["file"], figure["caption"]))
    return blocks


def stats_section(outputs: Outputs) -> list:
    """Every results/stats/*_stats.json rendered (its figures inline), then any other PNG there."""
    folder = outputs.results / "stats"
    documents = sorted(folder.glob(f"*{statsdoc.SUFFIX}")) if folder.is_dir() else []
    blocks = [Markdown("## Data statistics")]
    if not documents:
        return blocks + [Markdown("No dataset statistics found under `stats/` (run `hw5 stats` to make them).")]
    for path in documents:
        try:
            blocks += stats_blocks(statsdoc.read_stats(path), folder)
        except ValueError as exc:
            blocks.append(Markdown(f"> {exc}"))
    shown = {b.path.resolve() for b in blocks if isinstance(b, Image)}
    return blocks + [Image(p, f"dataset statistics: {p.stem}") for p in sorted(folder.glob("*.png"))
                     if p.resolve() not in shown]


def hyperparameter_section(collection: Collection) -> list:
    blocks = [Markdown("## Hyper-parameters")]
    for task in ("nli", "ser"):
        if collection.experiments(task):
            blocks.append(Markdown(f"### {TASK_TITLES[task]}\n\n{hyperparameter_markdown(collection, task)}"))
            differences = config_markdown(collection, task)
            if differences:
                blocks.append(Markdown("Resolved-config fields that differ between these experiments:\n\n"
                                       + differences))
    return blocks


def task_section(collection: Collection, task: str, runs: pd.DataFrame, outputs: Outputs) -> list:
    """Summary, comparison to the baseline, cost, metric bars, curves and confusion matrices of one task."""
    experiments = collection.experiments(task)
    if not experiments:
        return []
    summary = summary_frame(collection, runs, experiments)
    table = summary_markdown(summary, task)
    write_table(outputs.tables, f"{task}_summary", summary, table)
    blocks = [Markdown(f"## Results: {TASK_TITLES.get(task, task)}\n\nTest-split metrics "
                       f"({outputs.link(outputs.tables / f'{task}_summary.csv', 'CSV')}):\n\n{table}")]
    blocks += _comparison_blocks(collection, task, runs, experiments, outputs)
    cost = resource_summary(collection, experiments)
    write_table(outputs.tables, f"{task}_cost", cost, resource_markdown(cost, UNITS.get(task, "units")))
    blocks.append(Markdown("### Cost\n\nPadding share and seconds are means over epochs of each run's "
                           "history; peak memory is the largest epoch value.\n\n"
                           + resource_markdown(cost, UNITS.get(task, "units"))))
    keys = COMPARED.get(task, ("accuracy",))
    blocks += outputs.figure(plots.plot_metric_bars(task, summary, keys, outputs.plots / f"{task}_metrics.png"),
                             f"{task} test metrics per experiment")
    if task == "ser":
        blocks += ser_section(collection, outputs)
    blocks.append(Markdown("### Learning curves and confusion matrices"))
    for experiment in experiments:
        done = collection.done(experiment)
        blocks += outputs.figure(plots.plot_curves(experiment, done, outputs.plots / f"{experiment}_curves.png"),
                                 f"{experiment} learning curves")
        blocks += outputs.figure(plots.plot_confusion(experiment, done,
                                                      outputs.plots / f"{experiment}_confusion.png"),
                                 f"{experiment} confusion matrices")
    return blocks


def _comparison_blocks(collection, task, runs, experiments, outputs) -> list:
    baseline = collection.scope.report.baselines.get(task)
    if baseline not in experiments:
        return [Markdown(f"No comparison: the baseline `{baseline}` is not among the experiments.")]
    comparison = comparison_frame(runs, experiments, baseline, COMPARED[task])
    table = comparison_markdown(comparison, task)
    write_table(outputs.tables, f"{task}_vs_baseline", comparison, table)
    return [Markdown(f"### Against the baseline `{baseline}`\n\nΔ = variant − baseline on the same seed, averaged "
                     "over the seeds both have, with a 95% t-interval over those pairs. `*` marks an interval "
                     "that excludes 0: a difference larger than seed-to-seed noise. One pair gives no interval."
                     f"\n\n{table}")]


def ser_section(collection: Collection, outputs: Outputs) -> list:
    """Per-class recall with and without the imbalance remedy; dynamic vs fixed padding (the report's
    imbalance and padding questions)."""
    blocks = []
    for question in collection.scope.report.of_kind("imbalance"):
        blocks += _imbalance_blocks(collection, outputs, question.baseline, question.variant)
    for question in collection.scope.report.of_kind("padding"):
        blocks += _padding_blocks(collection, outputs, question.baseline, question.variant)
    return blocks


def _imbalance_blocks(collection: Collection, outputs: Outputs, weighted: str, plain: str) -> list:
    blocks = [Markdown("### Imbalance remedy: per-class recall\n\n"
                       f"`{weighted}` trains with class-weighted cross-entropy, `{plain}` without weights.")]
    frames = {e: per_class_frame(collection.done(e)) for e in (weighted, plain)}
    return blocks + (outputs.figure(plots.plot_class_recall(frames, outputs.plots / "ser_class_recall.png"),
                                    "SER per-class recall with and without class weights")
                     or [Markdown("No finished runs of these two experiments yet.")])


def _padding_blocks(collection: Collection, outputs: Outputs, dynamic: str, fixed: str) -> list:
    padding = resource_summary(collection, [dynamic, fixed])
    write_table(outputs.tables, "ser_padding", padding, resource_markdown(padding, UNITS["ser"]))
    labels = {e: _batching(collection, e) for e in (dynamic, fixed)}
    blocks = [Markdown(f"### Dynamic vs fixed padding\n\n`{dynamic}` pads each batch to its longest "
                       f"clip, `{fixed}` pads every clip to one fixed length.\n\n"
                       + resource_markdown(padding, UNITS["ser"]))]
    return blocks + outputs.figure(plots.plot_resources(padding, labels, outputs.plots / "ser_padding.png"),
                                   "SER padding share, epoch time and memory, dynamic vs fixed padding")


def _batching(collection: Collection, experiment: str) -> str:
    """The padding scheme an experiment's runs used (their config's batching), for plot labels."""
    return str(collection.setting(experiment, "batching") or "?")


def overall_section(collection: Collection, runs: pd.DataFrame, outputs: Outputs) -> list:
    summary = summary_frame(collection, runs, collection.experiments())
    table = summary_markdown(summary, None)
    write_table(outputs.tables, "summary", summary, table)
    write_table(outputs.tables, "runs", runs)
    return [Markdown("## All experiments\n\n" + (table if len(summary) else "No experiments.") +
                     f"\nPer-run values: {outputs.link(outputs.tables / 'runs.csv', 'runs.csv')}; "
                     f"summary: {outputs.link(outputs.tables / 'summary.csv', 'summary.csv')}.")]


def reports_appendix(collection: Collection) -> list:
    """Per-class mean ± std per experiment, and the classification report of its lowest seed."""
    blocks = [Markdown("## Appendix: classification reports (test split)")]
    for experiment in collection.experiments():
        done = collection.done(experiment)
        if not done:
            continue
        report = str(done[0].metrics["test"].get("report") or "(no report in metrics.json)").rstrip()
        blocks.append(Markdown(f"### {experiment}\n\nPer class over {len(done)} seed(s):\n\n"
                               f"{per_class_markdown(done)}\nscikit-learn report, seed {done[0].seed}:\n\n"
                               f"```text\n{report}\n```"))
    return blocks
