"""SER model pieces on a tiny HuBERT: masks, pooling, frozen CNN, the path learns."""
from __future__ import annotations

import pytest
import torch

from hw5.config import SERConfig
from hw5.models.ser import AttentiveStatsPooling, SERClassifier, build_ser_model, masked_mean
from hw5.models.tiny import tiny_hubert


def tiny_model(tmp_path, pooling="mean") -> SERClassifier:
    cfg = SERConfig(model_name="tiny", pooling=pooling, mask_time_prob=0.0)
    torch.manual_seed(0)
    model, _ = build_ser_model(str(tiny_hubert(tmp_path)), cfg, 6)
    return model.eval()


def test_frame_mask_matches_cnn_output_lengths(tmp_path):
    model = tiny_model(tmp_path)
    lengths = torch.tensor([16000, 12345, 401, 8000])
    mask = (torch.arange(16000)[None, :] < lengths[:, None]).long()
    frames = model.cnn_features(torch.randn(4, 16000)).shape[1]
    frame_mask = model.frame_mask(frames, mask)
    expected = model.encoder._get_feat_extract_output_lengths(lengths)
    assert frame_mask.sum(1).tolist() == expected.tolist() == [49, 38, 1, 24]   # 320x downsampling


def test_masked_mean_ignores_padded_frames():
    frames = torch.randn(1, 5, 3)
    padded = torch.cat([frames, 1e6 * torch.ones(1, 4, 3)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 4])
    torch.testing.assert_close(masked_mean(padded, mask), frames.mean(1))


def test_attentive_stats_ignores_padded_frames():
    pool = AttentiveStatsPooling(3, attention_dim=4)
    frames = torch.randn(1, 5, 3)
    padded = torch.cat([frames, 50 * torch.randn(1, 4, 3)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 4])
    torch.testing.assert_close(pool(padded, mask), pool(frames, torch.ones(1, 5, dtype=torch.long)))
    assert pool.out_features == 6


def test_clip_alone_equals_clip_padded_in_a_batch_after_the_cnn(tmp_path):
    """The transformer part + pooling: features of a clip (computed alone, unpadded) give the same
    embedding whether the clip is alone or zero-padded next to a longer clip."""
    for pooling in ("mean", "attnstats"):
        model = tiny_model(tmp_path, pooling)
        short, long = torch.randn(1, 8000), torch.randn(1, 16000)
        with torch.no_grad():
            f_short, f_long = model.cnn_features(short), model.cnn_features(long)
            alone = model.embed_features(f_short, torch.ones(1, f_short.shape[1], dtype=torch.long))
            batch = torch.zeros(2, f_long.shape[1], f_long.shape[2])
            batch[0, :f_short.shape[1]], batch[1] = f_short[0], f_long[0]
            mask = torch.zeros(2, f_long.shape[1], dtype=torch.long)
            mask[0, :f_short.shape[1]], mask[1] = 1, 1
            in_batch = model.embed_features(batch, mask)[:1]
        torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=1e-4)


def test_features_path_equals_the_full_forward(tmp_path):
    model = tiny_model(tmp_path)
    x = torch.randn(1, 12000)
    with torch.no_grad():
        full = model.embed(x, torch.ones_like(x, dtype=torch.long))
        f = model.cnn_features(x)
        via = model.embed_features(f, torch.ones(1, f.shape[1], dtype=torch.long))
    torch.testing.assert_close(via, full)


def test_frozen_cnn_is_bit_identical_after_training_and_the_rest_trains(tmp_path):
    model = tiny_model(tmp_path).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    x, mask, y = torch.randn(4, 8000), torch.ones(4, 8000, dtype=torch.long), torch.tensor([0, 1, 2, 3])
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        if name.startswith("encoder.feature_extractor."):
            assert not p.requires_grad and torch.equal(p, before[name]), name
    assert not torch.equal(model.head.weight, before["head.weight"])
    assert not torch.equal(model.encoder.encoder.layers[0].attention.q_proj.weight,
                           before["encoder.encoder.layers.0.attention.q_proj.weight"])


@pytest.mark.parametrize("method", ["matmul", "fft"])
def test_fast_grouped_conv_equals_conv1d_in_value_and_gradients(method):
    """HuBERT's positional conv geometry (even kernel, padding K//2, groups), an odd kernel, and the
    FFT's edges: T + padding = 65, one past a transform size (reads must not wrap onto real samples),
    a kernel longer than T + padding (its cut taps would only meet padding), and more outputs than
    T + padding (padding wider than the kernel)."""
    from hw5.models.posconv import POS_CONV_METHODS
    fast = POS_CONV_METHODS[method]
    torch.manual_seed(0)
    for channels, groups, kernel, padding, steps in ((32, 4, 16, 8, 37), (24, 3, 5, 2, 37), (32, 4, 16, 8, 57),
                                                     (16, 2, 128, 64, 10), (8, 2, 3, 7, 5)):
        conv = torch.nn.utils.parametrizations.weight_norm(
            torch.nn.Conv1d(channels, channels, kernel, padding=padding, groups=groups).double(), dim=2)
        x = torch.randn(3, channels, steps, dtype=torch.double, requires_grad=True)
        expected = conv(x)
        got = fast(x, conv.weight, conv.bias, padding, groups)
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected)
        grads = torch.autograd.grad(expected.square().sum(), [x, *conv.parameters()])
        for want, have in zip(grads, torch.autograd.grad(got.square().sum(), [x, *conv.parameters()])):
            torch.testing.assert_close(have, want)


def test_fft_length_is_the_smallest_fast_size_that_holds_the_padded_input():
    from hw5.models.posconv import fft_length
    assert [fft_length(n) for n in (1, 2, 3, 5, 7, 333, 384, 385, 538)] == [1, 2, 3, 6, 8, 384, 384, 512, 768]


@pytest.mark.parametrize("method", ["matmul", "fft"])
def test_fast_positional_conv_keeps_the_checkpoint_and_the_embedding(tmp_path, method):
    """The surgery keeps the conv's parameters and state-dict keys; each CUDA method gives the same
    utterance embedding as conv1d (the CPU's path) on the same weights."""
    from transformers import AutoModel
    from hw5.models.posconv import POS_CONV_METHODS, fast_positional_conv
    model = tiny_model(tmp_path)
    untouched = AutoModel.from_pretrained(str(tiny_hubert(tmp_path)))
    assert set(model.encoder.state_dict()) == set(untouched.state_dict())
    fast_positional_conv(model.encoder, method)
    conv = model.encoder.encoder.pos_conv_embed.conv
    assert conv.fast_method is POS_CONV_METHODS[method] and conv.groups > 1
    x = torch.randn(2, 12000)
    mask = torch.ones_like(x, dtype=torch.long)
    with torch.no_grad():
        via_conv = model.embed(x, mask)
        conv.forward = lambda h: conv.fast_method(h, conv.weight, conv.bias, conv.padding[0], conv.groups)
        via_fast = model.embed(x, mask)
    torch.testing.assert_close(via_fast, via_conv, atol=1e-5, rtol=1e-4)


def test_an_unknown_positional_conv_method_names_the_choices(tmp_path):
    from hw5.models.posconv import fast_positional_conv
    with pytest.raises(ValueError, match="conv, matmul, fft"):
        fast_positional_conv(tiny_model(tmp_path).encoder, "fast")


@pytest.mark.parametrize("method", ["matmul", "fft"])
def test_fast_grouped_conv_under_autocast_returns_the_autocast_dtype(method):
    """As conv1d does under autocast, so the rest of HuBERT sees the dtypes it would see."""
    from hw5.models.posconv import POS_CONV_METHODS
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(32, 32, 16, padding=8, groups=4)
    x = torch.randn(2, 32, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = conv(x)
        got = POS_CONV_METHODS[method](x, conv.weight, conv.bias, 8, 4)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), conv(x), atol=0.05, rtol=0.02)
