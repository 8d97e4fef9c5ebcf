"""The project's attention function: SDPA's results without dropout, true dropout with it."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, HubertConfig, HubertModel

from hw5.models.attention import cpu_dropout_attention, keep_mask, use_project_attention
from hw5.models.tiny import TINY_BERT, TINY_HUBERT


def qkv_and_padding_mask(batch=3, heads=4, length=17, dim=8):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, dim, generator=g, requires_grad=True) for _ in range(3))
    real = torch.tensor([length, 9, 1])                         # one sequence of a single real token
    keys = torch.arange(length)[None, :] < real[:, None]
    return q, k, v, keys[:, None, None, :].expand(batch, 1, length, length)


def grads(out, *leaves):
    out.backward(torch.ones_like(out))
    found = [x.grad.clone() for x in leaves]
    for x in leaves:
        x.grad = None
    return found


def test_without_dropout_it_is_sdpa_in_values_and_gradients():
    q, k, v, mask = qkv_and_padding_mask()
    ours = cpu_dropout_attention(q, k, v, mask, 0.0, q.shape[-1] ** -0.5)
    ours_grads = grads(ours, q, k, v)
    stock = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(ours_grads, grads(stock, q, k, v)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_dropout_zeroes_weights_at_the_requested_rate_and_rescales_the_rest():
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([400, 1000]), 0.1, torch.device("cpu"))
    assert abs(1 - keep.float().mean().item() - 0.1) < 4 * (0.1 * 0.9 / keep.numel()) ** 0.5
    assert keep_mask(torch.Size([1000]), 0.0, torch.device("cpu")).all()
    q, k, v, mask = qkv_and_padding_mask()
    torch.manual_seed(5)
    ours = cpu_dropout_attention(q, k, v, mask, 0.1, 0.25)
    torch.manual_seed(5)
    kept = keep_mask(torch.Size([3, 4, 17, 17]), 0.1, q.device)     # the same draws, replayed
    weights = (q @ k.transpose(-1, -2) * 0.25).masked_fill(~mask, float("-inf")).softmax(-1)
    expected = (weights * kept / (1 - 6554 / 65536)) @ v
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.25))


@pytest.mark.parametrize("kind", ["bert", "hubert"])
def test_a_switched_model_matches_the_stock_one_in_eval_and_drops_attention_reproducibly_in_training(kind):
    torch.manual_seed(0)
    if kind == "bert":
        stock = BertModel(BertConfig(**TINY_BERT, hidden_dropout_prob=0.0), add_pooling_layer=False)
        inputs = {"input_ids": torch.randint(5, 4000, (3, 30)),
                  "attention_mask": (torch.arange(30)[None] < torch.tensor([[30], [12], [3]])).long()}
    else:
        stock = HubertModel(HubertConfig(**TINY_HUBERT, hidden_dropout=0.0, activation_dropout=0.0,
                                          feat_proj_dropout=0.0))
        inputs = {"input_values": torch.randn(2, 16000),
                  "attention_mask": (torch.arange(16000)[None] < torch.tensor([[16000], [7000]])).long()}
    ours = use_project_attention(copy.deepcopy(stock))
    assert (stock.config._attn_implementation, ours.config._attn_implementation) == ("sdpa", "hw5")
    stock.eval(), ours.eval()
    assert torch.equal(ours(**inputs).last_hidden_state, stock(**inputs).last_hidden_state)
    ours.train()
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(ours(**inputs).last_hidden_state)
    assert torch.equal(*runs) and torch.isfinite(runs[0]).all()
    ours.eval()
    # only attention dropout is left on, so this difference is ours acting
    assert not torch.equal(runs[0], ours(**inputs).last_hidden_state)
