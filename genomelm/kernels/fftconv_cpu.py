"""CPU inference path: the reference's operations, a slice at a time (twin: fftconv_ref.hyena_mix_ref).

Why: at 32k tokens the reference builds (B, 3C, L) and (B, C, 2L) fp32 / complex buffers of 64-200 MB in every
layer, and the MLP (B, L, 4D) ones of 256 MB. On CPU each such buffer is fresh memory from the kernel (glibc
serves blocks over 32 MB with mmap and unmaps them on free), and touching it page by page cost the README quick
start more system time than all the FFTs and matrix products cost user time (benchmarks/cpu_quickstart.py).
Slices of 16 channels (convolution) or 4096 rows (MLP) keep every temporary under ~16 MB: the allocator reuses
them and they stay in cache.

Outputs are bitwise identical to the reference's: a channel's short convolution and FFTs, and a row's matrix
products, do not depend on the other channels or rows computed beside them (same operations, same order, same
FFT size); tests/kernels/test_fftconv_cpu.py checks it. Inference only (no autograd: results are written into
preallocated outputs).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F

from genomelm.kernels.fftconv_ref import fftconv_ref, hyena_mix_ref

CHANNEL_GROUP = 16  # channels per slice: (B, 16, 2L) fp32 = 8 MB at B = 2, L = 32k
ROW_BLOCK = 4096  # rows per slice of a position-wise module: (4096, 1024) fp32 = 16 MB
MIN_ROWS = 64  # no matrix product over fewer rows than this (see map_row_blocks)
_THREAD_SETTING = threading.Lock()


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
    with _one_thread():
        for start in range(0, channels, group):
            part = slice(start, start + group)
            x0, x1, v = _short_conv(parts[..., part], weight[:, part], bias[:, part]).chunk(3, dim=1)  # (B, G, L)
            y = fftconv_ref(v * x1, k[part], D[part])  # (B, G, L)
            torch.mul(y, x0, out=out[:, part])
    return out.transpose(1, 2)  # (B, L, C)


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread for the slices: each op on 8 MB is memory-bound and gains nothing from a second
    thread, but pays a barrier per op (16 slices x 10 ops x layers), and a long one when another process has
    the other core (measured, 2 cores: 0.40 s per layer on one thread, 0.4-1.3 s on two). Thread count does
    not change any value (the reference gives the same bits on 1 and 2 threads)."""
    with _THREAD_SETTING:  # the thread count is process-wide: concurrent callers must not restore each other's 1
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


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
