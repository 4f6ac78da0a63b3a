"""Pure-PyTorch specification of the MLP's first projection with its activation: GELU(tanh)(x W^T + b).

The fused version (mlp_cuda) computes the same function with the same signature and is tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_gelu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (the official HyenaDNA MLP's) of the affine map x W^T + b.

    x: (..., K); weight: (N, K); bias: (N,). Returns (..., N) in the dtype F.linear gives (bf16 under bf16 autocast,
    else the inputs' dtype): the product is rounded to that dtype, then the activation is applied and rounded again.
    """
    return F.gelu(F.linear(x, weight, bias), approximate="tanh")
