"""Model surgery as small named functions: freeze_layers, keep_first_layers, prune_heads, first_token_only.

transformers 5 removed `PreTrainedModel.prune_heads` and the `head_mask` argument, so head pruning is ours:
a head's slice of query/key/value (output rows) and of the output projection (input columns) is cut
out, and the attention module's head count and width are updated. The result computes exactly what
the unpruned model computes with those heads' contributions zeroed (tested).
"""
from __future__ import annotations

import random
from types import MethodType

import torch
from torch import nn


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT or HuBERT encoder."""
    enc = model.encoder
    return enc.layer if hasattr(enc, "layer") else enc.layers


def freeze_layers(model: nn.Module, first_k: int, embeddings: bool = True) -> None:
    """Stop gradients for encoder layers 1..first_k (and the embeddings when `embeddings`)."""
    if embeddings:
        for p in model.embeddings.parameters():
            p.requires_grad_(False)
    for layer in list(encoder_layers(model))[:first_k]:
        for p in layer.parameters():
            p.requires_grad_(False)


def keep_first_layers(model: nn.Module, k: int) -> None:
    """Drop every encoder layer after the k-th (same output as hidden_states[k] of the full model)."""
    layers = encoder_layers(model)
    if not 0 < k <= len(layers):
        raise ValueError(f"keep_first_layers: k={k} outside 1..{len(layers)}")
    del layers[k:]
    model.config.num_hidden_layers = k


def random_heads(num_layers: int, num_heads: int, fraction: float, seed: int) -> dict[int, list[int]]:
    """Per layer, round(fraction * num_heads) distinct heads chosen by `seed` (reproducible)."""
    rng = random.Random(seed)
    count = round(fraction * num_heads)
    return {layer: sorted(rng.sample(range(num_heads), count)) for layer in range(num_layers)}


def _attention_parts(layer: nn.Module) -> tuple[nn.Module, nn.Module, dict[str, str]]:
    """(attention module, module holding the output projection, attribute names) for BERT / HuBERT."""
    if hasattr(layer.attention, "self"):                                      # BERT
        names = {"q": "query", "k": "key", "v": "value", "out": "dense",
                 "heads": "num_attention_heads", "width": "all_head_size"}
        return layer.attention.self, layer.attention.output, names
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj",   # HuBERT / wav2vec2
             "heads": "num_heads", "width": "embed_dim"}
    return layer.attention, layer.attention, names


def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping only `keep` along dim 0 (outputs) or dim 1 (inputs)."""
    weight = linear.weight.detach().index_select(dim, keep)
    bias = None if linear.bias is None else linear.bias.detach()
    if bias is not None and dim == 0:
        bias = bias.index_select(0, keep)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.requires_grad_(linear.weight.requires_grad)
    return new


def prune_layer_heads(layer: nn.Module, heads: list[int]) -> None:
    """Physically remove `heads` from one attention layer."""
    att, out_owner, n = _attention_parts(layer)
    num_heads = getattr(att, n["heads"])
    head_dim = getattr(att, n["q"]).out_features // num_heads
    remove = set(heads)
    if not remove:
        return
    if len(remove) >= num_heads or not remove <= set(range(num_heads)):
        raise ValueError(f"cannot remove heads {sorted(remove)} of {num_heads}")
    keep = torch.tensor([h * head_dim + i for h in range(num_heads) if h not in remove
                         for i in range(head_dim)], device=getattr(att, n["q"]).weight.device)
    for key in ("q", "k", "v"):
        setattr(att, n[key], _slice_linear(getattr(att, n[key]), keep, dim=0))
    setattr(out_owner, n["out"], _slice_linear(getattr(out_owner, n["out"]), keep, dim=1))
    setattr(att, n["heads"], num_heads - len(remove))
    setattr(att, n["width"], (num_heads - len(remove)) * head_dim)


def prune_heads(model: nn.Module, heads_by_layer: dict[int, list[int]]) -> None:
    """Remove the given heads ({layer index: [head indices]}) from an encoder, in place."""
    layers = encoder_layers(model)
    for index, heads in heads_by_layer.items():
        prune_layer_heads(layers[int(index)], list(heads))


def first_token_forward(layer: nn.Module, hidden_states: torch.Tensor, attention_mask=None, *args, **kwargs):
    """BertLayer.forward for position 0 alone: its query attends to every token's key and value, and only
    its row goes through the output projection and the feed-forward block. Returns (batch, 1, hidden)."""
    from transformers.models.bert.modeling_bert import ALL_ATTENTION_FUNCTIONS, eager_attention_forward
    att = layer.attention.self
    first = hidden_states[:, :1]
    heads = (hidden_states.shape[0], -1, att.num_attention_heads, att.attention_head_size)
    query, key, value = (proj(x).view(*heads).transpose(1, 2) for proj, x in
                         ((att.query, first), (att.key, hidden_states), (att.value, hidden_states)))
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :1]        # (batch, 1, queries, keys): the first query's row
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(att.config._attn_implementation, eager_attention_forward)
    context, _ = attend(att, query, key, value, attention_mask, scaling=att.scaling,
                        dropout=att.dropout.p if att.training else 0.0)
    attended = layer.attention.output(context.reshape(first.shape[0], 1, -1), first)
    return layer.feed_forward_chunk(attended)


def first_token_only(model: nn.Module, on: bool = True) -> None:
    """Make a BERT encoder's last layer compute position 0 ([CLS]) only, the one output a [CLS] head reads:
    the same [CLS] vector and gradients, with only that layer's keys and values computed for every token;
    last_hidden_state then has length 1. The parameters and their names are unchanged; `on=False`
    restores the stock forward."""
    last = encoder_layers(model)[-1]
    if not hasattr(last.attention, "self"):
        raise ValueError("first_token_only: needs a BERT-style encoder (layer.attention.self)")
    if on:
        last.forward = MethodType(first_token_forward, last)
    else:
        last.__dict__.pop("forward", None)


def count_parameters(model: nn.Module) -> dict[str, int]:
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
