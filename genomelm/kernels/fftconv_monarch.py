"""Fast mode of the CUDA backend: the long convolution as a Monarch-decomposed FFT on tensor cores (Triton).

An FFT of size N = R * S is a matrix product in three steps (Cooley-Tukey "four-step"): write the sequence as an
R x S row-major matrix X[r, s] = x[s + S r]; then

    B = F_R @ X            (a DFT of length R down every column)
    B[k_r, s] *= w_N^(s k_r)   (twiddle factors, w_N = exp(-2 pi i / N))
    C = B @ F_S            (a DFT of length S along every row);  C[k_r, k_s] = X_hat[k_r + R k_s]

Every DFT is a dense product with a small DFT matrix, which tensor cores do in bf16 with fp32 accumulation. The
convolution multiplies C by the filter spectrum stored in the same (permuted) order and runs the three steps
backwards with conjugated matrices; no step ever needs the natural frequency order.

Tensor cores multiply a register tile on either side, so a row of up to 8192 points (R x S up to 128 x 64) goes
through the column DFT (F_R @ X), the twiddles, the row DFT (B @ F_S), the filter and the inverse steps without
leaving registers (``_filter_in_registers``). Two shapes of the computation, both fusing the zero padding, the
crop to L and the skip term D u:

* N <= 8192 (L <= 4K): ONE kernel, one program per (batch, channel) row: one read of u, one write of y. (The
  issue asked for one kernel up to L = 16K: tiles of 256 x 128 spill registers in Triton; the first version, which
  staged them through an L2 scratch buffer, ran 1.7x slower than the three-pass split, see
  benchmarks/monarch_tuning.py.)
* N > 8192: N = Q * P with P = 4096 (8192 at L = 1M) and Q = 32 to 256. Pass 1 does the length-Q DFTs down the
  columns of the Q x P matrix (reading u), pass 2 does the register algorithm above on each of the Q rows of
  length P (complex in, complex out, in place, filter multiply in the middle), pass 3 undoes pass 1 (writing y).
  The bf16 complex Q x P intermediate travels through HBM twice.

Real input and causality are used: only the first half of each padded row is non-zero (N >= 2L), so the first
DFT reads half the rows of F, and only the first half of the output is kept, so the last DFT computes half.

Precision: each DFT rounds its operands (data and DFT matrix) to bf16 and accumulates in fp32; twiddles and the
filter multiply are fp32. The relative RMS error against an fp64 convolution is 3e-3 to 4e-3 (measured on an H200
up to L = 1M, on the shipped trained model's filters too). Use precise mode (fp32 cuFFT) when that is not enough.

The backward pass of fast mode (fftconv_cuda) runs the same kernels with the conjugated filter spectrum
(``conjugate``) for the input's gradient; the filter's gradient, a cross-spectrum summed over the batch, is
computed with cuFFT.

Under the Triton interpreter (TRITON_INTERPRET=1, for checking the index arithmetic on a CPU) bf16 tiles cannot
be multiplied: the operands are rounded to bf16 and multiplied as fp32 instead. The interpreter truncates when it
rounds to bf16, so its errors are about 2.5x those of a GPU.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except Exception as exc:  # same contract as fftconv_cuda: no usable triton means the backend is unavailable
    raise ImportError(f"triton is not usable: {exc}") from exc

from genomelm.kernels.fftconv_ref import fft_size

__all__ = ["MonarchPlan", "plan", "filter_spectrum", "conjugate", "monarch_conv"]

MAX_ONE_PASS = 8192  # largest FFT size done by one kernel (L <= 4K): larger register tiles spill
INNER = 4096  # row length of pass 2 when there are outer passes
MAX_OUTER = 256  # longest outer DFT (n up to 2**21: L = 1M)
MIN_FFT = 512  # smallest FFT size: R >= 32 so that the half-height products are at least 16 deep (tl.dot minimum)
_TWO_PI = 2.0 * math.pi
_COMPILED = os.environ.get("TRITON_INTERPRET", "0") != "1"

# Testing aid (as in fftconv_cuda): when True every buffer, the output included, starts filled with NaN.
POISON_BUFFERS = False


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if POISON_BUFFERS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


@dataclass(frozen=True)
class MonarchPlan:
    """How an FFT of size n = outer * rows * cols is split. outer == 1: one kernel."""

    n: int
    outer: int  # Q: length of the DFTs of passes 1 and 3 (1 when there is no outer pass)
    rows: int  # R: length of the column DFTs inside a row of length rows * cols
    cols: int  # S: length of the row DFTs

    @property
    def inner(self) -> int:
        return self.rows * self.cols


def plan(seq_len: int) -> MonarchPlan:
    """The split used for sequences of ``seq_len`` (a power-of-two FFT size of at least 2 * seq_len).

    Sizes measured best on an H200 (benchmarks/monarch_tuning.py): one kernel up to n = 8192; beyond, inner rows
    of 4096 (64 x 64) with Q = n / 4096 outer DFTs (at least 32, at most 256: rows of 8192 at n = 2**21).
    """
    n = max(fft_size(seq_len), MIN_FFT)
    one_pass = TUNING.get("max_one_pass", MAX_ONE_PASS)
    outer = 1 if n <= one_pass else min(MAX_OUTER, max(32, n // TUNING.get("inner", INNER)))
    inner = n // outer
    rows = 1 << ((inner.bit_length() - 1 + 1) // 2)  # the larger half of the exponent: rows >= cols
    return MonarchPlan(n=n, outer=outer, rows=rows, cols=inner // rows)


# --------------------------------------------------------------------------------------------------------------
# Triton helpers (tile arithmetic)
# --------------------------------------------------------------------------------------------------------------


@triton.jit
def _operand(x, COMPILED: tl.constexpr):
    """A tensor-core operand: x rounded to bf16 (kept as fp32 values under the interpreter)."""
    x = x.to(tl.bfloat16)
    if not COMPILED:
        x = x.to(tl.float32)
    return x


@triton.jit
def _twiddle(a, b, n, SIGN: tl.constexpr, COMPILED: tl.constexpr):
    """(cos, sin) of SIGN * 2 pi a b / n for int tiles a (X, 1) and b (1, Y) with a * b < n < 2**31.

    The angle is reduced to [-pi, pi] exactly (in integers), where the hardware's approximate sin/cos are good to
    about 1e-6: the accurate libdevice versions carry a slow path for huge arguments whose stack spills registers.
    """
    m = a * b
    m = tl.where(m > n // 2, m - n, m)  # same angle modulo 2 pi, now in [-pi, pi]
    angle = m.to(tl.float32) * (SIGN * 6.283185307179586 / n)
    if COMPILED:
        return libdevice.fast_cosf(angle), libdevice.fast_sinf(angle)
    return tl.cos(angle), tl.sin(angle)


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _load_dft(f_ptr, M, rows, cols, COMPILED: tl.constexpr):
    """Tiles (re, im) of the M x M DFT matrix stored as planes (2, M, M) at rows x cols (index tiles)."""
    off = rows[:, None] * M + cols[None, :]
    fr = _operand(tl.load(f_ptr + off), COMPILED)
    fi = _operand(tl.load(f_ptr + M * M + off), COMPILED)
    return fr, fi


@triton.jit
def _column_dft_real(
    u_ptr, stride, p, L, Q: tl.constexpr, P: tl.constexpr, f_ptr,
    BP: tl.constexpr, BK: tl.constexpr, COMPILED: tl.constexpr,
):  # fmt: skip
    """F_Q @ X[:, p] for the column block p (BP,) of the Q x P matrix X[q, p] = u[q * P + p] (u zero past L).

    Only rows q < Q/2 are read: the rest is the zero padding (N >= 2L). Returns fp32 (re, im), each (Q, BP).
    """
    k_q = tl.arange(0, Q)
    acc_r = tl.zeros((Q, BP), dtype=tl.float32)
    acc_i = tl.zeros((Q, BP), dtype=tl.float32)
    for q0 in tl.static_range(0, Q // 2, BK):
        q = q0 + tl.arange(0, BK)
        pos = q[:, None] * P + p[None, :]
        fr, fi = _load_dft(f_ptr, Q, k_q, q, COMPILED)
        x = _operand(tl.load(u_ptr + pos.to(tl.int64) * stride, mask=pos < L, other=0.0), COMPILED)
        acc_r = tl.dot(fr, x, acc_r)
        acc_i = tl.dot(fi, x, acc_i)
    return acc_r, acc_i


@triton.jit
def _filter_in_registers(
    xr, xi, k_ptr, fr_ptr, fs_ptr, R: tl.constexpr, S: tl.constexpr,
    REAL_IO: tl.constexpr, COMPILED: tl.constexpr,
):  # fmt: skip
    """The whole length-P (P = R * S) FFT, filter multiply and inverse FFT on register tiles, no memory round trip.

    Complex input: xr, xi (R, S) = X[r, s] = x[s + S r]; returns (R, S) (re, im). Real input (REAL_IO): xr is the
    non-zero first half (R/2, S), xi is ignored; returns the real first half (R/2, S) of the result, twice.
    Tensor cores multiply on either side of a register tile, so the column DFT (F_R @ X) and the row DFT (B @ F_S)
    need no transpose.
    """
    P: tl.constexpr = R * S
    r = tl.arange(0, R)
    cols = tl.arange(0, S)
    half = tl.arange(0, R // 2)
    gr, gi = _load_dft(fs_ptr, S, cols, cols, COMPILED)
    if REAL_IO:
        fr, fi = _load_dft(fr_ptr, R, r, half, COMPILED)  # F_R[:, :R/2]: the padding rows are zero
        x = _operand(xr, COMPILED)
        br = tl.dot(fr, x)
        bi = tl.dot(fi, x)
    else:
        fr, fi = _load_dft(fr_ptr, R, r, r, COMPILED)
        x_r = _operand(xr, COMPILED)
        x_i = _operand(xi, COMPILED)
        br = tl.dot(fr, x_r)
        br = tl.dot(-fi, x_i, br)
        bi = tl.dot(fr, x_i)
        bi = tl.dot(fi, x_r, bi)
    tr, ti = _twiddle(r[:, None], cols[None, :], P, -1.0, COMPILED)
    br, bi = _cmul(br, bi, tr, ti)
    b_r = _operand(br, COMPILED)
    b_i = _operand(bi, COMPILED)
    cr = tl.dot(b_r, gr)
    cr = tl.dot(-b_i, gi, cr)
    ci = tl.dot(b_r, gi)
    ci = tl.dot(b_i, gr, ci)
    off = r[:, None] * S + cols[None, :]
    yr, yi = _cmul(cr, ci, tl.load(k_ptr + off), tl.load(k_ptr + P + off))
    y_r = _operand(yr, COMPILED)
    y_i = _operand(yi, COMPILED)
    zr = tl.dot(y_r, gr)  # Y @ conj(F_S)
    zr = tl.dot(y_i, gi, zr)
    zi = tl.dot(y_i, gr)
    zi = tl.dot(-y_r, gi, zi)
    zr, zi = _cmul(zr, zi, tr, -ti)
    z_r = _operand(zr, COMPILED)
    z_i = _operand(zi, COMPILED)
    if REAL_IO:  # (no early return: Triton compiles the code after a return in a constexpr branch too)
        hr, hi = _load_dft(fr_ptr, R, half, r, COMPILED)  # conj(F_R)[:R/2]: only the first half is kept
        out_r = tl.dot(hr, z_r)
        out_r = tl.dot(hi, z_i, out_r)
        out_i = out_r
    else:
        out_r = tl.dot(fr, z_r)  # conj(F_R) @ Z
        out_r = tl.dot(fi, z_i, out_r)
        out_i = tl.dot(fr, z_i)
        out_i = tl.dot(-fi, z_r, out_i)
    return out_r, out_i


@triton.jit
def _store_planes(dst_ptr, plane, off, re, im):
    tl.store(dst_ptr + off, re.to(dst_ptr.dtype.element_ty))
    tl.store(dst_ptr + plane + off, im.to(dst_ptr.dtype.element_ty))


# --------------------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["L"])
def _outer_forward_kernel(
    u_ptr, buf_ptr, fq_ptr,
    L, B, s_ub, s_uc, s_ul,
    Q: tl.constexpr, P: tl.constexpr, BP: tl.constexpr, BK: tl.constexpr, COMPILED: tl.constexpr,
):  # fmt: skip
    """Pass 1 (N = Q * P): buf[row, k_q, :, p] = w_N^(p k_q) * sum_q F_Q[k_q, q] u[q * P + p], for a block of p.

    buf is (rows, Q, 2, P): for every k_q a contiguous complex row (two planes) that pass 2 transforms in place.
    """
    row = tl.program_id(1)
    c = row // B
    b = row - c * B
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    u_row = u_ptr + b.to(tl.int64) * s_ub + c.to(tl.int64) * s_uc
    zr, zi = _column_dft_real(u_row, s_ul, p, L, Q, P, fq_ptr, BP, BK, COMPILED)
    k_q = tl.arange(0, Q)[:, None]
    tr, ti = _twiddle(k_q, p[None, :], Q * P, -1.0, COMPILED)
    zr, zi = _cmul(zr, zi, tr, ti)
    _store_planes(buf_ptr + row.to(tl.int64) * (2 * Q * P), P, k_q * (2 * P) + p[None, :], zr, zi)


@triton.jit(do_not_specialize=["L"])
def _one_pass_kernel(
    u_ptr, k_ptr, d_ptr, y_ptr, fr_ptr, fs_ptr,
    L, B, s_ub, s_uc, s_ul, s_yb, s_yc,
    R: tl.constexpr, S: tl.constexpr, HAS_D: tl.constexpr, COMPILED: tl.constexpr,
):  # fmt: skip
    """y[b, c, :L] = causal_conv(u[b, c, :L], k[c]) (+ D[c] u) for N = R * S <= 8192: one program per row, the
    whole row in registers. Program id = c * B + b (batch-mates side by side share the filter spectrum in L2)."""
    P: tl.constexpr = R * S
    row = tl.program_id(0)
    c = row // B
    b = row - c * B
    pos = tl.arange(0, R // 2)[:, None] * S + tl.arange(0, S)[None, :]
    u_row = u_ptr + b.to(tl.int64) * s_ub + c.to(tl.int64) * s_uc
    u = tl.load(u_row + pos.to(tl.int64) * s_ul, mask=pos < L, other=0.0)
    y, _ = _filter_in_registers(u, u, k_ptr + c.to(tl.int64) * (2 * P), fr_ptr, fs_ptr, R, S, True, COMPILED)
    if HAS_D:
        y += tl.load(d_ptr + c).to(tl.float32) * u.to(tl.float32)
    y_row = y_ptr + b.to(tl.int64) * s_yb + c.to(tl.int64) * s_yc
    tl.store(y_row + pos, y.to(y_ptr.dtype.element_ty), mask=pos < L)


@triton.jit
def _inner_kernel(
    buf_ptr, k_ptr, fr_ptr, fs_ptr, B,
    Q: tl.constexpr, R: tl.constexpr, S: tl.constexpr, COMPILED: tl.constexpr,
):  # fmt: skip
    """Pass 2 (N = Q * P, P = R * S <= 8192): for one (row, k_q), the length-P DFT of buf's complex row, the filter
    multiply and the inverse DFT, in registers and in place. Program id = b + B * (k_q + Q * c)."""
    P: tl.constexpr = R * S
    pid = tl.program_id(0)
    b = pid % B
    k_q = (pid // B) % Q
    c = pid // (B * Q)
    row = c * B + b
    base = buf_ptr + (row.to(tl.int64) * Q + k_q) * (2 * P)
    off = tl.arange(0, R)[:, None] * S + tl.arange(0, S)[None, :]
    xr = tl.load(base + off).to(tl.float32)
    xi = tl.load(base + P + off).to(tl.float32)
    k_row = k_ptr + (c.to(tl.int64) * Q + k_q) * (2 * P)
    zr, zi = _filter_in_registers(xr, xi, k_row, fr_ptr, fs_ptr, R, S, False, COMPILED)
    _store_planes(base, P, off, zr, zi)


@triton.jit(do_not_specialize=["L"])
def _outer_inverse_kernel(
    buf_ptr, u_ptr, d_ptr, y_ptr, fq_ptr,
    L, B, s_ub, s_uc, s_ul, s_yb, s_yc,
    Q: tl.constexpr, P: tl.constexpr, HAS_D: tl.constexpr,
    BP: tl.constexpr, BK: tl.constexpr, COMPILED: tl.constexpr,
):  # fmt: skip
    """Pass 3: y[q * P + p] = Re(sum_k conj(F_Q)[q, k] conj(w_N^(p k)) buf[row, k, :, p]) for q < Q/2 (+ D u)."""
    row = tl.program_id(1)
    c = row // B
    b = row - c * B
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    base = buf_ptr + row.to(tl.int64) * (2 * Q * P)
    q = tl.arange(0, Q // 2)
    acc = tl.zeros((Q // 2, BP), dtype=tl.float32)
    for k0 in tl.static_range(0, Q, BK):
        k_q = k0 + tl.arange(0, BK)
        off = k_q[:, None] * (2 * P) + p[None, :]
        tr, ti = _twiddle(k_q[:, None], p[None, :], Q * P, 1.0, COMPILED)
        zr, zi = _cmul(tl.load(base + off).to(tl.float32), tl.load(base + P + off).to(tl.float32), tr, ti)
        fr, fi = _load_dft(fq_ptr, Q, q, k_q, COMPILED)
        acc = tl.dot(fr, _operand(zr, COMPILED), acc)
        acc = tl.dot(fi, _operand(zi, COMPILED), acc)
    pos = q[:, None] * P + p[None, :]
    if HAS_D:
        u_row = u_ptr + b.to(tl.int64) * s_ub + c.to(tl.int64) * s_uc
        u = tl.load(u_row + pos.to(tl.int64) * s_ul, mask=pos < L, other=0.0).to(tl.float32)
        acc += tl.load(d_ptr + c).to(tl.float32) * u
    y_row = y_ptr + b.to(tl.int64) * s_yb + c.to(tl.int64) * s_yc
    tl.store(y_row + pos, acc.to(y_ptr.dtype.element_ty), mask=pos < L)


# --------------------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _dft_matrix(size: int, device: torch.device) -> torch.Tensor:
    """(2, size, size) bf16 planes of F[j, k] = exp(-2 pi i j k / size), computed in fp64 then rounded once."""
    jk = torch.outer(torch.arange(size, dtype=torch.int64), torch.arange(size, dtype=torch.int64)) % size
    angle = jk.to(torch.float64) * (-_TWO_PI / size)
    return torch.stack([angle.cos(), angle.sin()]).to(device=device, dtype=torch.bfloat16).contiguous()


def filter_spectrum(k: torch.Tensor, p: MonarchPlan) -> torch.Tensor:
    """The filter's spectrum in the kernels' order: (C, Q, 2, R, S) fp32 with 1/N folded in.

    Entry [c, k_q, :, k_r, k_s] is FFT(k[c], n)[k_q + Q (k_r + R k_s)] / n, split into real and imaginary planes.
    """
    channels = k.shape[0]
    spec = torch.fft.fft(k.float(), n=p.n) / p.n  # (C, n) complex64
    spec = spec.reshape(channels, p.cols, p.rows, p.outer).permute(0, 3, 2, 1)  # (C, Q, R, S)
    return torch.stack([spec.real, spec.imag], dim=2).contiguous()


def conjugate(k_spec: torch.Tensor) -> torch.Tensor:
    """The conjugate of a ``filter_spectrum``: ``monarch_conv`` with it is the causal correlation
    g[t] = sum_{s >= t} k[s - t] x[s] (the gradient of the convolution with respect to its input).

    Why that holds: k is real, so conj(FFT(k))[f] = FFT(k reversed modulo n)[f]; with n >= 2L the reversed filter
    reaches back into the zero padding only, so the first L outputs of the circular product are exact.
    """
    sign = k_spec.new_tensor([1.0, -1.0]).view(1, 1, 2, 1, 1)
    return k_spec * sign


LAST_KERNELS: list = []  # the compiled kernels of the last call (register and spill counts)
TUNING: dict = {}  # development overrides of plan() and the warps (keys: max_one_pass, inner, register_warps)


def _register_warps(p: MonarchPlan) -> int:
    """Warps of the register kernels: 4 up to 64 x 64 tiles (1.7x faster than 8 at 64 x 64 on an H200, no
    spills), 8 for 128 x 64 (4 warps spill there)."""
    return TUNING.get("register_warps", 4 if p.inner <= 4096 else 8)


def monarch_conv(
    u: torch.Tensor, k_spec: torch.Tensor, p: MonarchPlan, D: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """y = causal_conv(u, k) (+ D u) for u (B, C, L) with any strides; k_spec from ``filter_spectrum``.

    Returns (B, C, L) contiguous ``out_dtype``.
    """
    batch, channels, seq_len = u.shape
    if p.n < 2 * seq_len or k_spec.shape != (channels, p.outer, 2, p.rows, p.cols):
        raise ValueError(f"plan {p} and filter spectrum {tuple(k_spec.shape)} do not fit u {tuple(u.shape)}")
    y = _empty((batch, channels, seq_len), out_dtype, u.device)
    rows_total = batch * channels
    f_rows, f_cols = _dft_matrix(p.rows, u.device), _dft_matrix(p.cols, u.device)
    d = D if D is not None else u.new_zeros(1)
    if p.outer == 1:
        LAST_KERNELS[:] = [_one_pass_kernel[(rows_total,)](
            u, k_spec, d, y, f_rows, f_cols, seq_len, batch, *u.stride(), *y.stride()[:2],
            R=p.rows, S=p.cols, HAS_D=D is not None, COMPILED=_COMPILED, num_warps=_register_warps(p),
        )]  # fmt: skip
        return y
    f_outer = _dft_matrix(p.outer, u.device)
    buf = _empty((rows_total, p.outer, 2, p.inner), torch.bfloat16, u.device)
    block_p = min(128, 4096 // p.outer)  # keeps the (Q, BP) complex accumulator at 32 KB
    outer_grid = (p.inner // block_p, rows_total)
    bk_outer = min(32, p.outer // 2)
    outer_warps = 8 if p.outer >= 128 else 4
    k1 = _outer_forward_kernel[outer_grid](
        u, buf, f_outer, seq_len, batch, *u.stride(),
        Q=p.outer, P=p.inner, BP=block_p, BK=bk_outer, COMPILED=_COMPILED, num_warps=outer_warps,
    )  # fmt: skip
    k2 = _inner_kernel[(rows_total * p.outer,)](
        buf, k_spec, f_rows, f_cols, batch, Q=p.outer, R=p.rows, S=p.cols, COMPILED=_COMPILED,
        num_warps=_register_warps(p),
    )  # fmt: skip
    k3 = _outer_inverse_kernel[outer_grid](
        buf, u, d, y, f_outer, seq_len, batch, *u.stride(), *y.stride()[:2],
        Q=p.outer, P=p.inner, HAS_D=D is not None, BP=block_p, BK=bk_outer, COMPILED=_COMPILED,
        num_warps=outer_warps,
    )  # fmt: skip
    LAST_KERNELS[:] = [k1, k2, k3]
    return y
