"""One dispatcher for the long convolution (DESIGN.md house rule 2).

``backend``: "torch" (the reference, always available), "cuda" (fused Triton kernels, CUDA only), or
"auto" (cuda on a CUDA tensor when the fused backend imports, else torch). The environment variable
GENOMELM_CONV_BACKEND overrides the default "auto". An explicitly requested backend that cannot run
fails with an install hint; "auto" falls back to torch with one warning.
"""

from __future__ import annotations

import os
import warnings

import torch

from genomelm.kernels.fftconv_cpu import hyena_mix_cpu, map_row_blocks
from genomelm.kernels.fftconv_ref import fft_size, fftconv_ref, hyena_mix_ref

BACKENDS = ("auto", "torch", "cuda")
ENV_VAR = "GENOMELM_CONV_BACKEND"

__all__ = [
    "BACKENDS",
    "fft_size",
    "fftconv",
    "hyena_mix",
    "resolve_backend",
    "fftconv_ref",
    "hyena_mix_ref",
    "hyena_mix_cpu",
    "map_row_blocks",
]

_warned_fallback = False


def _cuda_backend():
    """The fused backend module, or None with the reason it cannot be used."""
    try:
        from genomelm.kernels import fftconv_cuda  # noqa: PLC0415  (optional: needs triton)
    except ImportError as exc:
        return None, f"the fused CUDA backend cannot be imported ({exc})"
    return fftconv_cuda, ""


def default_backend() -> str:
    """The backend named by GENOMELM_CONV_BACKEND, or 'auto'."""
    name = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={name!r} is not one of {', '.join(BACKENDS)}")
    return name


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """'torch' or 'cuda' for tensors on ``device``; raises RuntimeError for an impossible explicit choice."""
    global _warned_fallback
    name = default_backend() if backend is None else backend
    if name == "torch":
        return "torch"
    if name not in BACKENDS:
        raise ValueError(f"unknown conv backend {name!r} (choose from {', '.join(BACKENDS)})")
    module, reason = _cuda_backend() if device.type == "cuda" else (None, "tensors are not on a CUDA device")
    if module is not None:
        return "cuda"
    if name == "cuda":
        raise RuntimeError(
            f"conv backend 'cuda' requested but {reason}; install a CUDA build of torch with Triton "
            "(pip install torch triton) and run on a GPU, or use --conv-backend torch"
        )
    if device.type == "cuda" and not _warned_fallback:
        warnings.warn(f"{reason}; using the reference torch backend", stacklevel=2)
        _warned_fallback = True
    return "torch"


def fftconv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Causal FFT convolution (B, C, L) x (C, L) + D (C,) -> (B, C, L); see fftconv_ref."""
    if resolve_backend(backend, u.device) == "cuda":
        return _cuda_backend()[0].fftconv(u, k, D)
    return fftconv_ref(u, k, D)


def hyena_mix(projected, short_weight, short_bias, k, D, backend: str | None = None) -> torch.Tensor:
    """Short conv + gates + long conv of the Hyena operator, (B, L, 3C) -> (B, L, C); see hyena_mix_ref."""
    if resolve_backend(backend, projected.device) == "cuda":
        return _cuda_backend()[0].hyena_mix(projected, short_weight, short_bias, k, D)
    if projected.device.type == "cpu" and not torch.is_grad_enabled():
        return hyena_mix_cpu(projected, short_weight, short_bias, k, D)  # the reference, bitwise, in less memory
    return hyena_mix_ref(projected, short_weight, short_bias, k, D)
