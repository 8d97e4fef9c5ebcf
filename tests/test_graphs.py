"""`cuda_graphs`: what can be checked without a GPU — the step body against the eager loop, the
warm-up's snapshot/restore, tensor learning rates the scheduler fills in place, few batch shapes
(width_step), LayerDrop off, and the config errors. The capture itself runs only on CUDA
(`hw5 bench --ablations`, project+graphs) and in the CUDA-only tests at the end of this file."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hw5.tasks import ser
from hw5.config import ConfigError, resolve_config
from hw5.data.batching import round_width
from hw5.graphs import StepGraphs, graph_safe_optimizer
from hw5.run import run_experiment
from hw5.train import make_scheduler

from conftest import fast_grid


def _run(tmp_path, name, graphs: bool, **overrides):
    task = name.split("-")[0]
    (tmp_path / str(graphs)).mkdir()
    grid = fast_grid(tmp_path / str(graphs), **{task: {"width_step": 16 if task == "nli" else 0.5,
                                                       "cuda_graphs": graphs, **overrides}})
    return run_experiment(name, 0, smoke=True, results_dir=tmp_path / str(graphs) / "results", config_path=grid,
                          checkpoint_dir=tmp_path / f"ckpt-{graphs}")


@pytest.mark.slow
def test_the_graph_step_body_trains_exactly_like_the_eager_loop(tmp_path, data_dir, monkeypatch):
    """On CPU StepGraphs runs its (capturable) body eagerly: same losses, accuracy, metrics as the loop,
    so its bookkeeping (device sums, zeroing, clipping, class weights) is the loop's."""
    monkeypatch.setenv("HW5_DATA_DIR", str(data_dir))
    eager, graphed = (_run(tmp_path, "nli-full", g, epochs=2) for g in (False, True))
    keys = ("train_loss", "train_acc", "val_loss", "val_macro_f1", "lr")
    for a, b in zip(eager["history"], graphed["history"], strict=True):
        assert {k: b[k] for k in keys} == {k: a[k] for k in keys}
    assert graphed["test"]["confusion_matrix"] == eager["test"]["confusion_matrix"]
    assert eager["throughput"]["cuda_graphs"] is None
    steps = 2 * 96 // 16                   # 2 epochs of fast_grid's 96 training pairs, 16 per step
    assert graphed["throughput"]["cuda_graphs"] == {"graphs": 0, "replays": 0, "eager_steps": steps,
                                                    "failure": None}          # CPU: nothing captured
    assert eager["history"][0]["train_loss"] != eager["history"][1]["train_loss"]


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _weights_and_state(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            [t.clone() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)])


def test_the_capture_warm_up_changes_no_weight_and_no_optimizer_state():
    """The warm-up before a capture runs a real step; restoring the snapshot undoes it, including AdamW
    state created by it (reset to zeros = a fresh AdamW), so training continues as if it never ran."""
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 1, 0])
    model, opt = _toy()
    graphs = StepGraphs(model, opt, torch.device("cpu"), "fp32", max_grad_norm=1.0)
    before, _ = _weights_and_state(model, opt)
    saved = graphs._snapshot()                       # no AdamW state yet
    graphs._body({"input": x}, y)
    graphs._restore(saved)
    after, state = _weights_and_state(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert state and all(not t.any() for t in state)          # moments and step counts back to zero
    assert float(graphs.loss_sum) == 0.0 and int(graphs.correct) == 0
    graphs.step({"input": x}, y)                              # from the restored state ...
    fresh, fresh_opt = _toy()
    StepGraphs(fresh, fresh_opt, torch.device("cpu"), "fp32", max_grad_norm=1.0).step({"input": x}, y)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))   # ... = fresh
    mid, mid_state = _weights_and_state(model, opt)
    saved = graphs._snapshot()                       # with AdamW state: restored to its values
    graphs._body({"input": x}, y)
    graphs._restore(saved)
    end, end_state = _weights_and_state(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(mid + mid_state, end + end_state))


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_learning_rates_become_tensors_that_the_scheduler_fills_in_place():
    """A replayed graph reads the rate through the tensor's address: the schedule must update it in
    place (never rebind it), for every parameter group."""
    model, _ = _toy()
    opt = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                             {"params": model[2].parameters(), "lr": 1e-2}])
    cfg = resolve_config("nli-full")
    scheduler = make_scheduler(opt, cfg, total_steps=10)       # built first, as fit() does
    graph_safe_optimizer(opt, torch.device("cpu"))
    tensors = [g["lr"] for g in opt.param_groups]
    seen = []
    for _ in range(4):
        seen.append([float(t) for t in tensors])
        scheduler.step()
    assert all(g["lr"] is t for g, t in zip(opt.param_groups, tensors))
    assert all(g["capturable"] for g in opt.param_groups)
    # 10 steps, 10% warm-up (1 step), then linear decay: factors 1, 1, 8/9, 7/9
    for factor, rates in zip((1, 1, 8 / 9, 7 / 9), seen):
        assert rates == pytest.approx([1e-3 * factor, 1e-2 * factor])


def test_width_step_rounds_batches_to_a_few_shapes(tmp_path):
    assert [round_width(w, 16, 128) for w in (1, 16, 17, 120, 128)] == [16, 16, 32, 128, 128]
    assert round_width(37, 0) == 37
    grid = fast_grid(tmp_path, ser={"synthetic_clips": 60, "width_step": 0.5})
    model, data, _ = ser.build(resolve_config("ser-mean", smoke=True, path=grid), 0, tmp_path)
    widths, shapes = set(), set()
    for batch in data.train_batches(0):
        b = data.collate(batch, "train")
        widths.add(round(b.padded_units / len(batch) * data.sr))
        shapes.add(tuple(b.inputs["features"].shape))
    assert all(w % 8000 == 0 for w in widths)                      # multiples of 0.5 s
    assert len(shapes) <= 2 * len(widths)                          # full batches + the last one


def test_graphed_ser_turns_layerdrop_off_and_records_it(tmp_path):
    grid = fast_grid(tmp_path, ser={"synthetic_clips": 60, "width_step": 0.5, "cuda_graphs": True,
                                    "feature_cache": True})
    cfg = resolve_config("ser-mean", smoke=True, path=grid)
    model, _, variant = ser.build(cfg, 0, tmp_path)
    assert model.encoder.config.layerdrop == 0.0 and variant["layerdrop"] == 0.0


@pytest.mark.parametrize("overrides, says", [
    ({"cuda_graphs": True, "width_step": 0}, "width_step > 0"),
    ({"cuda_graphs": True, "width_step": 16, "batch_budget": 2048.0}, "batch_budget: 0"),
    ({"cuda_graphs": True, "width_step": 16, "batching": "fixed"}, "one shape already"),
    ({"width_step": -1}, "width_step is -1.0; it must be >= 0"),
])
def test_graph_settings_that_cannot_work_are_config_errors(tmp_path, overrides, says):
    grid = fast_grid(tmp_path, nli=overrides)
    with pytest.raises(ConfigError, match=says):
        resolve_config("nli-full", smoke=True, path=grid)


def test_graphed_ser_needs_the_feature_cache(tmp_path):
    grid = fast_grid(tmp_path, ser={"cuda_graphs": True, "width_step": 1.0, "feature_cache": False})
    with pytest.raises(ConfigError, match="feature_cache: true"):
        resolve_config("ser-mean", smoke=True, path=grid)


def _bert_batches(widths: tuple[int, ...], batch: int = 8, vocab: int = 500):
    g = torch.Generator().manual_seed(1)
    for width in widths:
        ids = torch.randint(5, vocab, (batch, width), generator=g)
        lengths = torch.randint(width // 2, width + 1, (batch,), generator=g)
        mask = (torch.arange(width)[None] < lengths[:, None]).long()
        yield ({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)},
               torch.randint(0, 3, (batch,), generator=g))


def _steps_end(model: nn.Module, batches, device: torch.device, capture: bool):
    """Trains `model` one step per (inputs, labels) through StepGraphs, captured or eager (the same
    graph-safe optimizer either way); returns (stats, weights, loss sum, correct)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                            fused=device.type == "cuda")
    graphs = StepGraphs(model, opt, device, "auto", max_grad_norm=1.0)
    graphs.capture = capture
    for inputs, labels in batches:
        graphs.step({k: v.to(device) for k, v in inputs.items()}, labels.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (graphs.stats(), [p.detach().float().cpu() for p in model.parameters()], graphs.loss_sum.item(),
            graphs.correct.item())


def _assert_graphs_replayed_like_eager_steps(eager_end, graphed_end, steps: int, shapes: int) -> None:
    (eager_stats, eager_w, eager_loss, eager_correct), (stats, weights, loss, correct) = eager_end, graphed_end
    assert eager_stats["eager_steps"] == steps and eager_stats["graphs"] == 0
    assert stats == {"graphs": shapes, "replays": steps, "eager_steps": 0, "failure": None}
    # a lost, repeated or stale step moves weights by ~lr = 1e-3
    assert max((a - b).abs().max().item() for a, b in zip(eager_w, weights)) < 1e-4
    assert loss == pytest.approx(eager_loss, rel=1e-3) and correct == eager_correct


def _bert_steps_end(device: torch.device, capture: bool, widths=(16, 32, 16, 48, 32, 16, 48, 48)):
    from transformers import BertConfig, BertModel
    from hw5.models.nli import NLIClassifier
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = NLIClassifier(BertModel(cfg, add_pooling_layer=False), 3, 0.0).to(device).train()
    return _steps_end(model, _bert_batches(widths), device, capture)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs: needs a GPU")
def test_on_cuda_replayed_graphs_train_like_eager_steps():
    """One graph per batch shape, replayed as shapes alternate, ends where the same steps run eagerly
    end: weights, running loss and accuracy (bf16 autocast, fused capturable AdamW, clipping; dropout
    off, so neither path draws random numbers)."""
    device = torch.device("cuda")
    _assert_graphs_replayed_like_eager_steps(_bert_steps_end(device, False), _bert_steps_end(device, True),
                                             steps=8, shapes=3)


def _ser_batches(frames: tuple[int, ...], conv_dim: int, batch: int = 8):
    g = torch.Generator().manual_seed(1)
    for width in frames:
        lengths = torch.randint(width // 2, width + 1, (batch,), generator=g)
        yield ({"features": torch.randn(batch, width, conv_dim, generator=g),
                "frame_mask": (torch.arange(width)[None] < lengths[:, None]).long()},
               torch.randint(0, 6, (batch,), generator=g))


def _ser_steps_end(device: torch.device, capture: bool, method: str, frames=(20, 40, 20, 60, 40, 60)):
    """A tiny HuBERT + mean pooling on CNN features, with the positional conv by `method`."""
    from transformers import HubertConfig, HubertModel
    from hw5.models.ser import SERClassifier, fast_positional_conv, freeze_feature_encoder
    from hw5.models.tiny import TINY_HUBERT
    torch.manual_seed(0)
    cfg = HubertConfig(**{**TINY_HUBERT, "hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
                          "feat_proj_dropout": 0.0, "layerdrop": 0.0, "mask_time_prob": 0.0})
    encoder = HubertModel(cfg)
    freeze_feature_encoder(encoder)
    fast_positional_conv(encoder, method)
    model = SERClassifier(encoder, "mean", 6, 0.0).to(device).train()
    return _steps_end(model, _ser_batches(frames, cfg.conv_dim[-1]), device, capture)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs: needs a GPU")
@pytest.mark.parametrize("method", ["matmul", "fft"])
def test_on_cuda_graphed_ser_steps_with_each_positional_conv_train_like_eager_steps(method):
    """SER's step on cached features, with the positional conv as a bmm or through cuFFT (plans made
    by the warm-up, executed inside the graph), replayed as three shapes alternate, ends where eager
    steps end (dropout and SpecAugment off: neither path draws random numbers)."""
    device = torch.device("cuda")
    _assert_graphs_replayed_like_eager_steps(_ser_steps_end(device, False, method),
                                             _ser_steps_end(device, True, method), steps=6, shapes=3)
