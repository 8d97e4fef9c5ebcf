"""Model surgery on tiny random BERT / HuBERT models: freezing, truncation, head pruning."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel, HubertConfig, HubertModel

from hw5.models.attention import use_project_attention
from hw5.models.surgery import (count_parameters, encoder_layers, first_token_only, freeze_layers,
                                keep_first_layers, prune_heads, random_heads)
from hw5.models.tiny import TINY_HUBERT


def tiny_bert_model(layers=12, heads=12, hidden=48) -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=300, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    return BertModel(cfg, add_pooling_layer=False).eval()


def tiny_hubert_model() -> HubertModel:
    torch.manual_seed(0)
    return HubertModel(HubertConfig(**{**TINY_HUBERT, "num_attention_heads": 4})).eval()


def batch(n=3, length=20):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def zero_heads(model, heads_by_layer):
    """The reference: the same model with those heads' contributions to the output projection zeroed."""
    model = copy.deepcopy(model)
    for index, heads in heads_by_layer.items():
        layer = encoder_layers(model)[index]
        if hasattr(layer.attention, "self"):
            out, n_heads = layer.attention.output.dense, layer.attention.self.num_attention_heads
        else:
            out, n_heads = layer.attention.out_proj, layer.attention.num_heads
        dim = out.in_features // n_heads
        with torch.no_grad():
            for h in heads:
                out.weight[:, h * dim:(h + 1) * dim] = 0
    return model


def test_pruned_bert_equals_masked_bert_and_shrinks_parameters():
    model = tiny_bert_model()
    heads = random_heads(12, 12, 0.5, seed=3)
    assert all(len(h) == 6 and len(set(h)) == 6 for h in heads.values())
    reference = zero_heads(model, heads)
    pruned = copy.deepcopy(model)
    prune_heads(pruned, heads)
    x = batch()
    with torch.no_grad():
        want = reference(**x).last_hidden_state
        got = pruned(**x).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model(**x).last_hidden_state, want, atol=1e-3)   # pruning did change it
    head_dim, hidden = 4, 48
    removed_per_head = 3 * (head_dim * hidden + head_dim) + head_dim * hidden
    assert count_parameters(model)["total"] - count_parameters(pruned)["total"] == 12 * 6 * removed_per_head
    att = encoder_layers(pruned)[0].attention.self
    assert att.num_attention_heads == 6 and att.query.out_features == 24


def test_pruned_hubert_equals_masked_hubert():
    model = tiny_hubert_model()
    heads = {0: [1, 3], 1: [0]}
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    reference, pruned = zero_heads(model, heads), copy.deepcopy(model)
    prune_heads(pruned, heads)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x).last_hidden_state, reference(x).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)
    assert encoder_layers(pruned)[0].attention.num_heads == 2


def test_random_heads_depend_on_seed_only():
    assert random_heads(12, 12, 0.5, 7) == random_heads(12, 12, 0.5, 7)
    assert random_heads(12, 12, 0.5, 7) != random_heads(12, 12, 0.5, 8)


def test_prune_rejects_removing_every_head():
    with pytest.raises(ValueError, match="cannot remove"):
        prune_heads(tiny_bert_model(layers=1, heads=2, hidden=8), {0: [0, 1]})


def test_keep_first_layers_equals_hidden_state_k():
    model = tiny_bert_model()
    x = batch()
    with torch.no_grad():
        full = model(**x, output_hidden_states=True).hidden_states[9]
    keep_first_layers(model, 9)
    assert len(encoder_layers(model)) == 9 and model.config.num_hidden_layers == 9
    with torch.no_grad():
        torch.testing.assert_close(model(**x).last_hidden_state, full)


def test_freeze_layers_keeps_frozen_weights_bit_identical_and_trains_the_rest():
    model = tiny_bert_model().train()
    freeze_layers(model, 9, embeddings=True)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        loss = model(**batch()).last_hidden_state.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        frozen = name.startswith("embeddings.") or any(name.startswith(f"encoder.layer.{i}.") for i in range(9))
        assert p.requires_grad is not frozen, name
        if frozen:
            assert torch.equal(p, before[name]), f"{name} changed although frozen"
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(n.startswith("encoder.layer.11.") for n in changed)


def test_lastonly_freezes_layers_but_not_embeddings():
    model = tiny_bert_model()
    freeze_layers(model, 11, embeddings=False)
    assert all(p.requires_grad for p in model.embeddings.parameters())
    assert all(p.requires_grad for p in encoder_layers(model)[11].parameters())
    assert not any(p.requires_grad for p in encoder_layers(model)[10].parameters())


def test_padding_and_mask_do_not_change_cls_output():
    model = tiny_bert_model()
    ids = torch.randint(5, 300, (1, 10), generator=torch.Generator().manual_seed(2))
    alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0]
    padded = torch.cat([ids, torch.zeros(1, 15, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10, dtype=torch.long), torch.zeros(1, 15, dtype=torch.long)], dim=1)
    with torch.no_grad():
        in_batch = model(input_ids=padded, attention_mask=mask).last_hidden_state[:, 0]
        unmasked = model(input_ids=padded, attention_mask=torch.ones_like(padded)).last_hidden_state[:, 0]
    torch.testing.assert_close(in_batch, alone.detach(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked, alone.detach(), atol=1e-3)     # the mask is what makes it so


def cls_and_gradients(model, x):
    """[CLS] of the last layer and every parameter's gradient of a loss on it."""
    model.zero_grad(set_to_none=True)
    cls = model(**x).last_hidden_state[:, 0]
    cls.pow(2).sum().backward()
    return cls.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["hw5", "sdpa", "eager"])
def test_first_token_only_gives_the_same_cls_and_gradients_after_every_other_surgery(attention):
    model = tiny_bert_model()
    use_project_attention(model) if attention == "hw5" else model.set_attn_implementation(attention)
    keep_first_layers(model, 9)
    prune_heads(model, random_heads(9, 12, 0.5, seed=1))
    freeze_layers(model, 3, embeddings=True)
    x = batch()                                   # row 1 is padded: its mask must still apply
    want, want_grads = cls_and_gradients(model, x)
    keys = list(model.state_dict())
    first_token_only(model)
    assert model(**x).last_hidden_state.shape == (3, 1, 48)
    got, got_grads = cls_and_gradients(model, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert list(model.state_dict()) == keys       # checkpoints load either way
    first_token_only(model, on=False)
    assert model(**x).last_hidden_state.shape == (3, 20, 48)


def test_first_token_only_refuses_a_hubert_encoder():
    with pytest.raises(ValueError, match="BERT-style"):
        first_token_only(tiny_hubert_model())
