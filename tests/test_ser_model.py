"""SER model pieces on a tiny HuBERT: masks, pooling, frozen CNN, the path learns."""
from __future__ import annotations

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


def test_grouped_conv_as_matmul_equals_conv1d_in_value_and_gradients():
    """HuBERT's positional conv geometry (even kernel, padding K//2, groups) and an odd kernel."""
    from hw5.models.ser import grouped_conv1d_as_matmul
    torch.manual_seed(0)
    for channels, groups, kernel in ((32, 4, 16), (24, 3, 5)):
        conv = torch.nn.utils.parametrizations.weight_norm(
            torch.nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=groups).double(), dim=2)
        x = torch.randn(3, channels, 37, dtype=torch.double, requires_grad=True)
        expected = conv(x)
        got = grouped_conv1d_as_matmul(x, conv.weight, conv.bias, kernel // 2, groups)
        torch.testing.assert_close(got, expected)
        grads = torch.autograd.grad(expected.square().sum(), [x, *conv.parameters()])
        for want, have in zip(grads, torch.autograd.grad(got.square().sum(), [x, *conv.parameters()])):
            torch.testing.assert_close(have, want)


def test_matmul_positional_conv_keeps_the_checkpoint_and_the_embedding(tmp_path):
    """The surgery keeps the conv's parameters and state-dict keys; the matmul path (CUDA's) gives
    the same utterance embedding as cuDNN's conv path (CPU's) on the same weights."""
    from transformers import AutoModel
    from hw5.models.ser import grouped_conv1d_as_matmul
    model = tiny_model(tmp_path)
    untouched = AutoModel.from_pretrained(str(tiny_hubert(tmp_path)))
    assert set(model.encoder.state_dict()) == set(untouched.state_dict())
    conv = model.encoder.encoder.pos_conv_embed.conv
    assert conv.as_matmul and conv.groups > 1
    x = torch.randn(2, 12000)
    mask = torch.ones_like(x, dtype=torch.long)
    with torch.no_grad():
        via_conv = model.embed(x, mask)
        conv.forward = lambda h: grouped_conv1d_as_matmul(h, conv.weight, conv.bias, conv.padding[0], conv.groups)
        via_matmul = model.embed(x, mask)
    torch.testing.assert_close(via_matmul, via_conv, atol=1e-5, rtol=1e-4)
