"""`hw5 stats nli`: FarsTail statistics under results/stats/: nli_stats.json (the source), its Markdown,
one CSV per table and a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hw5.config import TrainConfig
from hw5.data.farstail import CLASSES, SPLITS, check_release, ensure_farstail, normalization_report, read_split
from hw5.io import write_text_atomic
from hw5.statsdoc import section, write_stats

TRUNCATION_LENGTHS = (64, 96, 128, 256, 512)


def describe_lengths(lengths: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = [{"text": name, "mean": v.mean(), "median": np.median(v), "p95": np.percentile(v, 95),
             "p99": np.percentile(v, 99), "max": int(v.max())} for name, v in lengths.items()]
    return pd.DataFrame(rows)


def nli_stats(cfg: TrainConfig, data_dir: Path, out_dir: Path) -> list[Path]:
    """FarsTail: rows and classes per split, token lengths, truncation shares, normalization counts;
    `cfg` (the NLI baseline's) gives the tokenizer and max_length."""
    from hw5.tasks.nli import load_tokenizer, model_path
    ensure_farstail(data_dir)
    raw = {s: read_split(data_dir, s, normalize=False) for s in SPLITS}
    check_release(data_dir, raw)
    splits = {s: read_split(data_dir, s, normalize=True) for s in SPLITS}
    lengths = _token_lengths(load_tokenizer(model_path(cfg, splits), cfg), splits["train"])
    texts = [t for p in sum(raw.values(), []) for t in (p.premise, p.hypothesis)]
    tables = nli_tables(splits, lengths, texts)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        write_text_atomic(out_dir / f"{name}.csv", frame.to_csv(index=False))
    _plot_lengths(lengths, cfg.max_length, out_dir / "nli_lengths.png")
    write_stats(out_dir, "nli", "FarsTail statistics",
                [f"{sum(len(p) for p in splits.values()):,} premise-hypothesis pairs in {len(splits)} splits; "
                 f"lengths counted with the {Path(cfg.model_name).name} tokenizer."],
                [section("Rows and class distribution per split", table=tables["nli_classes"]),
                 section("Train lengths in tokens", table=tables["nli_lengths"], figure="nli_lengths.png",
                         caption="FarsTail train: token lengths"),
                 section("Train pairs a max_length truncates", table=tables["nli_truncation"],
                         text=f"The study truncates pairs at max_length {cfg.max_length}."),
                 section("Persian normalization", table=tables["nli_normalization"],
                         text=f"Texts each rule changes, of {len(texts):,} premises and hypotheses.")],
                facts={"pairs": {s: len(p) for s, p in splits.items()}, "max_length": cfg.max_length,
                       "share_truncated": float((lengths["pair"] > cfg.max_length).mean())})
    return sorted(out_dir.glob("nli_*"))


def nli_tables(splits: dict, lengths: dict[str, np.ndarray], texts: list[str]) -> dict[str, pd.DataFrame]:
    """The four FarsTail tables, keyed by their CSV names."""
    counts = pd.DataFrame([{"split": s, "rows": len(p), **{c: sum(x.label == i for x in p)
                                                          for i, c in enumerate(CLASSES)}}
                           for s, p in splits.items()])
    pair = lengths["pair"]
    trunc = pd.DataFrame([{"max_length": m, "pairs_truncated": int((pair > m).sum()),
                           "share_truncated": float((pair > m).mean())} for m in TRUNCATION_LENGTHS])
    norm = pd.DataFrame([{"rule": k, "texts_changed": v, "share": v / len(texts)}
                         for k, v in normalization_report(texts).items()])
    return {"nli_classes": counts, "nli_lengths": describe_lengths(lengths), "nli_truncation": trunc,
            "nli_normalization": norm}


def _token_lengths(tokenizer, pairs) -> dict[str, np.ndarray]:
    premise = tokenizer([p.premise for p in pairs], add_special_tokens=False)["input_ids"]
    hypothesis = tokenizer([p.hypothesis for p in pairs], add_special_tokens=False)["input_ids"]
    both = tokenizer([p.premise for p in pairs], [p.hypothesis for p in pairs])["input_ids"]
    return {name: np.array([len(x) for x in ids]) for name, ids in
            (("premise", premise), ("hypothesis", hypothesis), ("pair", both))}


def _plot_lengths(lengths: dict[str, np.ndarray], max_length: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, v in lengths.items():
        ax.hist(v, bins=60, alpha=0.5, label=name)
    ax.axvline(max_length, color="k", linestyle="--", label=f"max_length {max_length}")
    ax.set(xlabel="length (tokens)", ylabel="examples", title="FarsTail train: token lengths")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
