"""Findings: one paragraph per question of the study, written from the numbers, with the literature beside it.

Every comparison is the seed-paired difference variant − baseline with its 95% t-interval
(numbers.paired_difference). The wording follows the interval and nothing else: an interval that
excludes 0 is "higher/lower by x [a, b], n = k"; one that contains 0 is "within seed-to-seed noise";
one pair is "no interval, no conclusion". Comparisons with published results compare point estimates
and say so. With smoke runs a notice says the sentences describe the pipeline, not the study.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .document import Markdown
from .numbers import mean_std, metric_value, paired_difference, resource_frame
from .runs import Collection
from .sweeps import sweep_findings
from .tables import fmt_count

# Literature a "variant" question is read against (its `claim` in the experiments file's report section),
# and the share of the baseline's accuracy a point estimate must keep to be "in line" with it (Lee et al.'s
# ~90%; "costs little" for layer dropping and for head pruning).
LITERATURE = {
    "lee2019": ("Lee et al. (2019, *What would Elsa do? Freezing layers during transformer fine-tuning*) found "
                "that fine-tuning only the last quarter of BERT's layers keeps about 90% of the quality of full "
                "fine-tuning", 0.90),
    "sajjad2023": ("Sajjad et al. (2023, *On the effect of dropping layers of pre-trained transformer models*) "
                   "found that dropping the top layers before fine-tuning costs little", 0.97),
    "michel2019": ("Michel et al. (2019, *Are sixteen heads really better than one?*) and Budhraja et al. (2020, "
                   "*On the weak link between importance and prunability of attention heads*) found that many "
                   "heads can be pruned, at random too, with a limited loss after fine-tuning", 0.95),
}
OKABE = ("Okabe et al. (2018, *Attentive statistics pooling for deep speaker embedding*) introduced it for "
         "speaker embeddings, where weighting the frames and adding their standard deviation beat plain averaging")
SMOKE_NOTICE = ("> **Smoke runs.** These runs train tiny models from random initialisation on small or synthetic "
                "data. The sentences below read their numbers the way they will read the study's; here they describe "
                "the pipeline, not the study (a random-init model, for one, has no pretrained layers whose freezing "
                "could cost or save anything).")


@dataclass(frozen=True)
class Pair:
    """Seed-paired values of one metric: {seed: value} for the baseline and the variant."""
    baseline: dict[int, float]
    variant: dict[int, float]

    @property
    def difference(self) -> dict:
        return paired_difference(self.baseline, self.variant)

    @property
    def ratio(self) -> float:
        """Variant / baseline over the seeds both have (the tables' "as % of baseline")."""
        return self.difference["ratio"]

    def means(self) -> tuple[float, float]:
        return mean_std(self.baseline.values())[1], mean_std(self.variant.values())[1]


def verdict(what: str, d: dict, digits: int = 3) -> str:
    """'UAR is lower by 0.041 (95% CI [-0.066, -0.016], n = 5)' / '... within seed-to-seed noise ...'."""
    n, delta = d["n_pairs"], d["diff_mean"]
    if n == 0 or not math.isfinite(delta):
        return f"{what}: no seed in common, so no comparison"
    if n == 1 or not math.isfinite(d["ci_low"]):
        return f"{what} differs by {delta:+.{digits}f} on the one seed both have (one pair: no interval, no conclusion)"
    ci = f"95% CI [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}], n = {n}"
    if d["ci_low"] == d["ci_high"] == delta == 0:
        return f"{what} is the same on every seed (n = {n})"
    if d["interval_excludes_zero"]:
        return f"{what} is {'higher' if delta > 0 else 'lower'} by {abs(delta):.{digits}f} ({ci})"
    return f"{what} is within seed-to-seed noise (Δ {delta:+.{digits}f}, {ci})"


def direction(d: dict) -> int:
    """+1 / -1 when the interval says higher / lower, 0 when it cannot tell."""
    if not decided(d) or not d["interval_excludes_zero"]:
        return 0
    return 1 if d["diff_mean"] > 0 else -1


def decided(d: dict) -> bool:
    """Whether there is an interval at all (two pairs or more)."""
    return d["n_pairs"] >= 2 and math.isfinite(d["ci_low"])


FEW_TEST_CLIPS = 10   # below this many test clips per seed, one clip moves a class's recall by 0.1 or more
CPU_MEMORY = "; on a CPU this is the process's peak resident memory, which says little about activations"
TOO_FEW = "One seed pair gives no interval, so these numbers support no conclusion yet."


class Evidence:
    """Seed-paired numbers of one baseline/variant pair, read from the usable runs."""

    def __init__(self, collection: Collection, runs: pd.DataFrame, baseline: str, variant: str):
        self.collection, self.runs, self.baseline, self.variant = collection, runs, baseline, variant

    @property
    def present(self) -> bool:
        return bool(self.collection.done(self.baseline)) and bool(self.collection.done(self.variant))

    def _pair(self, per_seed) -> Pair:
        return Pair(per_seed(self.baseline), per_seed(self.variant))

    def metric(self, key: str) -> Pair:
        def per_seed(experiment):
            mine = self.runs[self.runs["experiment"] == experiment]
            return {int(s): float(v) for s, v in zip(mine["seed"], mine[key])}
        return self._pair(per_seed)

    def resources(self, *columns: str) -> list[Pair]:
        """Per-seed resource columns (padding share, s/epoch, peak memory), each history read once."""
        frames = {e: resource_frame(self.collection.done(e)) for e in (self.baseline, self.variant)}
        return [self._pair(lambda e, c=column: {int(s): float(v) for s, v in zip(frames[e]["seed"], frames[e][c])})
                for column in columns]

    def recall(self, cls: str) -> Pair:
        return self._pair(lambda e: {r.seed: metric_value(r.metrics, ("test", "per_class", cls, "recall"))
                                     for r in self.collection.done(e)})

    def rarest_class(self) -> tuple[str, float] | None:
        """The class with the fewest test examples in the baseline's runs, and that mean support."""
        runs = self.collection.done(self.baseline)
        classes = runs[0].metrics.get("classes") or [] if runs else []
        support = {c: mean_std([metric_value(r.metrics, ("test", "per_class", c, "support")) for r in runs])[1]
                   for c in classes}
        support = {c: s for c, s in support.items() if math.isfinite(s)}
        return min(support.items(), key=lambda item: item[1]) if support else None


def _missing(evidence: Evidence, title: str) -> str:
    absent = [e for e in (evidence.baseline, evidence.variant) if not evidence.collection.done(e)]
    return f"**{title}.** No finished runs of {' and '.join(f'`{e}`' for e in absent)} yet."


def by_direction(d: dict, higher: str, lower: str, neither: str) -> str:
    """The reading an interval supports: TOO_FEW without one, else by its direction."""
    return TOO_FEW if not decided(d) else {1: higher, -1: lower, 0: neither}[direction(d)]


def _clips(n: float) -> str:
    return f"{n:.0f} test clip" + ("" if round(n) == 1 else "s")


def _on_cpu(e: Evidence) -> bool:
    runs = e.collection.done(e.baseline) + e.collection.done(e.variant)
    return bool(runs) and all(str((r.metrics.get("provenance") or {}).get("device")) == "cpu" for r in runs)


def _times(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2f}×"


def padding_finding(e: Evidence) -> str:
    title = "Dynamic vs fixed padding"
    if not e.present:
        return _missing(e, title)
    share, seconds, memory = e.resources("padding_share", "epoch_seconds", "peak_memory_mb")
    (dp, fp), (ds, fs), (dm, fm) = share.means(), seconds.means(), memory.means()
    uar, f1 = e.metric("uar").difference, e.metric("macro_f1").difference
    quality = (f"{verdict('UAR', uar)}; {verdict('macro-F1', f1)}")
    if not (decided(uar) and decided(f1)):
        reading = TOO_FEW
    elif direction(uar) == 0 and direction(f1) == 0:
        reading = ("The padding changes the cost and not the result, as it should when attention and pooling "
                   "ignore padded frames.")
    else:
        reading = ("The quality differs beyond seed noise, which masked padding alone would not explain: "
                   "see the per-class recall and the curves.")
    return (f"**{title}.** {fp:.0%} of what fixed padding (`{e.variant}`) feeds the model is padding, against {dp:.0%} "
            f"with dynamic padding (`{e.baseline}`); an epoch takes {_times(seconds.ratio)} the seconds "
            f"({fs:.1f} s vs {ds:.1f} s) and peak memory is {_times(memory.ratio)} ({fm:,.0f} vs "
            f"{dm:,.0f} MB{CPU_MEMORY if _on_cpu(e) else ''}). Quality: {quality}. {reading}")


def pooling_finding(e: Evidence) -> str:
    title = "Mean vs attentive statistics pooling"
    if not e.present:
        return _missing(e, title)
    uar, f1 = e.metric("uar").difference, e.metric("macro_f1").difference
    reading = by_direction(uar, higher="Here too it helps.", lower="Here it does worse than the masked mean.",
                           neither="Here the two cannot be told apart at this n: no evidence either way.")
    return (f"**{title}.** Attentive statistics pooling (`{e.variant}`) against masked mean pooling "
            f"(`{e.baseline}`): {verdict('UAR', uar)}; {verdict('macro-F1', f1)}. {OKABE}. {reading}")


def imbalance_finding(e: Evidence) -> str:
    title = "The imbalance remedy"
    if not e.present:
        return _missing(e, title)
    rarest = e.rarest_class()
    parts = []
    if rarest is not None:
        cls, support = rarest
        recall = e.recall(cls)
        with_w, without = recall.means()
        few = ", so few that its recall moves in large steps" if support < FEW_TEST_CLIPS else ""
        parts.append(f"recall of the rarest class, {cls} ({_clips(support)} per seed{few}), is {without:.2f} "
                     f"without weights against {with_w:.2f} with them: {verdict(f'{cls} recall', recall.difference)}")
    uar, f1, acc = (e.metric(k).difference for k in ("uar", "macro_f1", "accuracy"))
    parts += [verdict("UAR", uar), verdict("macro-F1", f1), verdict("accuracy", acc)]
    raised = [name for name, d in (("UAR", uar), ("macro-F1", f1)) if direction(d) < 0]   # lower without weights
    if not decided(uar):
        reading = TOO_FEW
    elif raised and direction(acc) <= 0:       # accuracy not higher without the weights
        reading = (f"The weights raise {' and '.join(raised)} beyond seed noise and cost no accuracy beyond noise: "
                   "accuracy alone would have hidden what they do.")
    elif raised:
        reading = (f"The weights trade accuracy, which the frequent classes dominate, for balance across classes: "
                   f"{' and '.join(raised)} show the gain that accuracy hides.")
    else:
        reading = "At this n the intervals do not show the weights improving the balance across classes."
    return (f"**{title}.** Plain cross-entropy (`{e.variant}`) against class-weighted cross-entropy "
            f"(`{e.baseline}`), Δ = without − with: " + "; ".join(parts) + f". {reading}")


def leakage_finding(e: Evidence) -> str:
    title = "Speaker leakage"
    if not e.present:
        return _missing(e, title)
    uar, acc = e.metric("uar").difference, e.metric("accuracy").difference
    reading = by_direction(
        uar, lower=f"The random split flatters SER by {abs(uar['diff_mean']):.3f} UAR: part of what it measures is "
                   "recognising speakers the model has heard.",
        neither="No leakage effect is visible at this n.",
        higher="The speaker-independent split scores higher here, so no leakage effect shows.")
    return (f"**{title}.** On the speaker-independent split (`{e.variant}`) no test speaker is heard in training; "
            f"against the random stratified split (`{e.baseline}`): {verdict('UAR', uar)}; "
            f"{verdict('accuracy', acc)}. The two test parts hold different clips, so the pairs share the seed, "
            f"not the examples. {reading}")


def recipe_finding(e: Evidence) -> str:
    title = "The fast recipe"
    if not e.present:
        return _missing(e, title)
    uar, f1 = e.metric("uar").difference, e.metric("macro_f1").difference
    share, = e.resources("padding_share")
    reading = by_direction(
        uar, higher="It scores higher beyond seed noise as well.",
        lower="It costs UAR beyond seed noise: keep the study's recipe where the scores matter.",
        neither="The difference is within seed-to-seed noise: at this n the recipe changes the cost, not the result.")
    cpu = " (CUDA graphs run eagerly on a CPU: this speed-up is the bucketing's alone)" if _on_cpu(e) else ""
    return (f"**{title}.** `{e.variant}` ({_description(e.collection, e.variant)}) against the study's recipe "
            f"(`{e.baseline}`): {share.means()[1]:.0%} padding against {share.means()[0]:.0%}; training takes "
            f"{_times(e.metric('train_seconds').ratio)} the seconds at {_times(e.metric('units_per_s').ratio)} the "
            f"audio-seconds/s{cpu}. {verdict('UAR', uar)}; {verdict('macro-F1', f1)}. {reading}")


def variant_finding(e: Evidence, description: str, claim: str = "") -> str:
    title = f"`{e.variant}`"
    if not e.present:
        return _missing(e, title)
    accuracy = e.metric("accuracy")
    kept = accuracy.ratio
    trainable, total = e.metric("trainable_params"), e.metric("total_params")
    share = trainable.means()[1] / total.means()[0] if total.means()[0] else math.nan
    text = (f"**{title}** — {description} — keeps {kept:.1%} of `{e.baseline}`'s accuracy: "
            f"{verdict('accuracy', accuracy.difference)}. It trains {share:.1%} of the full model's parameters "
            f"({fmt_count(trainable.means()[1])}), takes {_times(e.metric('train_seconds').ratio)} the training "
            f"seconds and runs at {_times(e.metric('units_per_s').ratio)} the tokens/s.")
    if claim in LITERATURE:
        finding, keeps = LITERATURE[claim]
        agrees = math.isfinite(kept) and (kept >= keeps or direction(accuracy.difference) >= 0)
        text += f" {finding}; {'our point estimate is in line with that' if agrees else 'here the loss is larger'}."
    return text


WRITERS = {"padding": padding_finding, "pooling": pooling_finding, "imbalance": imbalance_finding,
           "leakage": leakage_finding, "recipe": recipe_finding}


def findings_section(collection: Collection, runs: pd.DataFrame) -> list:
    """The Findings section: one paragraph per question of the experiments file's report section."""
    paragraphs = []
    for q in collection.scope.report.questions:
        evidence = Evidence(collection, runs, q.baseline, q.variant)
        paragraphs.append(variant_finding(evidence, _description(collection, q.variant), q.claim)
                          if q.kind == "variant" else WRITERS[q.kind](evidence))
    paragraphs += sweep_findings(collection)
    smoke = any(r.metrics.get("smoke") for r in collection.runs.values() if r.status == "done")
    blocks = ["## Findings"] + ([SMOKE_NOTICE] if smoke else [])
    blocks += paragraphs or ["No questions declared (the experiments file's `report.questions`)."]
    return [Markdown("\n\n".join(blocks))]


def _description(collection: Collection, experiment: str) -> str:
    return str(collection.setting(experiment, "description") or experiment)
