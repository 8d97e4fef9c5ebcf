"""Device settings shared by the training step, its CUDA-graph form and the bench (a leaf: imports only torch)."""
from __future__ import annotations

import torch


def autocast(device: torch.device, precision: str, cache: bool = True):
    """bf16 autocast on CUDA ("auto") or when asked; `cache=False` while capturing a CUDA graph (cast
    weights must not outlive the graph's pool)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16, cache_enabled=cache)


def cuda_kernel_choices(cudnn_attention: bool = False) -> None:
    """The kernel choices the bench settled on (docs/performance-history.md). cuDNN's attention builds
    an execution plan for every new (batch, length) shape, a long warm-up at the same steady rate, so
    SDPA uses its flash / memory-efficient kernels; cuDNN's convolution autotuning costs warm-up and
    bought nothing, so it stays off."""
    torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)
    torch.backends.cudnn.benchmark = False
