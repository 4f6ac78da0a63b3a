"""The MLP's first projection with bias and GELU(tanh) in the GEMM's epilogue (cuBLASLt, through torch).

Same function and signature as ``linear_gelu_ref`` (the specification). ``torch._addmm_activation(..., use_gelu=True)``
runs cuBLASLt's GELU_BIAS epilogue on CUDA: bias and the tanh-approximated GELU are applied to the fp32 accumulator
before the one store, so the (..., N) pre-activation is never written or read back (the reference writes it,
reads it for the GELU, writes the result). On the CPU that op computes the erf GELU instead, so this module is
only ever called with CUDA tensors (the dispatcher sees to it).

Autograd: cuBLASLt could also store the pre-activation for GELU's backward (its GELU_AUX epilogue), but torch does
not expose it; the backward pass recomputes the pre-activation with one GEMM instead. It is correct (tested) and
keeps (..., K) inputs rather than the (..., 4K) pre-activation per block, but measured slower than the reference
in training (kernels.use_gemm_epilogue), so the dispatcher sends only bf16 inference here.
"""

from __future__ import annotations

import torch

from genomelm.kernels.mlp_ref import linear_gelu_ref

__all__ = ["linear_gelu"]

# Testing aid: when True the output buffer starts filled with NaN, so an unwritten element shows up.
POISON_BUFFERS = False


def _gemm_gelu(x2d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(M, K) x (N, K)^T + (N,) -> GELU(tanh), (M, N), all in one dtype, through the GELU_BIAS epilogue."""
    if POISON_BUFFERS:
        out = torch.full((x2d.shape[0], weight.shape[0]), float("nan"), dtype=x2d.dtype, device=x2d.device)
        return torch._addmm_activation(bias, x2d, weight.t(), use_gelu=True, out=out)
    return torch._addmm_activation(bias, x2d, weight.t(), use_gelu=True)


class _LinearGelu(torch.autograd.Function):
    """Forward through the epilogue; backward recomputes the pre-activation (see the module docstring)."""

    @staticmethod
    def forward(ctx, x2d, weight, bias):
        ctx.save_for_backward(x2d, weight, bias)
        return _gemm_gelu(x2d, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x2d, weight, bias = ctx.saved_tensors
        pre = torch.addmm(bias, x2d, weight.t())  # (M, N): the pre-activation, rounded as the reference's
        grad_pre = torch.ops.aten.gelu_backward(grad_out.contiguous(), pre, approximate="tanh")
        grad_x = grad_pre @ weight if ctx.needs_input_grad[0] else None  # (M, K)
        grad_w = grad_pre.t() @ x2d if ctx.needs_input_grad[1] else None  # (N, K)
        accumulate = torch.promote_types(bias.dtype, torch.float32)  # bf16 rows summed in fp32, rounded once
        grad_b = grad_pre.sum(0, dtype=accumulate).to(bias.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """What F.linear would compute in: autocast's dtype on x's device when enabled, else the weights' dtype."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return weight.dtype


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(tanh)(x W^T + b) with the GEMM's epilogue doing bias and activation; see ``linear_gelu_ref``.

    x: (..., K) CUDA tensor; weight: (N, K); bias: (N,). Returns (..., N) in the dtype F.linear gives (bf16 under
    bf16 autocast). Differentiable in x, weight and bias (the casts below carry gradients back to fp32 weights).
    """
    dtype = _compute_dtype(x, weight)
    if x.numel() == 0:
        return linear_gelu_ref(x, weight, bias)
    if not x.is_cuda:
        raise ValueError("linear_gelu (cuBLASLt epilogue) needs CUDA tensors; use linear_gelu_ref on the CPU")
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise RuntimeError(f"x is {x.dtype} but the weight is {weight.dtype} (as F.linear: no implicit cast)")
    x2d = x.reshape(-1, x.shape[-1]).to(dtype).contiguous()  # (M, K)
    w, b = weight.to(dtype), bias.to(dtype)
    with torch.autocast(x.device.type, enabled=False):  # inputs already in the compute dtype: no recast inside
        if torch.is_grad_enabled() and (x2d.requires_grad or w.requires_grad or b.requires_grad):
            out = _LinearGelu.apply(x2d, w, b)
        else:
            out = _gemm_gelu(x2d, w, b)
    return out.view(*x.shape[:-1], weight.shape[0])
