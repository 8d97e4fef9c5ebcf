"""SER model: HuBERT (AutoModel) frames -> our utterance pooling -> dropout + linear head.

Pooling is where padding could leak in: both poolings use the frame-level mask that HuBERT derives
from the sample mask (`_get_feature_vector_attention_mask`), so padded frames never count.
"""
from __future__ import annotations

import torch
from torch import nn

from hw5.config import SERConfig
from hw5.models.nli import hub_kwargs


def masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real frames only. frames (B, T, H), mask (B, T) of 0/1."""
    weights = mask.to(frames.dtype).unsqueeze(-1)
    return (frames * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class MeanPooling(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.out_features = hidden

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(frames, mask)


class AttentiveStatsPooling(nn.Module):
    """Learned frame weights (Okabe et al. 2018): weighted mean and std, concatenated."""

    def __init__(self, hidden: int, attention_dim: int = 128):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(hidden, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))
        self.out_features = 2 * hidden

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(frames).squeeze(-1).float()
        scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
        alpha = torch.softmax(scores, dim=1).unsqueeze(-1).to(frames.dtype)
        mean = (alpha * frames).sum(1)
        var = (alpha * frames.pow(2)).sum(1) - mean.pow(2)
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)


POOLINGS = {"mean": MeanPooling, "attnstats": AttentiveStatsPooling}


class SERClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, pooling: str, num_labels: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.pool = POOLINGS[pooling](encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.pool.out_features, num_labels)

    def frame_mask(self, num_frames: int, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sample mask (B, samples) -> frame mask (B, frames) through the CNN's length arithmetic."""
        return self.encoder._get_feature_vector_attention_mask(num_frames, attention_mask)

    def embed(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        frames = self.encoder(input_values, attention_mask=attention_mask).last_hidden_state
        return self.pool(frames, self.frame_mask(frames.shape[1], attention_mask))

    def cnn_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """The (frozen) CNN's output (B, frames, conv_dim): computable once per clip, unpadded."""
        return self.encoder.feature_extractor(input_values).transpose(1, 2)

    def embed_features(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """The transformer part of HubertModel.forward on CNN features, then our pooling."""
        enc = self.encoder
        hidden = enc._mask_hidden_states(enc.feature_projection(features))   # SpecAugment in train mode
        frames = enc.encoder(hidden, attention_mask=frame_mask.bool()).last_hidden_state
        return self.pool(frames, frame_mask)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_values, attention_mask)))


def freeze_feature_encoder(encoder: nn.Module) -> None:
    """The CNN never trains (HubertModel has no freeze_feature_encoder() in transformers 5)."""
    cnn = encoder.feature_extractor
    if hasattr(cnn, "_freeze_parameters"):     # also skips building the CNN's autograd graph
        cnn._freeze_parameters()
    for p in cnn.parameters():
        p.requires_grad_(False)


def build_ser_model(path: str, cfg: SERConfig, num_labels: int) -> tuple[SERClassifier, dict]:
    from transformers import AutoModel
    encoder = AutoModel.from_pretrained(path, mask_time_prob=cfg.mask_time_prob, **hub_kwargs(cfg))
    variant = {"pooling": cfg.pooling, "frozen_feature_encoder": cfg.freeze_feature_encoder}
    if cfg.freeze_feature_encoder:
        freeze_feature_encoder(encoder)
    return SERClassifier(encoder, cfg.pooling, num_labels, cfg.head_dropout), variant


def load_feature_extractor(path: str, cfg: SERConfig):
    from transformers import Wav2Vec2FeatureExtractor
    return Wav2Vec2FeatureExtractor.from_pretrained(path, **hub_kwargs(cfg))
