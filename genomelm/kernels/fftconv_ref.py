"""Pure-PyTorch specification of the Hyena long convolution (DESIGN.md §5).

Every fused backend implements the same functions with the same signatures and is tested against these.
The FFT always runs in fp32 (whatever the activation dtype), as the official code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fft_size(seq_len: int) -> int:
    """Smallest power of two >= 2 * seq_len: a linear (not circular) causal convolution, and a fast FFT."""
    return 1 << max(1, (2 * seq_len - 1).bit_length())


def fftconv_ref(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Causal long convolution plus skip term: y[b, c, t] = sum_{s<=t} k[c, s] u[b, c, t-s] + D[c] u[b, c, t].

    u: (B, C, L) activations, any float dtype; k: (C, L) filter; D: (C,) skip weights.
    Returns (B, C, L) in u's dtype. The FFT runs in fp32 with a power-of-two size >= 2L.
    """
    seq_len = u.shape[-1]
    n = fft_size(seq_len)
    u32 = u.float()
    k_f = torch.fft.rfft(k.float(), n=n)  # (C, n/2+1)
    u_f = torch.fft.rfft(u32, n=n)  # (B, C, n/2+1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :seq_len]  # (B, C, L)
    y = y + u32 * D.float().unsqueeze(-1)
    return y.to(u.dtype)


def hyena_mix_ref(
    projected: torch.Tensor,
    short_weight: torch.Tensor,
    short_bias: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """The Hyena (order 2) mixing between in_proj and out_proj.

    projected: (B, L, 3C) = in_proj(x); short_weight: (3C, 1, K) causal depthwise conv; short_bias: (3C,);
    k: (C, L) long filter; D: (C,) skip weights. Returns (B, L, C):
        x0, x1, v = split(causal_conv(projected));  y = x0 * fftconv(x1 * v, k, D)
    """
    seq_len = projected.shape[1]
    channels = k.shape[0]
    taps = short_weight.shape[-1]
    u = projected.transpose(1, 2)  # (B, 3C, L)
    u = F.conv1d(u, short_weight, short_bias, padding=taps - 1, groups=u.shape[1])[..., :seq_len]
    x0, x1, v = u.split(channels, dim=1)  # each (B, C, L)
    y = fftconv_ref(v * x1, k, D)  # (B, C, L)
    return (y * x0).transpose(1, 2)  # (B, L, C)
