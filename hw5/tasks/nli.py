"""The NLI task: FarsTail pairs tokenized once, batched with little padding, fed to NLIClassifier."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from hw5.config import LOCAL_MODELS, NLIConfig
from hw5.data import batching
from hw5.data.farstail import CLASSES, NLIPair, load_farstail
from hw5.io import cache_dir
from hw5.metrics import subset_accuracy
from hw5.models.nli import build_nli_model, load_tokenizer
from hw5.models.tiny import tiny_bert
from hw5.reuse import reused
from hw5.train import Batch


def stratified_subset(pairs: list[NLIPair], n: int) -> list[NLIPair]:
    """n pairs with the class mix kept; the same for every seed (fixed random_state)."""
    if not n or n >= len(pairs):
        return pairs
    keep, _ = train_test_split(np.arange(len(pairs)), train_size=n, random_state=0,
                               stratify=[p.label for p in pairs])
    return [pairs[i] for i in sorted(keep)]


def model_path(cfg: NLIConfig, splits: dict[str, list[NLIPair]]) -> str:
    """The hub id / directory to load; "tiny" / "random-base" build a tiny / BERT-base sized random BERT
    whose vocab is trained on FarsTail."""
    if cfg.model_name not in LOCAL_MODELS:
        return cfg.model_name
    texts = [t for p in splits["train"] for t in (p.premise, p.hypothesis)]
    return str(tiny_bert(cache_dir() / "models", lambda: texts, cfg.model_name))


def tokenize(tokenizer, pairs: list[NLIPair], max_length: int) -> dict:
    """input_ids / token_type_ids of each pair, truncated to max_length (once per packed job: hw5.reuse)."""
    premises, hypotheses = [p.premise for p in pairs], [p.hypothesis for p in pairs]
    key = (tokenizer.name_or_path, len(tokenizer), max_length, tuple(premises), tuple(hypotheses))
    return reused("tokenized", key, lambda: dict(tokenizer(premises, hypotheses, truncation=True,
                                                           max_length=max_length)))


class NLIData:
    """Tokenized splits; implements the TaskData protocol of hw5.train."""
    classes = CLASSES
    unit = "tokens"

    def __init__(self, splits: dict[str, list[NLIPair]], tokenizer, cfg: NLIConfig, seed: int):
        self.cfg, self.seed, self.pad_id = cfg, seed, tokenizer.pad_token_id
        self.pairs = splits
        self.encoded = {name: tokenize(tokenizer, pairs, cfg.max_length) for name, pairs in splits.items()}
        self.lengths = {name: [len(ids) for ids in enc["input_ids"]] for name, enc in self.encoded.items()}
        self.labels = {name: torch.tensor([p.label for p in pairs]) for name, pairs in splits.items()}

    def prepare(self) -> None:
        """Nothing left to do: the pairs were tokenized when the data was built."""

    def train_batches(self, epoch: int) -> list[list[int]]:
        return batching.train_batches(self.lengths["train"], self.cfg.batch_size, self.cfg.batching,
                                      self.seed, epoch, budget=int(self.cfg.batch_budget))

    def eval_batches(self, split: str) -> list[list[int]]:
        return batching.eval_batches(self.lengths[split], self.cfg.eval_batch_size, self.cfg.batching)

    def collate(self, indices: list[int], split: str) -> Batch:
        enc = self.encoded[split]
        lengths = [self.lengths[split][i] for i in indices]
        width = (self.cfg.max_length if self.cfg.batching == "fixed" else
                 batching.round_width(max(lengths), int(self.cfg.width_step), self.cfg.max_length))
        ids = batching.pad_2d([enc["input_ids"][i] for i in indices], width, self.pad_id)
        types = batching.pad_2d([enc["token_type_ids"][i] for i in indices], width, 0)
        mask = batching.pad_2d([[1] * n for n in lengths], width, 0)
        return Batch({"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
                     self.labels[split][indices], float(sum(lengths)), float(width * len(indices)))


def build(cfg: NLIConfig, seed: int, data_dir: Path):
    """(model, data, variant record) for one NLI run."""
    splits = load_farstail(data_dir, normalize=cfg.normalize_text)
    path = model_path(cfg, splits)
    splits = {"train": stratified_subset(splits["train"], cfg.train_subset),
              "val": stratified_subset(splits["val"], cfg.eval_subset),
              "test": stratified_subset(splits["test"], cfg.eval_subset)}
    data = NLIData(splits, load_tokenizer(path, cfg), cfg, seed)
    model, variant = build_nli_model(path, cfg, len(CLASSES), seed)
    variant["model_path"] = path
    return model, data, variant


def loss_weights(data: NLIData, cfg: NLIConfig) -> None:
    """Plain cross-entropy: FarsTail's three classes are balanced."""
    return None


def write_artifacts(data: NLIData, out_dir: Path) -> None:
    """Nothing beyond the common outputs: FarsTail's splits are the release's files."""


def extra_metrics(data: NLIData, test: dict) -> dict:
    """Test accuracy on FarsTail's hard(hypothesis) and hard(overlap) subsets."""
    y_true = data.labels["test"].numpy()
    y_pred = np.asarray(test["predictions"])
    pairs = data.pairs["test"]
    return {"test_subsets": {
        "hard_hypothesis": subset_accuracy(y_true, y_pred, [p.hard_hypothesis for p in pairs]),
        "hard_overlap": subset_accuracy(y_true, y_pred, [p.hard_overlap for p in pairs])}}
