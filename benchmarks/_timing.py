"""Timing shared by the benchmark scripts (run as `python benchmarks/<script>.py`, so this imports as `_timing`)."""

from __future__ import annotations

import statistics
import time

import torch


def seconds(fn, device: torch.device) -> float:
    """Seconds of one fn(): CUDA events on a GPU (device time, no host sync noise), perf_counter on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_seconds(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median of ``seconds(fn)`` over ``repeats`` calls, after ``warmup`` untimed ones (compilation, caches)."""
    for _ in range(warmup):
        fn()
    return statistics.median(seconds(fn, device) for _ in range(repeats))
