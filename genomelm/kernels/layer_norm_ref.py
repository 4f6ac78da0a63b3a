"""Pure-PyTorch specification of the fused residual add + LayerNorm (+ cast) of the Hyena blocks.

The fused kernel (layer_norm_cuda) implements the same function with the same signature and is tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def add_layer_norm_ref(
    x: torch.Tensor | None,
    residual: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-norm step of a block: add a branch output to the residual stream, then normalise it.

    x: (..., D) branch output (any float dtype) or None (nothing to add); residual: (..., D) residual stream;
    weight, bias: (D,) LayerNorm affine parameters; eps: LayerNorm epsilon; out_dtype: dtype of the normalised
    output (the compute dtype of the next matrix product: bf16 under autocast, else the weights' dtype).
    Returns (out (..., D) out_dtype, residual_out (..., D) fp32) with residual_out = residual + x in fp32 and
    out = LayerNorm(residual_out) computed in fp32, rounded once to out_dtype.
    """
    residual_out = residual.float() if x is None else residual.float() + x.float()
    out = F.layer_norm(residual_out, residual_out.shape[-1:], weight.float(), bias.float(), eps)
    return out.to(out_dtype), residual_out
