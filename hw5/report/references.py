"""Published results beside ours, with whether the comparison is like for like (the split decides)."""
from __future__ import annotations

from dataclasses import dataclass

from .document import Markdown
from .numbers import mean_std
from .runs import Collection
from .tables import DASH, fmt_mean_std, markdown_table


@dataclass(frozen=True)
class Published:
    task: str
    result: str           # model and setting as the source reports it
    metric: str           # metric key in metrics.json["test"]
    value: float | None   # on a 0-1 scale; None: the source is a benchmark to look up, not one number
    source: str
    ours: str             # which of our experiments: the "nli" / "ser" baseline, or "emobox" (split: emobox)
    comparable: str       # whether our number is measured on the same examples


FARSTAIL_TEST = "the official FarsTail test split (1,564 pairs), as ours"
RANDOM_SHEMO = "roughly: also a random, speaker-dependent split of ShEMO, but its own clips"
PUBLISHED = (
    Published("ser", "HuBERT-base fine-tuned on ShEMO", "accuracy", 0.92,
              "model card of m3hrdadfi/hubert-base-persian-speech-emotion-recognition", "ser", RANDOM_SHEMO),
    Published("ser", "HuBERT-base fine-tuned on ShEMO", "macro_f1", 0.86,
              "same model card (≈ 0.86)", "ser", RANDOM_SHEMO),
    Published("ser", "speech models on EmoBox's ShEMO fold", "uar", None,
              "EmoBox benchmark (Ma et al., Interspeech 2024), its ShEMO results", "emobox",
              "yes: the same fold (its test part); ours holds out validation from its train part"),
    Published("nli", "ParsBERT", "accuracy", 0.8252, "FaBERT paper (Masumi et al., 2024), FarsTail results",
              "nli", FARSTAIL_TEST),
    Published("nli", "mBERT", "accuracy", 0.8338, "same table", "nli", FARSTAIL_TEST + "; another model"),
    Published("nli", "XLM-R", "accuracy", 0.8350, "same table", "nli", FARSTAIL_TEST + "; another model"),
    Published("nli", "FaBERT", "accuracy", 0.8445, "same table", "nli", FARSTAIL_TEST + "; another model"),
)


def references_section(collection: Collection) -> list:
    smoke = any(r.metrics.get("smoke") for r in collection.runs.values() if r.status == "done")
    rows = []
    for ref in PUBLISHED:
        ours = _ours(collection, ref.ours)
        if ours is None:
            continue
        values = [r.metrics.get("test", {}).get(ref.metric) for r in collection.done(ours)]
        n, mean, std = mean_std([float(v) for v in values if isinstance(v, (int, float))])
        published = DASH if ref.value is None else f"{ref.value:.4g}"
        comparable = "no: smoke runs (tiny models, small or synthetic data)" if smoke else ref.comparable
        rows.append([ref.result, ref.metric, published, ref.source, f"`{ours}`",
                     fmt_mean_std(mean, std, n, 3) if n else DASH, n, comparable])
    if not rows:
        return []
    table = markdown_table(["Published result", "Metric", "Published", "Source", "Ours", "Ours (mean ± std)", "n",
                            "Comparable?"], rows)
    return [Markdown("## Published results beside ours\n\nTest-split scores, 0-1 scale. A row is like for like "
                     "only where the split is the same; the EmoBox row names a benchmark rather than one number.\n\n"
                     + table)]


def _ours(collection: Collection, role: str) -> str | None:
    """The experiment a published row is set beside: a task's baseline, or the one on the EmoBox split."""
    if role in collection.scope.report.baselines:
        name = collection.scope.report.baselines[role]
        return name if name in collection.scope.tasks else None
    on_split = [e for e in collection.experiments("ser") if collection.setting(e, "split") == role]
    return on_split[0] if on_split else None
