"""SER model: HuBERT (AutoModel) frames -> our utterance pooling -> dropout + linear head.

Pooling is where padding could leak in: both poolings use the frame-level mask that HuBERT derives
from the sample mask (`_get_feature_vector_attention_mask`), so padded frames never count.

With the CNN frozen its output never changes, so `forward` also takes cached CNN features
(`clip_features`, one clip alone) + a frame mask: the CNN then runs once per clip instead of once per
step, and a clip's features no longer depend on the batch it is padded in (hubert-base's group-norm
CNN normalizes over the padded length, so zero padding changes the features of the real frames).

HuBERT's positional convolution runs through hw5/models/posconv.py on CUDA (the same function of
the same weights, faster).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hw5.config import SERConfig
from hw5.models.attention import use_project_attention
from hw5.models.hub import from_pretrained
from hw5.graphs import GRAPH_SAFE_CONFIG
from hw5.models.posconv import fast_positional_conv


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

    @torch.no_grad()
    def clip_features(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip's CNN features (frames, conv_dim), computed alone (no padding), in fp32, on the
        device the CNN is on. Uses no RNG: the CNN has no dropout and no train-mode behaviour."""
        cnn = self.encoder.feature_extractor
        device, was_training = next(cnn.parameters()).device, cnn.training
        cnn.eval()
        try:
            with torch.autocast(device.type, enabled=False):   # evaluate() collates inside autocast
                return self.cnn_features(wave.to(device, torch.float32)[None])[0]
        finally:
            cnn.train(was_training)

    def num_frames(self, samples: int) -> int:
        """Frames the CNN makes of `samples` samples (its kernel/stride arithmetic)."""
        return int(self.encoder._get_feat_extract_output_lengths(torch.tensor(samples)))

    @property
    def hop(self) -> int:
        """Samples per frame step (320 for HuBERT)."""
        return math.prod(self.encoder.config.conv_stride)

    def embed_features(self, features: torch.Tensor, frame_mask: torch.Tensor,
                       time_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The transformer part of HubertModel.forward on CNN features, then our pooling.

        SpecAugment gets the frame mask (as wav2vec2 does; HubertModel passes none), so its spans fall
        on real frames only and their number follows the clip's length, not the batch's. `time_mask`:
        spans already drawn on the host (`draw_time_mask`), applied without host work (a CUDA graph
        cannot draw them); only time masking then (feature-axis masking is off in hubert-base)."""
        enc, mask = self.encoder, frame_mask.bool()
        hidden = enc.feature_projection(features)
        if time_mask is None:
            hidden = enc._mask_hidden_states(hidden, attention_mask=mask)
        elif self.training:
            hidden = torch.where(time_mask.unsqueeze(-1), enc.masked_spec_embed.to(hidden.dtype), hidden)
        frames = enc.encoder(hidden, attention_mask=mask).last_hidden_state
        return self.pool(frames, frame_mask)

    def draw_time_mask(self, lengths: list[int], frames: int) -> torch.Tensor | None:
        """SpecAugment time spans (B, frames) for a training batch of clips `lengths` frames long, drawn
        on the host exactly as HubertModel draws them (transformers' `_compute_mask_indices`, numpy's
        global RNG); None when time masking is off."""
        cfg = self.encoder.config
        if not getattr(cfg, "apply_spec_augment", True) or cfg.mask_time_prob <= 0:
            return None
        from transformers.models.hubert.modeling_hubert import _compute_mask_indices
        real = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
        spans = _compute_mask_indices((len(lengths), frames), mask_prob=cfg.mask_time_prob,
                                      mask_length=cfg.mask_time_length, attention_mask=real,
                                      min_masks=cfg.mask_time_min_masks)
        return torch.from_numpy(spans)

    def forward(self, input_values: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                features: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None,
                time_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from waveforms (+ sample mask) or from cached CNN features (+ frame mask)."""
        if features is not None:
            if frame_mask is None:
                frame_mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
            pooled = self.embed_features(features, frame_mask, time_mask)
        elif input_values is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_values, dtype=torch.long)
            pooled = self.embed(input_values, attention_mask)
        else:
            raise ValueError("SERClassifier needs input_values (waveforms) or features (CNN output)")
        return self.head(self.dropout(pooled))


def freeze_feature_encoder(encoder: nn.Module) -> None:
    """The CNN never trains (HubertModel has no freeze_feature_encoder() in transformers 5)."""
    cnn = encoder.feature_extractor
    if hasattr(cnn, "_freeze_parameters"):     # also skips building the CNN's autograd graph
        cnn._freeze_parameters()
    for p in cnn.parameters():
        p.requires_grad_(False)


def build_ser_model(path: str, cfg: SERConfig, num_labels: int) -> tuple[SERClassifier, dict]:
    from transformers import AutoModel
    overrides = GRAPH_SAFE_CONFIG if cfg.cuda_graphs else {}
    encoder = use_project_attention(from_pretrained(AutoModel, path, cfg, mask_time_prob=cfg.mask_time_prob,
                                                    **overrides))
    variant = {"pooling": cfg.pooling, "frozen_feature_encoder": cfg.freeze_feature_encoder,
               "layerdrop": encoder.config.layerdrop}
    if cfg.freeze_feature_encoder:
        freeze_feature_encoder(encoder)
    fast_positional_conv(encoder)
    return SERClassifier(encoder, cfg.pooling, num_labels, cfg.head_dropout), variant


def load_feature_extractor(path: str, cfg: SERConfig):
    from transformers import Wav2Vec2FeatureExtractor
    return from_pretrained(Wav2Vec2FeatureExtractor, path, cfg)
