"""`hw5 bench --posconv`: HuBERT-base's positional convolution alone, by each method hw5 has for it.

The conv (768 channels, 16 groups, kernel 128, padding 64, weight-normed as in HubertModel) was the
largest cost of a graphed SER step (figures: docs/performance-history.md). Each method of `hw5.models.posconv.POS_CONV_METHODS` runs forward + backward at
the frame counts of SER batches; rows give the median time, the transient peak memory (CUDA) and the
largest deviation from fp32 conv1d relative to the output's largest value (the methods compute the same
function: a wrong one shows here, not only in the tests).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from hw5.bench.timing import reset_peak, sync
from hw5.models.posconv import POS_CONV_METHODS
from hw5.device import autocast

SHAPES = ((16, 205), (16, 410), (8, 750))   # (clips, frames): 16 mean ShEMO clips (4.1 s), 16 of 8.2 s, 8 of 15 s
CUDA_METHODS = (("conv", "auto"), ("conv", "fp32"), ("matmul", "auto"), ("fft", "auto"))  # "auto": bf16
CPU_METHODS = (("conv", "fp32"), ("matmul", "fp32"), ("fft", "fp32"))


def posconv_bench(device: torch.device, shapes=SHAPES, repeat: int = 3, channels: int = 768,
                  groups: int = 16, kernel: int = 128) -> list[dict]:
    torch.manual_seed(0)
    conv = nn.utils.parametrizations.weight_norm(
        nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=groups), dim=2).to(device)
    methods = CUDA_METHODS if device.type == "cuda" else CPU_METHODS
    rows = []
    for batch, frames in shapes:
        x = torch.randn(batch, channels, frames, device=device, requires_grad=True)
        with torch.no_grad():
            reference = conv(x).float()
        for method, precision in methods:
            rows.append(time_method(conv, x, reference, method, precision, device, repeat))
    first = {(r["clips"], r["frames"]): r["ms"] for r in rows[::len(methods)]}   # conv as training runs it
    for row in rows:
        row["vs_conv"] = first[(row["clips"], row["frames"])] / row["ms"]
        print(f"bench posconv {row['clips']:2d} x {row['frames']:3d} frames  {row['method']:6s} "
              f"{row['precision']:4s} {row['ms']:9.2f} ms fwd+bwd  x{row['vs_conv']:5.2f}  "
              f"peak {row['peak_mb'] if row['peak_mb'] is not None else '-'} MB  "
              f"error {row['max_error']:.1e}", flush=True)
    return rows


def time_method(conv: nn.Conv1d, x: torch.Tensor, reference: torch.Tensor, method: str, precision: str,
                device: torch.device, repeat: int) -> dict:
    """One warm-up call (kernels, cuFFT plans), then `repeat` timed forward + backward calls."""
    fast = POS_CONV_METHODS[method]

    def forward_backward() -> torch.Tensor:
        x.grad = None
        conv.zero_grad(set_to_none=True)
        with autocast(device, precision):
            y = conv(x) if fast is None else fast(x, conv.weight, conv.bias, conv.padding[0], conv.groups)
        y.float().square().mean().backward()
        return y.detach()
    y = forward_backward()
    error = float((y.float() - reference).abs().max() / reference.abs().max())
    sync(device)
    reset_peak(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        forward_backward()
        sync(device)
        seconds.append(time.perf_counter() - started)
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20 if device.type == "cuda" else None
    return {"method": method, "precision": precision, "clips": x.shape[0], "frames": x.shape[2],
            "ms": 1000 * float(np.median(seconds)), "peak_mb": None if peak is None else round(peak),
            "max_error": error}


def posconv_markdown(rows: list[dict], device_name: str) -> str:
    lines = [f"HuBERT-base's positional conv alone on {device_name}, forward + backward (median; vs conv: "
             "the first conv row of the shape; error: largest deviation from fp32 conv1d / largest output):", "",
             "| clips x frames | method | precision | ms | vs conv | transient peak MB | error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:,}"
        lines.append(f"| {r['clips']} x {r['frames']} | {r['method']} | {r['precision']} | {r['ms']:.2f} | "
                     f"{r['vs_conv']:.2f} | {peak} | {r['max_error']:.1e} |")
    return "\n".join(lines)
