"""The project's attention function, registered with transformers' AttentionInterface as "hw5".

It is PyTorch's scaled_dot_product_attention (transformers' own "sdpa") everywhere except one case:
training on a CPU with attention dropout. There SDPA falls back to its math kernel, whose dropout draws a
Bernoulli sample per attention weight and whose safe-softmax makes three extra passes over the weights;
for the narrow heads of the tiny models that is most of a training step. Our path computes the same
attention with a dropout mask cut from 16-bit random integers (four per 64-bit draw), so the drop rate is
`dropout` rounded to a multiple of 1/65536 and the kept weights are rescaled by exactly 1/(1 - that rate).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NAME = "hw5"
_LEVELS = 1 << 16                     # distinct values of one 16-bit draw


def dropped_levels(p: float) -> int:
    """How many of a 16-bit draw's 65536 values drop a weight: the drop rate is this / 65536."""
    return round(p * _LEVELS)


def drop_threshold(p: float) -> int:
    """Signed 16-bit draws below this are dropped: dropped_levels(p) of the 65536 values."""
    return -(_LEVELS // 2) + dropped_levels(p)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool mask, True with probability 1 - dropped_levels(p) / 65536, from the default generator."""
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    return words.view(torch.int16)[:count].view(shape) >= drop_threshold(p)


def additive_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """transformers' bool mask (True attends) as 0 / -inf; an additive mask is returned as it is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def cpu_dropout_attention(query, key, value, mask, p: float, scaling: float) -> torch.Tensor:
    """softmax(q kᵀ · scaling + mask) with dropout, times v: (batch, heads, q, dim). The scaling goes on
    q and the rescaling on the output, the two tensors far smaller than the weights; the mask is added
    (its backward is free) at its own size (batch, 1, q, k) rather than filled into every head."""
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))
    bias = additive_bias(mask, scores.dtype)
    if bias is not None:
        scores = scores + bias
    weights = torch.where(keep_mask(scores.shape, p, scores.device), scores.softmax(-1), 0.0)
    kept = 1.0 - dropped_levels(p) / _LEVELS
    return torch.matmul(weights, value).mul_(1.0 / kept)


def hw5_attention(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0,
                  scaling: float | None = None, **kwargs):
    """transformers' attention-function signature; returns (output as (batch, q, heads, dim), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    causal = kwargs.get("is_causal", getattr(module, "is_causal", False))
    if dropout == 0.0 or query.device.type != "cpu" or causal:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    out = cpu_dropout_attention(query, key, value, attention_mask, dropout, scale)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make "hw5" a valid attn_implementation, with sdpa's mask format (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(NAME, hw5_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_project_attention(model: nn.Module) -> nn.Module:
    """Switch a loaded BERT / HuBERT to the "hw5" attention function (outputs unchanged without dropout)."""
    register()
    model.set_attn_implementation(NAME)
    return model
