"""The whole training step as one CUDA graph per batch shape (`cuda_graphs: true`).

Why: on a GPU a project step is host-bound (Python and many small kernel launches for little GPU
work; figures in docs/performance-history.md). Replaying a captured graph costs one launch.

What is captured, per (input shapes): zeroing the gradients, forward under autocast, loss, backward,
gradient clipping, the AdamW update and the running loss / accuracy sums. What a graph needs, and where
it comes from:
- static inputs: each graph owns input buffers; `step` copies the batch into them, then replays;
- few shapes: `width_step` rounds padded widths (16 tokens or 1 s -> ~8-15 shapes a run);
- no host work inside: SpecAugment spans are drawn with the batch (SERClassifier.draw_time_mask),
  transformers skips its `mask.all()` check while a stream is capturing;
- state outside the graphs: weights, gradients (allocated by the warm-up, then zeroed and accumulated
  in place), AdamW state, learning rates (tensors the scheduler fills in place) and the running sums
  live outside the graphs' memory pool, so every graph can share one pool for its scratch (activations)
  — it writes all its scratch before reading it, whichever graph ran before;
- AdamW fused + capturable (step counts on the GPU).
Each new shape first runs once eagerly on a side stream (lazy state: AdamW moments, cuBLAS workspaces)
from a snapshot that is restored afterwards, so capturing changes no weight.

On CPU (tests) the same step body runs eagerly: the bookkeeping is tested there; the capture runs only
on CUDA and is measured by `hw5 bench --ablations` (project+graphs). If a capture fails (an operation a
graph cannot hold), the weights are restored, the error is printed once and every later step runs
eagerly: the run finishes, and `stats()` (in metrics.json) says what happened.
"""
from __future__ import annotations

import torch
from torch import nn

from hw5.step import train_step


# Model-config overrides a captured step needs. LayerDrop draws on the host, every step, which layers
# to skip: a replayed graph would repeat one draw, so graphed training runs every layer.
GRAPH_SAFE_CONFIG = {"layerdrop": 0.0}


class StepGraphs:
    """`step(inputs, labels)` trains one step; `loss_sum` / `correct` accumulate on the device."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str, max_grad_norm: float = 0.0, loss_weights: torch.Tensor | None = None):
        self.model, self.optimizer, self.device, self.precision = model, optimizer, device, precision
        self.max_grad_norm, self.loss_weights = max_grad_norm, loss_weights
        self.params = [p for p in model.parameters() if p.requires_grad]   # the eager loop's order
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.capture = device.type == "cuda"
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, torch.Tensor]] = {}
        self.replays, self.eager_steps, self.failure = 0, 0, None
        if self.capture:
            graph_safe_optimizer(optimizer, device)
            self.pool = torch.cuda.graph_pool_handle()
            self.stream = torch.cuda.Stream(device)

    def step(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        key = (tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(inputs.items())), tuple(labels.shape))
        if self.capture and self.failure is None and key not in self.graphs:
            self._try_capture(key, inputs, labels)
        if key not in self.graphs:
            self.eager_steps += 1
            self._body(inputs, labels)
            return
        self.replays += 1
        graph, static_inputs, static_labels = self.graphs[key]
        for name, buffer in static_inputs.items():
            buffer.copy_(inputs[name], non_blocking=True)
        static_labels.copy_(labels, non_blocking=True)
        graph.replay()

    def _body(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        train_step(self.model, self.optimizer, inputs, labels, self.loss_sum, self.correct, device=self.device,
                   precision=self.precision, params=self.params, max_grad_norm=self.max_grad_norm,
                   loss_weights=self.loss_weights, capture=self.capture)

    def stats(self) -> dict:
        """For metrics.json: graphs captured, steps replayed / run eagerly, why capturing stopped."""
        return {"graphs": len(self.graphs), "replays": self.replays, "eager_steps": self.eager_steps,
                "failure": self.failure}

    def _try_capture(self, key: tuple, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        saved = self._snapshot()
        try:
            self.graphs[key] = self._capture(inputs, labels)
        except RuntimeError as exc:            # CUDA reports what a graph cannot hold as RuntimeError
            self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            print(f"cuda_graphs: capture failed, every step from now on runs eagerly ({self.failure})",
                  flush=True)
        finally:
            torch.cuda.synchronize(self.device)
            self._restore(saved)

    def _capture(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
        static_inputs = {k: v.to(self.device, copy=True) for k, v in inputs.items()}
        static_labels = labels.to(self.device, copy=True)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):       # warm-up: lazy state is created outside the graph
            self._body(static_inputs, static_labels)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        grads = [p.grad for p in self.params]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            self._body(static_inputs, static_labels)
        if any(p.grad is not g for p, g in zip(self.params, grads)):
            raise RuntimeError("a gradient was reallocated during capture")
        return graph, static_inputs, static_labels

    def _snapshot(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(tensor, copy) for every weight, optimizer state tensor and running sum; copy None = the
        tensor did not exist before the warm-up, so it is reset to AdamW's initial zeros."""
        tensors = [p.data for p in self.params] + [self.loss_sum, self.correct]
        saved = [(t, t.clone()) for t in tensors]
        for p in self.params:
            state = self.optimizer.state.get(p)
            saved += [(t, t.clone()) for t in state.values() if torch.is_tensor(t)] if state else []
        self._fresh = [p for p in self.params if not self.optimizer.state.get(p)]
        return saved

    def _restore(self, saved: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        with torch.no_grad():
            for tensor, copy in saved:
                tensor.copy_(copy)
            for p in self._fresh:
                for t in self.optimizer.state.get(p, {}).values():
                    if torch.is_tensor(t):
                        t.zero_()


def graph_safe_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Learning rates as device tensors (LRScheduler fills them in place, so a replayed graph reads the
    current rate) and capturable steps (AdamW keeps its step counts on the device)."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        group["capturable"] = True
