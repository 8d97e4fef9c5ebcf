"""HuBERT's positional convolution on CUDA: the same function of the same weights, by faster kernels.

The positional embedding is a grouped convolution (768 channels, 16 groups, kernel 128) that cuDNN
runs in bf16 with a slow kernel, one launch per group. `fast_positional_conv` swaps in a product of
Fourier transforms ("fft", the default: kernel 128 is most of a clip's 200-400 frames, so transforming
costs less than sliding the windows) or one batched matrix product over unfolded windows ("matmul").
The CPU keeps conv1d. How each compares on a GPU: docs/performance.md and performance-history.md.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


def grouped_conv1d_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             padding: int, groups: int) -> torch.Tensor:
    """F.conv1d(x, weight, bias, padding=padding, groups=groups) as one bmm over unfolded windows:
    (groups, B*T_out, C_in/groups*K) @ (groups, C_in/groups*K, C_out/groups)."""
    if torch.is_autocast_enabled(x.device.type):         # unfold in bf16: half the window copy
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    batch = x.shape[0]
    out_channels, per_group, kernel = weight.shape
    windows = F.pad(x, (padding, padding)).unfold(2, kernel, 1)          # (B, C, T_out, K), a view
    steps = windows.shape[2]
    cols = (windows.reshape(batch, groups, per_group, steps, kernel).permute(1, 0, 3, 2, 4)
            .reshape(groups, batch * steps, per_group * kernel))
    w = weight.reshape(groups, out_channels // groups, per_group * kernel).transpose(1, 2)
    y = torch.bmm(cols, w).reshape(groups, batch, steps, -1).permute(1, 0, 3, 2).reshape(batch, out_channels, steps)
    return y if bias is None else y + bias[None, :, None]


def fft_length(n: int) -> int:
    """The smallest 2^k or 3 * 2^k >= n: sizes cuFFT and pocketfft transform fastest."""
    power = 1 << max(0, n - 1).bit_length()
    three = 3 << max(0, (n - 1) // 3).bit_length()
    return min(power, three)


def grouped_conv1d_via_fft(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           padding: int, groups: int) -> torch.Tensor:
    """F.conv1d(x, weight, bias, padding=padding, groups=groups) as a correlation in the frequency
    domain, in (at least) fp32: rfft of input and kernel, one complex bmm per (group, frequency)
    mixing the group's channels, irfft. The input is padded on the left only: with a transform
    length >= T + padding, reads past the end wrap onto those left zeros, exactly the right padding
    (and kernel taps beyond it, cut by the transform, would only ever meet padding)."""
    out_dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    dtype = torch.promote_types(x.dtype, torch.float32)
    batch, _, steps_in = x.shape
    out_channels, per_group, kernel = weight.shape
    steps = steps_in + 2 * padding - kernel + 1
    n = fft_length(max(steps_in + padding, steps))
    with torch.autocast(x.device.type, enabled=False):
        xf = torch.fft.rfft(F.pad(x.to(dtype), (padding, 0)), n=n).reshape(batch, groups, per_group, -1)
        wf = torch.fft.rfft(weight.to(dtype), n=n).reshape(groups, out_channels // groups, per_group, -1)
        yf = torch.einsum("bgif,goif->bgof", xf, wf.conj()).reshape(batch, out_channels, -1)
        y = torch.fft.irfft(yf, n=n)[..., :steps]
        y = y if bias is None else y + bias.to(dtype)[None, :, None]
    return y.to(out_dtype)


POS_CONV_METHODS = {"conv": None, "matmul": grouped_conv1d_as_matmul, "fft": grouped_conv1d_via_fft}


def fast_positional_conv(encoder: nn.Module, method: str = "fft") -> None:
    """On CUDA, run HuBERT's positional convolution by `method` (a POS_CONV_METHODS key; "conv" is
    cuDNN's). The CPU keeps conv1d, which is faster there at hubert-base's shapes (the study's CPU
    runs use the tiny model). Parameters and state-dict keys stay the conv's own."""
    if method not in POS_CONV_METHODS:
        raise ValueError(f"positional conv method {method!r}: choose from {', '.join(POS_CONV_METHODS)}")
    conv = encoder.encoder.pos_conv_embed.conv
    conv.forward = types.MethodType(_positional_conv_forward, conv)
    conv.fast_method = POS_CONV_METHODS[method]


def _positional_conv_forward(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    if x.is_cuda and conv.fast_method is not None:
        return conv.fast_method(x, conv.weight, conv.bias, conv.padding[0], conv.groups)
    return conv._conv_forward(x, conv.weight, conv.bias)
