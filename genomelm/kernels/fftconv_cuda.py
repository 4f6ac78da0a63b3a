"""Fused CUDA backend of the Hyena long convolution: cuFFT in fp32 plus Triton kernels for the glue.

Same functions, signatures and semantics as ``fftconv_ref`` (the specification); layout of this file, bottom up:
Triton kernels -> launchers -> autograd Functions -> public functions ``fftconv`` and ``hyena_mix``.

Precise mode (fp32 activations, training, and bf16 outside fast mode's range): the FFT runs in fp32 through
torch.fft (cuFFT) with a power-of-two size n >= 2L (``fft_size``), the filter spectrum is computed once per call for
the whole batch (and, when no gradient of the filter is needed, cached across calls for the same filter tensor: see
``_cached_filter_spectrum``), and everything around the FFT is fused so that the activations are read and written
once per pass, in their own layouts:

    forward   pre kernel  : (B, L, 3C) --short conv, x1 * v--> u, zero-padded (B, C, n) fp32
              cuFFT       : u -> U; U *= K; y = irfft(U)
              post kernel : (B, L, 3C) + y --short conv again, (y + D u) * x0--> (B, L, C)
    backward  recomputes u and y (nothing of size B*C*L is kept between forward and backward), then three
              kernels around two more FFTs give the gradients of every input.

All arithmetic in the kernels is fp32 whatever the activation dtype (bf16 activations are cast on load and the
result rounded once on store), so precise mode is at least as precise as the reference.

Fast mode (``use_fast_mode``; bf16 inference by default): the long convolution between the same pre and post
kernels is fftconv_monarch's bf16 Monarch FFT on tensor cores (relative RMS error ~4e-3); backward as precise.

Importing this module needs triton; without it an ImportError is raised and the dispatcher falls back.
"""

from __future__ import annotations

import weakref

import torch

try:
    import triton
    import triton.language as tl
except Exception as exc:  # a broken triton install must also mean "backend unavailable", not a crash
    raise ImportError(f"triton is not usable: {exc}") from exc

# The mode choice (auto/precise/fast, GENOMELM_CONV_MODE) lives in the dispatcher; re-exported for this module's
# callers.
from genomelm.kernels import (
    FAST_AUTO_MAX_LEN,
    FAST_AUTO_MIN_LEN,
    MODE_ENV_VAR,
    MODES,
    conv_mode,
    fftconv_monarch,
    needs_grad,
    use_fast_mode,
)
from genomelm.kernels.fftconv_ref import fft_size, fftconv_ref, hyena_mix_ref

__all__ = [
    "FAST_AUTO_MAX_LEN", "FAST_AUTO_MIN_LEN", "MODES", "MODE_ENV_VAR", "conv_mode", "fftconv", "hyena_mix",
    "use_fast_mode",
]  # fmt: skip

# Tile sizes. (L, C) tiles of the channel-last (B, L, 3C) layout: C is the contiguous axis of the reads,
# L the contiguous axis of the (B, C, n) FFT buffers; Triton converts the tile layout between the two in shared
# memory, which is what removes the transposes of the reference.
_BLOCK_L = 64
_BLOCK_C = 32
_BLOCK_ROW = 1024  # 1-D tiles along L for the (B, C, L) fftconv kernels
# Complex numbers per program of the cross-spectrum kernel: each program loops over the whole batch, so short
# sequences in large batches (C * F = 262,400 at 1,024 tokens) still need ~1,000 programs to keep loads in flight.
_BLOCK_SPECTRUM = 256

# Testing aid: when True every internal buffer is allocated filled with NaN, so that an element a kernel forgets
# to write (the zero padding of the FFT buffers included) shows up as NaN in the result.
POISON_BUFFERS = False


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if POISON_BUFFERS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------------------


@triton.jit
def _causal_conv_tile(
    p_ptr, w_ptr, bias_ptr, t, ch, ch_mask, L, stride_l, stride_c,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Causal depthwise conv at 0-based positions t (BLOCK_L,) for channels ch (BLOCK_C,) of one batch row.

    out[t, c] = bias[c] + sum_j w[c, j] * p[t - (K - 1) + j, c], with p = 0 before position 0 (the conv's left
    padding). Reads only rows [0, L); outputs at t >= L are meaningless and callers discard them.
    Returns fp32 (BLOCK_L, BLOCK_C).
    """
    bias = tl.load(bias_ptr + ch, mask=ch_mask, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32) + bias[None, :]
    ch_off = ch.to(tl.int64) * stride_c  # int64: a channel stride times 3C can pass 2**31 (transposed views)
    for j in tl.static_range(K):
        src = t - (K - 1 - j)  # (BLOCK_L,) int64
        m = ((src >= 0) & (src < L))[:, None] & ch_mask[None, :]
        x = tl.load(p_ptr + src[:, None] * stride_l + ch_off[None, :], mask=m, other=0.0)
        w = tl.load(w_ptr + ch * K + j, mask=ch_mask, other=0.0).to(tl.float32)
        acc += x.to(tl.float32) * w[None, :]
    return acc


@triton.jit(do_not_specialize=["L", "n"])
def _mix_pre_kernel(
    p_ptr, w_ptr, bias_ptr, u_ptr,
    L, C, n,
    s_pb, s_pl, s_pc,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """u[b, c, t] = x1 * v (short-conv outputs) for t < L, 0 for L <= t < n; u is (B, C, n) fp32 contiguous."""
    b = tl.program_id(2).to(tl.int64)
    t = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    p = p_ptr + b * s_pb
    x1 = _causal_conv_tile(p, w_ptr, bias_ptr, t, c + C, cm, L, s_pl, s_pc, K, BLOCK_L, BLOCK_C)
    v = _causal_conv_tile(p, w_ptr, bias_ptr, t, c + 2 * C, cm, L, s_pl, s_pc, K, BLOCK_L, BLOCK_C)
    u = tl.where((t < L)[:, None], x1 * v, 0.0)
    dst = u_ptr + (b * C + c[None, :]) * n + t[:, None]
    tl.store(dst, u, mask=(t < n)[:, None] & cm[None, :])


@triton.jit
def _output_gate_inputs(
    p, w_ptr, bias_ptr, y_ptr, d_ptr, b, t, c, cm, m, L, C, n, s_pl, s_pc,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The two factors of the output gate out = x0 * z on an (L, C) tile: x0 (short-conv output) and
    z = y + D u (long conv y from the (B, C, n) fp32 buffer, u = x1 * v recomputed). Both fp32."""
    x0 = _causal_conv_tile(p, w_ptr, bias_ptr, t, c, cm, L, s_pl, s_pc, K, BLOCK_L, BLOCK_C)
    x1 = _causal_conv_tile(p, w_ptr, bias_ptr, t, c + C, cm, L, s_pl, s_pc, K, BLOCK_L, BLOCK_C)
    v = _causal_conv_tile(p, w_ptr, bias_ptr, t, c + 2 * C, cm, L, s_pl, s_pc, K, BLOCK_L, BLOCK_C)
    y = tl.load(y_ptr + (b * C + c[None, :]) * n + t[:, None], mask=m, other=0.0)
    d = tl.load(d_ptr + c, mask=cm, other=0.0).to(tl.float32)
    return x0, y + d[None, :] * (x1 * v)


@triton.jit(do_not_specialize=["L", "n"])
def _mix_post_kernel(
    p_ptr, w_ptr, bias_ptr, y_ptr, d_ptr, out_ptr,
    L, C, n,
    s_pb, s_pl, s_pc,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """out[b, t, c] = x0 * (y + D u) with y the long conv of u (B, C, n) fp32; out (B, L, C) contiguous."""
    b = tl.program_id(2).to(tl.int64)
    t = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    m = (t < L)[:, None] & cm[None, :]
    x0, z = _output_gate_inputs(
        p_ptr + b * s_pb, w_ptr, bias_ptr, y_ptr, d_ptr, b, t, c, cm, m, L, C, n, s_pl, s_pc, K, BLOCK_L, BLOCK_C
    )
    out = z * x0
    dst = out_ptr + (b * L + t[:, None]) * C + c[None, :]
    tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["L", "n"])
def _mix_bwd_gate_kernel(
    p_ptr, w_ptr, bias_ptr, y_ptr, d_ptr, g_ptr, gz_ptr, gx_ptr,
    L, C, n,
    s_pb, s_pl, s_pc, s_gb, s_gl, s_gc,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward through the output gate out = x0 * z, z = y + D u.

    gz[b, c, t] = g * x0 (zero-padded (B, C, n) fp32, the input of the next FFT);
    gx[b, t, c] = g * z, the gradient of the x0 short-conv output, into columns [0, C) of (B, L, 3C) fp32.
    """
    b = tl.program_id(2).to(tl.int64)
    t = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    m = (t < L)[:, None] & cm[None, :]
    x0, z = _output_gate_inputs(
        p_ptr + b * s_pb, w_ptr, bias_ptr, y_ptr, d_ptr, b, t, c, cm, m, L, C, n, s_pl, s_pc, K, BLOCK_L, BLOCK_C
    )
    g = tl.load(g_ptr + b * s_gb + t[:, None] * s_gl + c[None, :].to(tl.int64) * s_gc, mask=m, other=0.0)
    g = g.to(tl.float32)
    gz = tl.where(m, g * x0, 0.0)
    tl.store(gz_ptr + (b * C + c[None, :]) * n + t[:, None], gz, mask=(t < n)[:, None] & cm[None, :])
    gx0 = g * z
    tl.store(gx_ptr + (b * L + t[:, None]) * (3 * C) + c[None, :], gx0, mask=m)


@triton.jit(do_not_specialize=["L", "n"])
def _mix_bwd_u_kernel(
    p_ptr, w_ptr, bias_ptr, gu_ptr, gz_ptr, d_ptr, gx_ptr, gd_ptr,
    L, C, n,
    s_pb, s_pl, s_pc,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward through u = x1 * v and the skip term: grad_u = corr(gz, k) + D gz (gu holds the correlation).

    Writes grad x1 = grad_u * v and grad v = grad_u * x1 into columns [C, 3C) of gx (B, L, 3C) fp32 and adds
    sum_t gz * u to gd (C,) fp32 (the gradient of D) with one atomic add per channel and program.
    """
    b = tl.program_id(2).to(tl.int64)
    t = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    m = (t < L)[:, None] & cm[None, :]
    p = p_ptr + b * s_pb
    x1 = _causal_conv_tile(p, w_ptr, bias_ptr, t, c + C, cm, L, s_pl, s_pc, K, BLOCK_L, BLOCK_C)
    v = _causal_conv_tile(p, w_ptr, bias_ptr, t, c + 2 * C, cm, L, s_pl, s_pc, K, BLOCK_L, BLOCK_C)
    fft_offs = (b * C + c[None, :]) * n + t[:, None]
    gz = tl.load(gz_ptr + fft_offs, mask=m, other=0.0)
    d = tl.load(d_ptr + c, mask=cm, other=0.0).to(tl.float32)
    gu = tl.load(gu_ptr + fft_offs, mask=m, other=0.0) + d[None, :] * gz
    row = gx_ptr + (b * L + t[:, None]) * (3 * C) + c[None, :]
    tl.store(row + C, gu * v, mask=m)
    tl.store(row + 2 * C, gu * x1, mask=m)
    tl.atomic_add(gd_ptr + c, tl.sum(tl.where(m, gz * x1 * v, 0.0), axis=0), mask=cm)


@triton.jit(do_not_specialize=["L"])
def _short_conv_bwd_kernel(
    gx_ptr, p_ptr, w_ptr, gp_ptr, gw_ptr, gbias_ptr,
    L, C3,
    s_pb, s_pl, s_pc,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward of the causal depthwise conv over all 3C channels.

    gx (B, L, 3C) fp32 is the gradient of the conv output. Writes gp[b, s, c] = sum_j w[c, j] gx[s + K-1-j, c]
    ((B, L, 3C) contiguous, p's dtype) and adds sum_s gx[s + K-1-j, c] p[s, c] to gw[c, j] and sum_t gx[t, c]
    to gbias[c] (fp32, atomics).
    """
    b = tl.program_id(2).to(tl.int64)
    s = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C3
    m = (s < L)[:, None] & cm[None, :]
    x = tl.load(p_ptr + b * s_pb + s[:, None] * s_pl + c[None, :].to(tl.int64) * s_pc, mask=m, other=0.0)
    x = x.to(tl.float32)
    gp = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
    for j in tl.static_range(K):
        t = s + (K - 1 - j)  # the output position that reads input s through tap j
        mt = (t < L)[:, None] & cm[None, :]
        g = tl.load(gx_ptr + (b * L + t[:, None]) * C3 + c[None, :], mask=mt, other=0.0)
        w = tl.load(w_ptr + c * K + j, mask=cm, other=0.0).to(tl.float32)
        gp += g * w[None, :]
        tl.atomic_add(gw_ptr + c * K + j, tl.sum(g * x, axis=0), mask=cm)
        if j == K - 1:  # t == s: every output position of the tile, once
            tl.atomic_add(gbias_ptr + c, tl.sum(g, axis=0), mask=cm)
    tl.store(gp_ptr + (b * L + s[:, None]) * C3 + c[None, :], gp.to(gp_ptr.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["L", "n"])
def _pad_rows_kernel(x_ptr, out_ptr, L, n, C, s_xb, s_xc, s_xl, BLOCK: tl.constexpr):
    """out[row, t] = x[b, c, t] (fp32) for t < L, 0 for L <= t < n; row = b * C + c; out (B*C, n) contiguous."""
    row = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    b, c = row // C, row % C
    x = tl.load(x_ptr + b * s_xb + c * s_xc + t * s_xl, mask=t < L, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * n + t, x, mask=t < n)


@triton.jit(do_not_specialize=["L", "n"])
def _skip_rows_kernel(y_ptr, x_ptr, d_ptr, out_ptr, L, n, C, s_xb, s_xc, s_xl, BLOCK: tl.constexpr):
    """out[b, c, t] = y[row, t] + D[c] x[b, c, t] for t < L; y (B*C, n) fp32, out (B, C, L) contiguous."""
    row = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    b, c = row // C, row % C
    m = t < L
    y = tl.load(y_ptr + row * n + t, mask=m, other=0.0)
    x = tl.load(x_ptr + b * s_xb + c * s_xc + t * s_xl, mask=m, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + c).to(tl.float32)
    tl.store(out_ptr + row * L + t, (y + d * x).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["B", "CF"])
def _cross_spectrum_kernel(g_ptr, u_ptr, out_ptr, B, CF, BLOCK: tl.constexpr):
    """out[i] = sum_b g[b, i] * conj(u[b, i]) over the CF complex numbers i of a (C, F) spectrum.

    g, u: (B, C, F) complex64, contiguous, read as interleaved (re, im) fp32 pairs; out (C, F) complex64 likewise.
    fp32 accumulation in batch order. One program reads its slice of every batch row once: one launch, where a
    loop over the batch in torch would launch 2B kernels and write B temporaries.
    """
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < CF
    g_at, u_at = g_ptr + 2 * i, u_ptr + 2 * i
    re = tl.zeros((BLOCK,), tl.float32)
    im = tl.zeros((BLOCK,), tl.float32)
    for _ in range(B):
        gr, gi = tl.load(g_at, mask=m, other=0.0), tl.load(g_at + 1, mask=m, other=0.0)
        ur, ui = tl.load(u_at, mask=m, other=0.0), tl.load(u_at + 1, mask=m, other=0.0)
        re += gr * ur + gi * ui  # (gr + i gi)(ur - i ui)
        im += gi * ur - gr * ui
        g_at += 2 * CF
        u_at += 2 * CF
    tl.store(out_ptr + 2 * i, re, mask=m)
    tl.store(out_ptr + 2 * i + 1, im, mask=m)


# --------------------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------------------


def _mix_grid(positions: int, channels: int, batch: int) -> tuple[int, int, int]:
    return (triton.cdiv(positions, _BLOCK_L), triton.cdiv(channels, _BLOCK_C), batch)


def _mix_pre(projected, weight, bias, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, L, 3C) -> u = x1 * v as a zero-padded (B, C, n) buffer (fp32 for rfft; bf16, n = L, for fast mode)."""
    batch, seq_len, width = projected.shape
    channels = width // 3
    u = _empty((batch, channels, n), dtype, projected.device)
    _mix_pre_kernel[_mix_grid(n, channels, batch)](
        projected, weight, bias, u, seq_len, channels, n, *projected.stride(),
        K=weight.shape[-1], BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C,
    )  # fmt: skip
    return u


def _mix_post(projected, weight, bias, y, D) -> torch.Tensor:
    """(B, L, 3C) and the long conv y (B, C, n) -> (B, L, C) in projected's dtype."""
    batch, seq_len, width = projected.shape
    channels = width // 3
    out = _empty((batch, seq_len, channels), projected.dtype, projected.device)
    _mix_post_kernel[_mix_grid(seq_len, channels, batch)](
        projected, weight, bias, y, D, out, seq_len, channels, y.shape[-1], *projected.stride(),
        K=weight.shape[-1], BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C,
    )  # fmt: skip
    return out


def _mix_bwd_gate(projected, weight, bias, y, D, grad_out, gx) -> torch.Tensor:
    """Fills gx[..., :C] (grad of x0) and returns gz = grad_out * x0 as a zero-padded (B, C, n) fp32 buffer."""
    batch, seq_len, width = projected.shape
    channels, n = width // 3, y.shape[-1]
    gz = _empty((batch, channels, n), torch.float32, projected.device)
    _mix_bwd_gate_kernel[_mix_grid(n, channels, batch)](
        projected, weight, bias, y, D, grad_out, gz, gx, seq_len, channels, n,
        *projected.stride(), *grad_out.stride(),
        K=weight.shape[-1], BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C,
    )  # fmt: skip
    return gz


def _mix_bwd_u(projected, weight, bias, gu, gz, D, gx) -> torch.Tensor:
    """Fills gx[..., C:] (grads of x1 and v) and returns the gradient of D, (C,) fp32."""
    batch, seq_len, width = projected.shape
    channels, n = width // 3, gz.shape[-1]
    grad_d = torch.zeros(channels, dtype=torch.float32, device=projected.device)
    _mix_bwd_u_kernel[_mix_grid(seq_len, channels, batch)](
        projected, weight, bias, gu, gz, D, gx, grad_d, seq_len, channels, n, *projected.stride(),
        K=weight.shape[-1], BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C,
    )  # fmt: skip
    return grad_d


def _short_conv_bwd(gx, projected, weight):
    """gx (B, L, 3C) fp32 -> (grad projected (B, L, 3C), grad weight (3C, K) fp32, grad bias (3C,) fp32)."""
    batch, seq_len, width = projected.shape
    taps = weight.shape[-1]
    grad_p = _empty((batch, seq_len, width), projected.dtype, projected.device)
    grad_w = torch.zeros((width, taps), dtype=torch.float32, device=projected.device)
    grad_b = torch.zeros(width, dtype=torch.float32, device=projected.device)
    _short_conv_bwd_kernel[_mix_grid(seq_len, width, batch)](
        gx, projected, weight, grad_p, grad_w, grad_b, seq_len, width, *projected.stride(),
        K=taps, BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C,
    )  # fmt: skip
    return grad_p, grad_w, grad_b


def _pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, L) any dtype/strides -> zero-padded (B, C, n) fp32 contiguous."""
    batch, channels, seq_len = x.shape
    out = _empty((batch, channels, n), torch.float32, x.device)
    grid = (batch * channels, triton.cdiv(n, _BLOCK_ROW))
    _pad_rows_kernel[grid](x, out, seq_len, n, channels, *x.stride(), BLOCK=_BLOCK_ROW)
    return out


def _skip_rows(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """y (B, C, n) fp32, x (B, C, L) -> y[..., :L] + D x as (B, C, L) ``dtype``."""
    batch, channels, seq_len = x.shape
    out = _empty((batch, channels, seq_len), dtype, x.device)
    grid = (batch * channels, triton.cdiv(seq_len, _BLOCK_ROW))
    _skip_rows_kernel[grid](y, x, D, out, seq_len, y.shape[-1], channels, *x.stride(), BLOCK=_BLOCK_ROW)
    return out


# --------------------------------------------------------------------------------------------------------------
# FFT pieces (cuFFT through torch.fft, always fp32)
# --------------------------------------------------------------------------------------------------------------


def _spectrum(x_pad: torch.Tensor) -> torch.Tensor:
    """(..., n) fp32 zero-padded -> (..., n/2+1) complex64."""
    return torch.fft.rfft(x_pad)


def _filter_spectrum(k: torch.Tensor, n: int) -> torch.Tensor:
    """(C, L) filter -> (C, n/2+1) complex64 scaled by 1/n; computed once per call, shared by the whole batch.

    The inverse FFT's 1/n is folded in here, on C*(n/2+1) numbers, so ``_inverse`` needs no scaling pass over the
    B*C*n outputs (torch.fft.irfft's default norm runs one more elementwise kernel). Padded by our kernel rather
    than by rfft(k, n=n), which casts and pads in separate passes.
    """
    return torch.fft.rfft(_pad_rows(k.unsqueeze(0), n)[0], norm="forward")


# Filter-spectrum cache (inference): HyenaFilter.filter returns the same k tensor while the weights are unchanged and
# autograd is off, so its spectrum is reused instead of recomputed at every call. Slot key: where and how k lies in
# memory and the FFT size; an entry holds a weak reference to k, k's in-place version counter at the time, and
# the spectrum. A hit needs the same live tensor object at the same version, so an in-place change of k
# (k.mul_(2), an optimiser step, load_state_dict) or a new tensor at a recycled address is a miss. An entry is
# dropped as soon as its k is garbage collected and the cache keeps at most _SPECTRUM_CACHE_SIZE entries (LRU):
# it never keeps GPU memory for dead filters.
_SPECTRUM_CACHE_SIZE = 8  # a model uses one filter per layer and length; a few entries cover alternating shapes
_spectrum_cache: dict[tuple, tuple[weakref.ref, int, torch.Tensor]] = {}  # insertion order = LRU order


def _drop_dead_spectrum(slot: tuple, ref: weakref.ref) -> None:
    """Weak-reference callback: k died, release its spectrum (unless the slot already holds another tensor's)."""
    entry = _spectrum_cache.get(slot)
    if entry is not None and entry[0] is ref:
        _spectrum_cache.pop(slot, None)


def _cached_filter_spectrum(k: torch.Tensor, n: int, compute=None) -> torch.Tensor:
    """``compute(k, n)`` (default ``_filter_spectrum``), reused across calls for the same unchanged k.

    Only for callers that need no gradient of k (the result is a plain tensor, never part of a graph).
    Inference tensors (created under torch.inference_mode) have no version counter, so an in-place change could
    not be detected: they are never cached.
    """
    compute = compute or _filter_spectrum
    if k.is_inference():
        return compute(k, n)
    slot = (k.data_ptr(), tuple(k.shape), k.stride(), k.dtype, k.device, n, compute)
    version = k._version
    entry = _spectrum_cache.pop(slot, None)  # re-inserted below: most recently used last
    if entry is not None and entry[0]() is k and entry[1] == version:
        _spectrum_cache[slot] = entry
        return entry[2]
    k_f = compute(k, n)
    _spectrum_cache[slot] = (weakref.ref(k, lambda ref, slot=slot: _drop_dead_spectrum(slot, ref)), version, k_f)
    while len(_spectrum_cache) > _SPECTRUM_CACHE_SIZE:
        _spectrum_cache.pop(next(iter(_spectrum_cache)), None)
    return k_f


def cached_spectra() -> list[torch.Tensor]:
    """The spectra held by the cache now (a CUDA graph that read them keeps them alive: see cuda_graphs)."""
    return [entry[2] for entry in _spectrum_cache.values()]


def clear_spectrum_cache() -> None:
    """Forget every cached filter spectrum (frees their memory now)."""
    _spectrum_cache.clear()


def _uses_spectrum_cache(k: torch.Tensor) -> bool:
    """True when autograd will not need a gradient of k: decided outside autograd.Function.forward, where grad
    mode is always off."""
    return not (torch.is_grad_enabled() and k.requires_grad)


def _inverse(spec: torch.Tensor, n: int) -> torch.Tensor:
    """(..., n/2+1) -> (..., n) fp32, unscaled: exact for spectra that carry the filter spectrum's 1/n."""
    return torch.fft.irfft(spec, n=n, norm="forward")


def _cross_spectrum(g_spec: torch.Tensor, u_spec: torch.Tensor) -> torch.Tensor:
    """(B, C, F) complex64 twice -> sum_b g_spec[b] * conj(u_spec[b]), (C, F) complex64, in one kernel launch."""
    g, u = g_spec.contiguous(), u_spec.contiguous()
    if g.dim() != 3 or g.shape != u.shape or g.dtype != torch.complex64 or u.dtype != torch.complex64:
        raise ValueError(f"two (B, C, F) complex64 spectra of one shape expected, got {g.dtype}{tuple(g.shape)}, "
                         f"{u.dtype}{tuple(u.shape)}")  # fmt: skip
    out = _empty(g.shape[1:], torch.complex64, g.device)
    flat = g.shape[1] * g.shape[2]
    _cross_spectrum_kernel[(triton.cdiv(flat, _BLOCK_SPECTRUM),)](
        torch.view_as_real(g), torch.view_as_real(u), torch.view_as_real(out), g.shape[0], flat,
        BLOCK=_BLOCK_SPECTRUM,
    )  # fmt: skip
    return out


def _filter_grad(g_spec: torch.Tensor, u_spec: torch.Tensor, n: int, k_len: int) -> torch.Tensor:
    """grad k[c, s] = sum_b sum_t g[b, c, t] u[b, c, t - s]: a correlation, summed over the batch in frequency."""
    cross = _cross_spectrum(g_spec, u_spec)  # (C, n/2+1)
    return torch.fft.irfft(cross, n=n)[:, :k_len]  # no filter spectrum in cross: the 1/n applied here


# --------------------------------------------------------------------------------------------------------------
# Autograd Functions
# --------------------------------------------------------------------------------------------------------------


def _check_mix_args(projected, short_weight, k, D) -> None:
    if projected.dim() != 3 or projected.shape[-1] % 3:
        raise ValueError(f"projected must be (B, L, 3C), got {tuple(projected.shape)}")
    channels, seq_len = projected.shape[-1] // 3, projected.shape[1]
    if short_weight.dim() != 3 or short_weight.shape[:2] != (3 * channels, 1):
        raise ValueError(f"short_weight must be (3C, 1, K) = ({3 * channels}, 1, K), got {tuple(short_weight.shape)}")
    if k.dim() != 2 or k.shape[0] != channels or k.shape[1] > seq_len:
        raise ValueError(f"k must be (C, <=L) = ({channels}, <={seq_len}), got {tuple(k.shape)}")
    if D.shape != (channels,):
        raise ValueError(f"D must be (C,) = ({channels},), got {tuple(D.shape)}")


def _spectrum_getter(cache_spectrum: bool):
    """The filter-spectrum function of one call: cached across calls (inference) or computed afresh."""
    if cache_spectrum:
        return _cached_filter_spectrum
    return lambda k, n, compute=None: (compute or _filter_spectrum)(k, n)


def _monarch_spectrum(k: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The filter spectrum in fast mode's order for sequences of seq_len (cache-compatible signature)."""
    return fftconv_monarch.filter_spectrum(k, fftconv_monarch.plan(seq_len))


def _mix_forward(projected, short_weight, short_bias, k, D, cache_spectrum: bool, fast: bool):
    """hyena_mix's forward pass: (out (B, L, C), the precise filter spectrum (C, n/2+1) or None in fast mode).

    Fast mode (``fast``): the long convolution runs as a Monarch FFT on tensor cores (fftconv_monarch) between the
    same fused pre and post kernels, with u and y as bf16 (B, C, L).
    """
    seq_len = projected.shape[1]
    n = fft_size(seq_len)
    weight = short_weight.reshape(short_weight.shape[0], -1).contiguous()  # (3C, K)
    bias = short_bias.contiguous()
    spectrum = _spectrum_getter(cache_spectrum)
    if fast:
        plan = fftconv_monarch.plan(seq_len)
        u = _mix_pre(projected, weight, bias, seq_len, torch.bfloat16)  # (B, C, L)
        y = fftconv_monarch.monarch_conv(u, spectrum(k, seq_len, _monarch_spectrum), plan, None, torch.bfloat16)
        del u
        k_f = None  # fast mode's backward computes its own spectrum from k, only if one runs
    else:
        k_f = spectrum(k, n)  # (C, n/2+1), read only
        y = _long_conv(_mix_pre(projected, weight, bias, n), k_f, n)  # (B, C, n)
    return _mix_post(projected, weight, bias, y, D.contiguous()), k_f  # (B, L, C)


def _mix_backward(grad_out, projected, short_weight, short_bias, k, k_f, D, need_k: bool, fast: bool):
    """hyena_mix's backward pass: fp32 gradients (projected's in its dtype) of (projected, weight (3C, K),
    bias (3C,), k (C, k_len) or None, D (C,)). ``k_f``: precise mode's filter spectrum (C, n/2+1), unused in fast
    mode. Recomputes u and y: nothing of size B*C*L is kept between forward and backward."""
    batch, seq_len, width = projected.shape
    weight = short_weight.reshape(short_weight.shape[0], -1).contiguous()  # (3C, K)
    bias, D = short_bias.contiguous(), D.contiguous()
    gx = _empty((batch, seq_len, width), torch.float32, projected.device)  # grads of the short-conv outputs
    if fast:
        gu, gz, grad_k = _long_conv_grads_fast(grad_out, projected, weight, bias, k, D, gx, need_k)
    else:
        gu, gz, grad_k = _long_conv_grads_precise(grad_out, projected, weight, bias, k_f, D, gx, k.shape[-1], need_k)
    grad_d = _mix_bwd_u(projected, weight, bias, gu, gz, D, gx)  # fills gx[..., C:]
    del gu, gz
    grad_p, grad_w, grad_b = _short_conv_bwd(gx, projected, weight)
    return grad_p, grad_w, grad_b, grad_k, grad_d


def _long_conv_grads_precise(grad_out, projected, weight, bias, k_f, D, gx, k_len: int, need_k: bool):
    """Through the output gate and the long convolution, with cuFFT: (gu = corr(gz, k), gz, grad k or None),
    gu and gz (B, C, n) fp32. Fills gx[..., :C]."""
    n = fft_size(projected.shape[1])
    u_spec = _spectrum(_mix_pre(projected, weight, bias, n))  # (B, C, n/2+1)
    y = _inverse(u_spec * k_f, n)  # (B, C, n)
    gz = _mix_bwd_gate(projected, weight, bias, y, D, grad_out, gx)  # (B, C, n); fills gx[..., :C]
    del y
    g_spec = _spectrum(gz)  # (B, C, n/2+1)
    grad_k = _filter_grad(g_spec, u_spec, n, k_len) if need_k else None
    del u_spec
    gu = _inverse(g_spec.mul_(k_f.conj()), n)  # correlation of gz with k: (B, C, n)
    return gu, gz, grad_k


def _long_conv_grads_fast(grad_out, projected, weight, bias, k, D, gx, need_k: bool):
    """As ``_long_conv_grads_precise`` with the Monarch kernels: y recomputed as the forward did, and
    gu = corr(gz, k) as the convolution with the conjugated spectrum; gu and gz (B, C, L) fp32. The filter's
    gradient is a cross-spectrum summed over the batch, which the Monarch kernels do not compute: cuFFT."""
    seq_len = projected.shape[1]
    n, plan = fft_size(seq_len), fftconv_monarch.plan(seq_len)
    k_spec = _monarch_spectrum(k, seq_len)
    # fp32, zero-padded to n when grad k needs its spectrum (the Monarch kernel reads [:L] in place)
    u = _mix_pre(projected, weight, bias, n if need_k else seq_len)
    y = fftconv_monarch.monarch_conv(u[..., :seq_len], k_spec, plan, None, torch.float32)  # (B, C, L)
    gz = _mix_bwd_gate(projected, weight, bias, y, D, grad_out, gx)  # (B, C, L); fills gx[..., :C]
    del y
    grad_k = None
    if need_k:  # u's spectrum replaces u before gz's is made: the peak stays that of precise mode
        u_spec = _spectrum(u)
        u = None
        grad_k = _filter_grad(_spectrum(_pad_rows(gz, n)), u_spec, n, k.shape[-1])
        del u_spec
    u = None  # released before gu is made
    gu = fftconv_monarch.monarch_conv(gz, fftconv_monarch.conjugate(k_spec), plan, None, torch.float32)
    return gu, gz, grad_k


# The Triton convolution as torch custom ops (what torch.compile sees: opaque, with fake implementations, so a
# Block traces without a graph break). The forward op also returns what its backward needs beyond the inputs: the
# precise filter spectrum as a real (C, n/2+1, 2) view when a backward will run in precise mode, else an empty
# tensor (fast mode's backward recomputes it from k; inference needs none).


@torch.library.custom_op("genomelm::hyena_mix", mutates_args=())
def _mix_op(
    projected: torch.Tensor, short_weight: torch.Tensor, short_bias: torch.Tensor, k: torch.Tensor,
    D: torch.Tensor, cache_spectrum: bool, fast: bool, save_spectrum: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    out, k_f = _mix_forward(projected, short_weight, short_bias, k, D, cache_spectrum, fast)
    if save_spectrum and k_f is not None:
        return out, torch.view_as_real(k_f)
    return out, projected.new_empty((0,), dtype=torch.float32)


@_mix_op.register_fake
def _(projected, short_weight, short_bias, k, D, cache_spectrum, fast, save_spectrum):
    batch, seq_len, width = projected.shape
    saved = (k.shape[0], fft_size(seq_len) // 2 + 1, 2) if save_spectrum and not fast else (0,)
    return projected.new_empty((batch, seq_len, width // 3)), projected.new_empty(saved, dtype=torch.float32)


@torch.library.custom_op("genomelm::hyena_mix_backward", mutates_args=())
def _mix_bwd_op(
    grad_out: torch.Tensor, projected: torch.Tensor, short_weight: torch.Tensor, short_bias: torch.Tensor,
    k: torch.Tensor, k_f: torch.Tensor, D: torch.Tensor, need_k: bool, fast: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of (projected, short_weight, short_bias, k (empty unless need_k), D) in their dtypes; k_f is
    the forward's saved spectrum, or empty (then precise mode computes it from k; fast mode needs none)."""
    spectrum = None
    if not fast:
        spectrum = torch.view_as_complex(k_f) if k_f.numel() else _filter_spectrum(k, fft_size(projected.shape[1]))
    grads = _mix_backward(grad_out, projected, short_weight, short_bias, k, spectrum, D, need_k, fast)
    grad_p, grad_w, grad_b, grad_k, grad_d = grads
    grad_k = grad_k.to(k.dtype).contiguous() if need_k else k.new_empty((0,))
    grad_w = grad_w.reshape(short_weight.shape).to(short_weight.dtype)
    return grad_p, grad_w, grad_b.to(short_bias.dtype), grad_k, grad_d.to(D.dtype)


@_mix_bwd_op.register_fake
def _(grad_out, projected, short_weight, short_bias, k, k_f, D, need_k, fast):
    # Contiguous, whatever the inputs' strides (k is a transposed view in the model): as the real outputs.
    return (
        projected.new_empty(projected.shape),
        short_weight.new_empty(short_weight.shape),
        short_bias.new_empty(short_bias.shape),
        k.new_empty(k.shape if need_k else (0,)),
        D.new_empty(D.shape),
    )


def _mix_setup_context(ctx, inputs, output) -> None:
    projected, short_weight, short_bias, k, D, _cache, fast, _save = inputs
    ctx.save_for_backward(projected, short_weight, short_bias, k, D, output[1])
    ctx.fast = fast


def _mix_autograd_backward(ctx, grad_out, _grad_spectrum):
    projected, short_weight, short_bias, k, D, k_f = ctx.saved_tensors
    need_k = ctx.needs_input_grad[3]
    grads = _mix_bwd_op(grad_out, projected, short_weight, short_bias, k, k_f, D, need_k, ctx.fast)
    grad_p, grad_w, grad_b, grad_k, grad_d = grads
    return grad_p, grad_w, grad_b, grad_k if need_k else None, grad_d, None, None, None


_mix_op.register_autograd(_mix_autograd_backward, setup_context=_mix_setup_context)


def _long_conv(u_pad: torch.Tensor, k_f: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-padded (B, C, n) fp32 -> circular conv with the filter spectrum, (B, C, n) fp32 (causal in [:L]).

    Takes ownership of u_pad: the caller must not use it afterwards (its memory is released before the inverse).
    """
    spec = _spectrum(u_pad)  # (B, C, n/2+1)
    del u_pad
    return _inverse(spec.mul_(k_f), n)


class _FFTConv(torch.autograd.Function):
    """fftconv_ref's function: y = causal_conv(u, k) + D u, (B, C, L) -> (B, C, L). Fast mode: forward and the
    input's gradient by fftconv_monarch, the filter's gradient by cuFFT."""

    @staticmethod
    def forward(ctx, u, k, D, cache_spectrum, fast):
        seq_len = u.shape[-1]
        n = fft_size(seq_len)
        D_c = D.contiguous()
        spectrum = _spectrum_getter(cache_spectrum)
        ctx.k_meta = (k.shape[-1], k.dtype, n, fast)
        if fast:
            plan = fftconv_monarch.plan(seq_len)
            ctx.save_for_backward(u, k, D_c)
            return fftconv_monarch.monarch_conv(u, spectrum(k, seq_len, _monarch_spectrum), plan, D_c, u.dtype)
        k_f = spectrum(k, n)  # (C, n/2+1), read only
        y = _long_conv(_pad_rows(u, n), k_f, n)  # (B, C, n)
        ctx.save_for_backward(u, k_f, D_c)
        return _skip_rows(y, u, D_c, u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        u, k_saved, D = ctx.saved_tensors  # k_saved: k in fast mode, its precise spectrum otherwise
        k_len, k_dtype, n, fast = ctx.k_meta
        g_spec = _spectrum(_pad_rows(grad_out, n)) if ctx.needs_input_grad[1] or not fast else None
        grad_k = None
        if ctx.needs_input_grad[1]:
            grad_k = _filter_grad(g_spec, _spectrum(_pad_rows(u, n)), n, k_len).to(k_dtype)
        if fast:
            seq_len = u.shape[-1]
            k_spec = fftconv_monarch.conjugate(_monarch_spectrum(k_saved, seq_len))
            grad_u = fftconv_monarch.monarch_conv(grad_out, k_spec, fftconv_monarch.plan(seq_len), D, u.dtype)
        else:
            grad_u = _skip_rows(_inverse(g_spec.mul_(k_saved.conj()), n), grad_out, D, u.dtype)
        grad_d = torch.einsum("bct,bct->c", grad_out.float(), u.float()).to(D.dtype)
        return grad_u, grad_k, grad_d, None, None


# --------------------------------------------------------------------------------------------------------------
# Public functions (same signatures as fftconv_ref / hyena_mix_ref)
# --------------------------------------------------------------------------------------------------------------


def fftconv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor, *, fast: bool | None = None) -> torch.Tensor:
    """Causal long convolution plus skip term, fused; see ``fftconv_ref`` for the definition.

    u: (B, C, L) activations (any float dtype, any strides); k: (C, L) filter; D: (C,) skip weights.
    Returns (B, C, L) contiguous in u's dtype; differentiable in u, k and D. ``fast``: the dispatcher's mode
    choice; None asks it (``use_fast_mode``).
    """
    if u.dim() != 3 or k.dim() != 2 or k.shape[0] != u.shape[1] or k.shape[1] > u.shape[2]:
        raise ValueError(f"expected u (B, C, L), k (C, <=L); got {tuple(u.shape)} and {tuple(k.shape)}")
    if D.shape != (u.shape[1],):
        raise ValueError(f"D must be (C,) = ({u.shape[1]},), got {tuple(D.shape)}")
    if u.numel() == 0:
        return fftconv_ref(u, k, D)
    if fast is None:
        fast = use_fast_mode(u.dtype, u.shape[-1], needs_grad(u, k, D))
    return _FFTConv.apply(u, k, D, _uses_spectrum_cache(k), fast)


def hyena_mix(
    projected: torch.Tensor,
    short_weight: torch.Tensor,
    short_bias: torch.Tensor | None,
    k: torch.Tensor,
    D: torch.Tensor,
    *,
    fast: bool | None = None,
) -> torch.Tensor:
    """The Hyena (order 2) mixing between in_proj and out_proj, fused; see ``hyena_mix_ref``.

    projected: (B, L, 3C) = in_proj(x), any float dtype and strides (read in place, never transposed);
    short_weight: (3C, 1, K) causal depthwise conv; short_bias: (3C,) or None; k: (C, L) long filter;
    D: (C,) skip weights. Returns (B, L, C) contiguous in projected's dtype; differentiable in every tensor.
    ``fast``: the dispatcher's mode choice; None asks it (``use_fast_mode``).
    """
    _check_mix_args(projected, short_weight, k, D)
    if short_bias is None:
        short_bias = torch.zeros(short_weight.shape[0], dtype=short_weight.dtype, device=short_weight.device)
    if projected.numel() == 0:
        return hyena_mix_ref(projected, short_weight, short_bias, k, D)
    backward = needs_grad(projected, short_weight, short_bias, k, D)
    if fast is None:
        fast = use_fast_mode(projected.dtype, projected.shape[1], backward)
    out, _spectrum_saved = _mix_op(projected, short_weight, short_bias, k, D, _uses_spectrum_cache(k), fast, backward)
    return out
