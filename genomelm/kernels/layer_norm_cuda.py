"""Fused residual add + LayerNorm (+ cast to the compute dtype) in Triton: forward and backward.

Same function and signature as ``add_layer_norm_ref`` (the specification). One pass reads the branch output x and
the fp32 residual, writes the new fp32 residual, the normalised rows in the compute dtype (bf16 under autocast,
so the next matrix product reads half the bytes and needs no cast pass) and two fp32 numbers per row (mean,
1/std) for the backward pass. The backward pass is one kernel over the rows: it writes the gradient of the
residual stream (and of x, in x's dtype) and per-program partial sums of the weight and bias gradients.

Both passes are torch custom ops (``genomelm::add_layer_norm`` and its backward) with fake implementations, so
torch.compile traces a Block through them without a graph break. Without triton this module raises ImportError
and the dispatcher uses the reference.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except Exception as exc:  # a broken triton install must also mean "backend unavailable", not a crash
    raise ImportError(f"triton is not usable: {exc}") from exc

from genomelm.kernels.layer_norm_ref import add_layer_norm_ref

__all__ = ["add_layer_norm"]

_TILE_ELEMENTS = 4096  # rows x padded width of one program's tile (16 rows of 256)
_MAX_WIDTH = 16384  # widest row held in registers
_BWD_TILES = 4  # row tiles per backward program: fewer partial sums of the weight gradients

# Testing aid: when True every output buffer starts filled with NaN, so an unwritten element shows up.
POISON_BUFFERS = False


def _empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if POISON_BUFFERS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------------------
# Triton kernels: rows of width D in tiles of (BLOCK_ROWS, BLOCK_D), D the contiguous axis
# --------------------------------------------------------------------------------------------------------------


@triton.jit
def _add_ln_fwd_kernel(
    x_ptr, r_ptr, w_ptr, b_ptr, out_ptr, res_ptr, mean_ptr, rstd_ptr,
    M, D, eps,
    HAS_X: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """res = r + x (fp32), out = (res - mean) * rstd * w + b in out's dtype; mean and rstd (M,) fp32."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    row_mask, col_mask = rows < M, cols < D
    mask = row_mask[:, None] & col_mask[None, :]
    offs = rows[:, None] * D + cols[None, :]
    res = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_X:
        res += tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(res_ptr + offs, res, mask=mask)
    mean = tl.sum(res, axis=1) / D  # (BLOCK_ROWS,)
    centred = tl.where(mask, res - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    out = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=row_mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@triton.jit
def _add_ln_bwd_kernel(
    dy_ptr, dres_ptr, res_ptr, w_ptr, mean_ptr, rstd_ptr, dr_ptr, dx_ptr, dw_ptr, db_ptr,
    M, D,
    HAS_DRES: tl.constexpr, HAS_X: tl.constexpr, TILES: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Backward of out = LN(res), res = r + x, plus the gradient dres that reaches res from later uses.

    dr = rstd (w dy - mean(w dy xhat) xhat - mean(w dy)) + dres, written to dr (r's dtype) and, if HAS_X, to dx
    (x's dtype); program pid does TILES consecutive tiles of rows and writes sum(dy xhat) and sum(dy) over them
    into row pid of dw, db (P, D) fp32 (partial sums, P = M / (TILES * BLOCK_ROWS), summed by the caller).
    """
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_ROWS, BLOCK_D), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_ROWS, BLOCK_D), dtype=tl.float32)
    for i in tl.static_range(TILES):
        rows = (pid.to(tl.int64) * TILES + i) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_mask = rows < M
        mask = row_mask[:, None] & col_mask[None, :]
        offs = rows[:, None] * D + cols[None, :]
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        res = tl.load(res_ptr + offs, mask=mask, other=0.0)
        xhat = tl.where(mask, (res - mean[:, None]) * rstd[:, None], 0.0)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        wdy = dy * w[None, :]
        c1 = tl.sum(xhat * wdy, axis=1) / D
        c2 = tl.sum(wdy, axis=1) / D
        dr = (wdy - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
        if HAS_DRES:
            dr += tl.load(dres_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(dr_ptr + offs, dr.to(dr_ptr.dtype.element_ty), mask=mask)
        if HAS_X:
            tl.store(dx_ptr + offs, dr.to(dx_ptr.dtype.element_ty), mask=mask)
        dw_acc += dy * xhat
        db_acc += dy
    tl.store(dw_ptr + pid * D + cols, tl.sum(dw_acc, axis=0), mask=col_mask)
    tl.store(db_ptr + pid * D + cols, tl.sum(db_acc, axis=0), mask=col_mask)


def _tile(width: int) -> tuple[int, int, int]:
    """(BLOCK_ROWS, BLOCK_D, num_warps) for rows of ``width``."""
    if width > _MAX_WIDTH:
        raise ValueError(f"add_layer_norm supports rows of up to {_MAX_WIDTH} elements, got {width}")
    block_d = triton.next_power_of_2(width)
    block_rows = max(1, _TILE_ELEMENTS // block_d)
    return block_rows, block_d, 8 if block_d >= 2048 else 4


# --------------------------------------------------------------------------------------------------------------
# Custom ops (what torch.compile sees) and their autograd
# --------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("genomelm::add_layer_norm", mutates_args=())
def _add_ln_op(
    x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(out, residual_out, mean, rstd) for contiguous (M, D) rows; see add_layer_norm."""
    rows, width = residual.shape
    out = _empty((rows, width), out_dtype, residual.device)
    res = _empty((rows, width), torch.float32, residual.device)
    mean = _empty((rows,), torch.float32, residual.device)
    rstd = _empty((rows,), torch.float32, residual.device)
    block_rows, block_d, warps = _tile(width)
    _add_ln_fwd_kernel[(triton.cdiv(rows, block_rows),)](
        x if x is not None else residual, residual, weight, bias, out, res, mean, rstd, rows, width, eps,
        HAS_X=x is not None, BLOCK_ROWS=block_rows, BLOCK_D=block_d, num_warps=warps,
    )  # fmt: skip
    return out, res, mean, rstd


@_add_ln_op.register_fake
def _(x, residual, weight, bias, eps, out_dtype):
    rows, width = residual.shape
    stats = residual.new_empty((rows,), dtype=torch.float32)
    return (
        residual.new_empty((rows, width), dtype=out_dtype),
        residual.new_empty((rows, width), dtype=torch.float32),
        stats,
        torch.empty_like(stats),
    )


@torch.library.custom_op("genomelm::add_layer_norm_backward", mutates_args=())
def _add_ln_bwd_op(
    grad_out: torch.Tensor, grad_res: torch.Tensor | None, res: torch.Tensor, weight: torch.Tensor,
    mean: torch.Tensor, rstd: torch.Tensor, residual_dtype: torch.dtype, x_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(grad residual, grad x (empty when x_dtype is None), grad weight, grad bias) for contiguous (M, D) rows."""
    rows, width = res.shape
    block_rows, block_d, warps = _tile(width)
    programs = triton.cdiv(rows, block_rows * _BWD_TILES)
    grad_r = _empty((rows, width), residual_dtype, res.device)
    grad_x = _empty((rows, width) if x_dtype is not None else (0,), x_dtype or res.dtype, res.device)
    partial_w = _empty((programs, width), torch.float32, res.device)
    partial_b = _empty((programs, width), torch.float32, res.device)
    _add_ln_bwd_kernel[(programs,)](
        grad_out, grad_res if grad_res is not None else grad_out, res, weight, mean, rstd, grad_r, grad_x,
        partial_w, partial_b, rows, width,
        HAS_DRES=grad_res is not None, HAS_X=x_dtype is not None, TILES=_BWD_TILES,
        BLOCK_ROWS=block_rows, BLOCK_D=block_d, num_warps=warps,
    )  # fmt: skip
    return grad_r, grad_x, partial_w.sum(0).to(weight.dtype), partial_b.sum(0).to(weight.dtype)


@_add_ln_bwd_op.register_fake
def _(grad_out, grad_res, res, weight, mean, rstd, residual_dtype, x_dtype):
    rows, width = res.shape
    grad_x_shape = (rows, width) if x_dtype is not None else (0,)
    return (
        res.new_empty((rows, width), dtype=residual_dtype),
        res.new_empty(grad_x_shape, dtype=x_dtype or res.dtype),
        weight.new_empty(weight.shape),
        weight.new_empty(weight.shape),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, residual, weight, _bias, _eps, _out_dtype = inputs
    _out, res, mean, rstd = output
    ctx.save_for_backward(res, weight, mean, rstd)
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zero-filled pass
    ctx.dtypes = (residual.dtype, None if x is None else x.dtype)


def _backward(ctx, grad_out, grad_res, _grad_mean, _grad_rstd):
    res, weight, mean, rstd = ctx.saved_tensors
    residual_dtype, x_dtype = ctx.dtypes
    if grad_out is None:
        grad_out = torch.zeros(res.shape, dtype=torch.float32, device=res.device)
    grad_r, grad_x, grad_w, grad_b = _add_ln_bwd_op(
        grad_out.contiguous(), None if grad_res is None else grad_res.contiguous(), res, weight, mean, rstd,
        residual_dtype, x_dtype,
    )  # fmt: skip
    return (grad_x if x_dtype is not None else None), grad_r, grad_w, grad_b, None, None


_add_ln_op.register_autograd(_backward, setup_context=_setup_context)


def add_layer_norm(
    x: torch.Tensor | None,
    residual: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add + LayerNorm + cast; see ``add_layer_norm_ref`` for the definition.

    x: (..., D) branch output or None; residual: (..., D); weight, bias: (D,). Returns (out (..., D) out_dtype,
    residual_out (..., D) fp32), both contiguous; differentiable in x, residual, weight and bias.
    """
    shape = residual.shape
    if x is not None and x.shape != shape:
        raise ValueError(f"x {tuple(x.shape)} and residual {tuple(shape)} differ")
    if weight.shape != shape[-1:] or bias.shape != shape[-1:]:
        raise ValueError(f"weight and bias must be ({shape[-1]},), got {tuple(weight.shape)}, {tuple(bias.shape)}")
    if residual.numel() == 0:
        return add_layer_norm_ref(x, residual, weight, bias, eps, out_dtype)
    rows = residual.reshape(-1, shape[-1]).contiguous()
    x_rows = None if x is None else x.reshape(-1, shape[-1]).contiguous()
    out, res, _mean, _rstd = _add_ln_op(x_rows, rows, weight.contiguous(), bias.contiguous(), float(eps), out_dtype)
    return out.view(shape), res.view(shape)
