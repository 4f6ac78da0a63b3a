"""CPU inference path: the reference's operations, a slice at a time (twin: fftconv_ref.hyena_mix_ref).

Why: at 32k tokens the reference builds (B, 3C, L) and (B, C, 2L) fp32 / complex buffers of 64-200 MB in every
layer, and the MLP (B, L, 4D) ones of 256 MB. On CPU each such buffer is fresh memory from the kernel (glibc
serves blocks over 32 MB with mmap and unmaps them on free), and touching it page by page cost the README quick
start more system time than all the FFTs and matrix products cost user time (benchmarks/cpu_quickstart.py).
Slices of 16 channels (convolution) or 4096 rows (MLP) keep every temporary under ~16 MB: the allocator reuses
them and they stay in cache. The channel groups run side by side on a pool of one-thread workers, as many as
the caller's torch threads (_run_groups).

Outputs are bitwise identical to the reference's: a channel's short convolution and FFTs, and a row's matrix
products, do not depend on the other channels or rows computed beside them (same operations, same order, same
FFT size); tests/kernels/test_fftconv_cpu.py checks it. Inference only (no autograd: results are written into
preallocated outputs).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from genomelm.kernels.fftconv_ref import fftconv_ref, hyena_mix_ref

CHANNEL_GROUP = 16  # channels per slice: (B, 16, 2L) fp32 = 8 MB at B = 2, L = 32k
ROW_BLOCK = 4096  # rows per slice of a position-wise module: (4096, 1024) fp32 = 16 MB
MIN_ROWS = 64  # no matrix product over fewer rows than this (see map_row_blocks)
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (pid, threads) -> one-thread workers
_POOL_LOCK = threading.Lock()


def hyena_mix_cpu(
    projected: torch.Tensor,
    short_weight: torch.Tensor,
    short_bias: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor,
    group: int = CHANNEL_GROUP,
) -> torch.Tensor:
    """hyena_mix_ref, ``group`` channels at a time; same shapes: (B, L, 3C) -> (B, L, C), without autograd.

    The result has the reference's memory layout (a (B, C, L) buffer seen as (B, L, C)): out_proj's matrix
    product takes another code path, with other rounding, on a contiguous (B, L, C) input.
    """
    batch, seq_len, _ = projected.shape
    channels = k.shape[0]
    if channels % group:
        # MKL's batched FFT rounds a row by where it falls in the batch's SIMD blocks: whole groups of 16 channels
        # keep every row where the reference puts it (all HyenaDNA widths are multiples of 16).
        return hyena_mix_ref(projected, short_weight, short_bias, k, D)
    parts = projected.reshape(batch, seq_len, 3, channels)  # [x0 | x1 | v] along the last dim
    weight = short_weight.view(3, channels, *short_weight.shape[1:])  # (3, C, 1, K)
    bias = short_bias.view(3, channels)
    out = _output_buffer((batch, channels, seq_len), projected)  # (B, C, L)

    def mix_group(start: int) -> None:
        part = slice(start, start + group)
        x0, x1, v = _short_conv(parts[..., part], weight[:, part], bias[:, part]).chunk(3, dim=1)  # (B, G, L)
        y = fftconv_ref(v * x1, k[part], D[part])  # (B, G, L)
        torch.mul(y, x0, out=out[:, part])

    _run_groups(mix_group, range(0, channels, group))
    return out.transpose(1, 2)  # (B, L, C)


def _run_groups(work: Callable[[int], None], starts: range) -> None:
    """work(start) for every channel group, each group on one thread, the groups spread over the caller's threads.

    Why: each op on a group's 8 MB is memory-bound and gains nothing from a second thread, but pays a barrier
    per op (16 groups x 10 ops x layers), and a long one when another process has the other core. So one group
    runs on one thread, and torch.get_num_threads() groups run at once (a pool of one-thread workers): every
    core works, no barriers. A group's values do not depend on which thread computes it or on its neighbours
    (the reference gives the same bits on 1 and 2 threads). The caller's thread count is never changed.
    """
    threads = torch.get_num_threads()
    if threads == 1 or len(starts) == 1:
        for start in starts:
            work(start)
        return
    in_caller_mode = _caller_mode()
    for _ in _pool(threads).map(lambda start: in_caller_mode(work, start), starts):  # re-raises a worker's error
        pass


def _caller_mode() -> Callable:
    """A runner of fn(*args) under the calling thread's grad, inference and CPU autocast modes (all thread-local:
    a worker starts with grad on and autocast off)."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocast, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def run(fn: Callable, *args):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            with torch.autocast("cpu", dtype=dtype, enabled=autocast):
                return fn(*args)

    return run


def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` one-thread workers (a forked child makes its own: threads do not fork)."""
    key = (os.getpid(), threads)
    with _POOL_LOCK:
        if key not in _POOLS:
            _POOLS[key] = _start_pool(threads)
        return _POOLS[key]


def _start_pool(threads: int) -> ThreadPoolExecutor:
    """``threads`` workers, all started now with one intra-op thread each.

    torch's thread count is per thread (OpenMP's and MKL's settings are thread-local), but torch.set_num_threads
    also records the value as the default of threads that have not run an op yet: once every worker has set its
    1, the caller's count is recorded again (it is this thread's count already, so nothing else changes).
    """
    pool = ThreadPoolExecutor(threads, thread_name_prefix="genomelm-mix")
    started = threading.Barrier(threads)
    for _ in pool.map(lambda _: (torch.set_num_threads(1), started.wait()), range(threads)):
        pass
    torch.set_num_threads(threads)
    return pool


def _output_buffer(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Uninitialised output (every element is written; tests poison it with NaN to check)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _short_conv(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Causal depthwise convolution of one channel group: u (B, L, 3, G), weight (3, G, 1, K) -> (B, 3G, L).

    The group is first gathered into a dense (B, L, 3G) block: oneDNN reads its transpose (channels-last) in
    place, where a strided slice of the full (B, L, 3C) input would be reordered element by element.
    """
    batch, seq_len, _, width = u.shape
    dense = u.reshape(batch, seq_len, 3 * width).transpose(1, 2)  # (B, 3G, L), a copy made once
    taps = weight.shape[-1]
    weight = weight.reshape(3 * width, 1, taps)
    return F.conv1d(dense, weight, bias.reshape(-1), padding=taps - 1, groups=3 * width)[..., :seq_len]


def map_row_blocks(
    module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int | None = None
) -> torch.Tensor:
    """module(x) for a position-wise module (Linear, GELU, ...), about ``rows`` (default ROW_BLOCK) rows at a time.

    x: (..., D) contiguous. Returns (..., D_out). Each row's result is the one of the whole input: a matrix
    product over many contiguous rows takes the same kernel, row block by row block, at any row count. Blocks of
    fewer than MIN_ROWS rows would not (a few-row product is a matrix-vector kernel with its own rounding), so the
    last block takes a short remainder and ``rows`` is at least MIN_ROWS.
    """
    rows = max(rows or ROW_BLOCK, MIN_ROWS)
    flat = x.reshape(-1, x.shape[-1])  # (N, D): a view of the contiguous input
    bounds = _block_bounds(flat.shape[0], rows)
    first = module(flat[: bounds[1]])
    out = _output_buffer((flat.shape[0], first.shape[-1]), first)  # (N, D_out)
    out[: bounds[1]] = first
    for start, end in zip(bounds[1:], bounds[2:]):
        out[start:end] = module(flat[start:end])
    return out.view(*x.shape[:-1], first.shape[-1])


def _block_bounds(n_rows: int, rows: int) -> list[int]:
    """[0, rows, 2 rows, ..., n_rows], the last block extended rather than shorter than MIN_ROWS."""
    bounds = list(range(0, n_rows, rows)) + [n_rows]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_ROWS:
        del bounds[-2]
    return bounds
