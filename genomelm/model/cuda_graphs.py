"""CUDA graphs for fixed-shape inference: capture the backbone's forward for one (B, L) batch shape, then replay it.

A replay launches the whole forward (a few dozen kernels per block) with one call, so short windows, where the GPU
finishes a kernel before Python has launched the next, stop being launch-bound. Opt-in (GENOMELM_CUDA_GRAPHS=1;
benchmarks/cuda_graphs.py measures where it pays), except in score-genome, whose host has more to do than launch
kernels (GENOMELM_CUDA_GRAPHS=0 turns them off there).

How it stays correct:
- A shape is captured the second time it is seen: the first call runs eagerly and warms every cache the capture
  must find ready (the long filters, their spectra, Triton's compiled kernels). A batch shape seen once (the last
  partial batch of a run) never pays a capture.
- The graph reads the cached filters and spectra by address: it keeps references to them, so their memory is
  never reused while the graph lives. A change of any weight (version counter or storage) drops every graph.
- Autocast's weight-cast cache is off inside the capture (casts are replayed, not cached across replays).
- Each replay's output is copied out: the graph overwrites its output buffer at the next replay.
At most ``max_graphs`` shapes are kept (least recently used dropped): each holds a memory pool the size of one
forward's activations.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from genomelm.kernels import cached_inference_tensors

GRAPHS_ENV_VAR = "GENOMELM_CUDA_GRAPHS"  # 1: every command's model replays CUDA graphs (set_conv_backend reads it)


def cuda_graphs_requested() -> bool:
    """True when GENOMELM_CUDA_GRAPHS asks for CUDA graphs of fixed-shape inference."""
    return _graphs_setting() in ("1", "true", "yes", "on")


def cuda_graphs_refused() -> bool:
    """True when GENOMELM_CUDA_GRAPHS turns CUDA graphs off (where a command would use them by default)."""
    return _graphs_setting() in ("0", "false", "no", "off")


def _graphs_setting() -> str:
    return os.environ.get(GRAPHS_ENV_VAR, "").strip().lower()


class _Captured:
    """One captured forward: its static input and output, and the cached tensors it reads."""

    def __init__(self, graph: torch.cuda.CUDAGraph, ids: torch.Tensor, out: torch.Tensor, keep: list):
        self.graph, self.ids, self.out, self.keep = graph, ids, out, keep

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids.copy_(ids)
        self.graph.replay()
        return self.out.clone()


class GraphedForward:
    """forward(ids, extra) through CUDA graphs for CUDA ids without autograd; any other call runs it eagerly.

    ``forward``: (ids (B, L) long, extra hashable) -> tensor, a pure function of ids for fixed weights and extra;
    ``module``: the module whose parameters and buffers it reads (their versions guard the graphs).
    """

    def __init__(self, forward: Callable, module: nn.Module, max_graphs: int = 2):
        self.forward, self.module, self.max_graphs = forward, module, max_graphs
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self._seen: set[tuple] = set()
        self._weights: tuple | None = None

    def __call__(self, ids: torch.Tensor, extra=None) -> torch.Tensor:
        if not ids.is_cuda or torch.is_grad_enabled():
            return self.forward(ids, extra)
        self._check_weights()
        key = (tuple(ids.shape), ids.dtype, ids.device, extra, _autocast_state(ids.device))
        captured = self._graphs.get(key)
        if captured is None:
            if key not in self._seen:  # first sight: eager (warms the caches the capture reads)
                self._seen.add(key)
                return self.forward(ids, extra)
            captured = self._capture(ids, extra, key)
        self._graphs.move_to_end(key)
        return captured(ids)

    def clear(self) -> None:
        """Drop every graph (and its memory pool)."""
        self._graphs.clear()
        self._seen.clear()

    def _check_weights(self) -> None:
        """Weights changed in place or moved: every graph read the old ones."""
        tensors = [*self.module.parameters(), *self.module.buffers()]
        weights = tuple((t.data_ptr(), t._version) for t in tensors)
        if weights != self._weights:
            self.clear()
            self._weights = weights

    def _capture(self, ids: torch.Tensor, extra, key: tuple) -> _Captured:
        static_ids = ids.clone()
        stream = torch.cuda.Stream(ids.device)
        stream.wait_stream(torch.cuda.current_stream(ids.device))
        with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
            self.forward(static_ids, extra)
        torch.cuda.current_stream(ids.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        enabled, dtype = key[-1]
        with torch.cuda.graph(graph), torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
            out = self.forward(static_ids, extra)
        captured = _Captured(graph, static_ids, out, [*cached_inference_tensors(), *_filters(self.module)])
        self._graphs[key] = captured
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return captured


def _autocast_state(device: torch.device) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)


def _filters(module: nn.Module) -> list[torch.Tensor]:
    """The long filters cached by the module's Hyena filters (HyenaFilter._filter_cache)."""
    caches = (getattr(m, "_filter_cache", None) for m in module.modules())
    return [cache[1] for cache in caches if cache is not None]
