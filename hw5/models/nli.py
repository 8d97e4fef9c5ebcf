"""NLI model: a pretrained BERT encoder (AutoModel) + our dropout/linear head on the [CLS] vector."""
from __future__ import annotations

import torch
from torch import nn

from hw5.config import ConfigError, NLIConfig
from hw5.models.attention import use_project_attention
from hw5.models.hub import from_pretrained
from hw5.models.surgery import (encoder_layers, first_token_only, freeze_layers, keep_first_layers, prune_heads,
                                random_heads)


class NLIClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return self.head(self.dropout(hidden[:, 0]))


def load_tokenizer(path: str, cfg: NLIConfig):
    from transformers import AutoTokenizer
    return from_pretrained(AutoTokenizer, path, cfg)


def check_layer_counts(cfg: NLIConfig, layers: int, path: str) -> None:
    """keep_layers / freeze_first_layers must fit the model: one clear error before any training."""
    kept = cfg.keep_layers or layers
    for key, value, limit in (("keep_layers", cfg.keep_layers, layers), ("freeze_first_layers",
                                                                          cfg.freeze_first_layers, kept)):
        if value > limit:
            raise ConfigError(f"{key} is {value}, but the model {path} has {limit} encoder layers"
                              f"{' kept' if key == 'freeze_first_layers' and cfg.keep_layers else ''}: "
                              f"set {key} to 0..{limit} in the experiments file")


def build_nli_model(path: str, cfg: NLIConfig, num_labels: int, seed: int) -> tuple[NLIClassifier, dict]:
    """Encoder from `path` (hub id or directory) with the experiment's variant applied.

    Returns the model and a record of what the variant did (kept in metrics.json). Whatever the
    variant, the last layer computes only the [CLS] position (first_token_only): same logits, less work.
    """
    from transformers import AutoModel
    encoder = use_project_attention(from_pretrained(AutoModel, path, cfg, add_pooling_layer=False))
    check_layer_counts(cfg, len(encoder_layers(encoder)), path)
    variant: dict = {}
    if cfg.keep_layers:
        keep_first_layers(encoder, cfg.keep_layers)
        variant["kept_layers"] = cfg.keep_layers
    if cfg.prune_heads_fraction:
        heads = random_heads(len(encoder_layers(encoder)), encoder.config.num_attention_heads,
                             cfg.prune_heads_fraction, seed)
        prune_heads(encoder, heads)
        variant["removed_heads"] = {str(k): v for k, v in heads.items()}
    if cfg.freeze_first_layers or cfg.freeze_embeddings:
        freeze_layers(encoder, cfg.freeze_first_layers, embeddings=cfg.freeze_embeddings)
        variant["frozen"] = {"embeddings": cfg.freeze_embeddings, "first_layers": cfg.freeze_first_layers}
    first_token_only(encoder)    # the head reads [CLS] alone; the last layer need not compute the rest
    return NLIClassifier(encoder, num_labels, cfg.head_dropout), variant
