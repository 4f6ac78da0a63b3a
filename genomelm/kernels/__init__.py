"""The one dispatcher of the fused kernels (DESIGN.md house rule 2): backend AND mode.

``backend``: "torch" (the reference, always available), "cuda" (fused Triton kernels, CUDA only), or
"auto" (cuda on a CUDA tensor when the fused backend imports, else torch). The environment variable
GENOMELM_CONV_BACKEND overrides the default "auto". An explicitly requested backend that cannot run
fails with an install hint; "auto" falls back to torch with one warning.

``mode`` of the cuda backend's long convolution: "precise" (fp32 cuFFT) or "fast" (bf16 Monarch FFT on tensor
cores); "auto" (default, GENOMELM_CONV_MODE overrides it) picks fast mode where it was measured faster
(``use_fast_mode``). The cuda module asks this dispatcher when it is called directly.

Every public function here has the signature of its ``*_ref`` specification plus ``backend``; the choices are
plain Python decisions that torch.compile folds into its guards (no graph break: see ``_traceable_constant``).
"""

from __future__ import annotations

import os
import warnings

import torch

from genomelm.kernels.fftconv_cpu import hyena_mix_cpu, map_row_blocks
from genomelm.kernels.fftconv_ref import fft_size, fftconv_ref, hyena_mix_ref
from genomelm.kernels.layer_norm_ref import add_layer_norm_ref
from genomelm.kernels.mlp_ref import linear_gelu_ref

BACKENDS = ("auto", "torch", "cuda")
ENV_VAR = "GENOMELM_CONV_BACKEND"
COMPILE_ENV_VAR = "GENOMELM_COMPILE"  # 1: torch.compile the model's blocks (the CLI's --compile sets it)
MODES = ("auto", "precise", "fast")
MODE_ENV_VAR = "GENOMELM_CONV_MODE"
# auto picks fast mode for bf16/fp16 inference from FAST_AUTO_MIN_LEN to FAST_AUTO_MAX_LEN tokens, where the fast
# Hyena operator beat precise mode on an H200 (1.0-1.9x, benchmarks/fftconv_bench.py) and end-to-end bf16
# embedding gained 19-37%. Shorter inputs were not reliably faster: the filter spectrum in fast mode's order costs
# more to compute, and the benchmark recomputes it on every call. At 1M tokens the two modes are about equal.
# Training stays precise under auto until fast mode's backward (the Monarch kernels for the input's gradient,
# cuFFT for the filter's: fftconv_cuda) has been measured faster on a GPU (benchmarks/fast_backward.py);
# GENOMELM_CONV_MODE=fast trains with it.
FAST_AUTO_MIN_LEN = 16384
FAST_AUTO_MAX_LEN = 262144

__all__ = [
    "BACKENDS",
    "MODES",
    "add_layer_norm",
    "add_layer_norm_ref",
    "cached_inference_tensors",
    "compile_requested",
    "fft_size",
    "fftconv",
    "fftconv_ref",
    "hyena_mix",
    "hyena_mix_cpu",
    "hyena_mix_ref",
    "linear_gelu",
    "linear_gelu_ref",
    "use_gemm_epilogue",
    "map_row_blocks",
    "prepare_for_compile",
    "resolve_backend",
    "use_fast_mode",
]

_warned_fallback = False
_fused: list = []  # after the first import attempt: [fftconv_cuda, layer_norm_cuda, mlp_cuda (or Nones), reason]


_TRACEABLE_CONSTANTS: list[str] = []  # names of the functions prepare_for_compile() wraps


def _traceable_constant(fn):
    """Mark fn (it reads the environment) for prepare_for_compile(); the function itself is returned as is."""
    _TRACEABLE_CONSTANTS.append(fn.__name__)
    return fn


def prepare_for_compile() -> None:
    """Let torch.compile treat the marked functions' results as constants of the traced graph (no graph break).

    Done on demand, before compiling, not at import: torch.compiler.assume_constant_result loads torch._dynamo,
    about 1 s and 70 MB at the start of every command, most of which never compile. Idempotent.
    """
    compiler = getattr(torch, "compiler", None)
    if not hasattr(compiler, "assume_constant_result"):
        return
    namespace = globals()
    for name in _TRACEABLE_CONSTANTS:
        if not getattr(namespace[name], "_genomelm_constant", False):
            wrapped = compiler.assume_constant_result(namespace[name])
            wrapped._genomelm_constant = True
            namespace[name] = wrapped


def _cuda_backend():
    """The fused backend module, or None with the reason it cannot be used (the import is tried once)."""
    if not _fused:
        try:
            from genomelm.kernels import fftconv_cuda, layer_norm_cuda, mlp_cuda  # noqa: PLC0415  (needs triton)
        except ImportError as exc:
            _fused[:] = [None, None, None, f"the fused CUDA backend cannot be imported ({exc})"]
        else:
            _fused[:] = [fftconv_cuda, layer_norm_cuda, mlp_cuda, ""]
    return _fused[0], _fused[3]


def _fused_module(index: int):
    """The imported fused module at ``index`` of _fused (0: fftconv_cuda, 1: layer_norm_cuda, 2: mlp_cuda)."""
    _cuda_backend()
    return _fused[index]


def _env_choice(variable: str, choices: tuple[str, ...]) -> str:
    """The value of ``variable`` (case-insensitive), one of ``choices``; unset or empty means choices[0]."""
    name = os.environ.get(variable, choices[0]).strip().lower() or choices[0]
    if name not in choices:
        raise ValueError(f"{variable}={name!r} is not one of {', '.join(choices)}")
    return name


@_traceable_constant
def default_backend() -> str:
    """The backend named by GENOMELM_CONV_BACKEND, or 'auto'."""
    return _env_choice(ENV_VAR, BACKENDS)


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


@_traceable_constant
def conv_mode() -> str:
    """The mode named by GENOMELM_CONV_MODE: auto (default), precise or fast."""
    return _env_choice(MODE_ENV_VAR, MODES)


def use_fast_mode(dtype: torch.dtype, seq_len: int, needs_grad: bool = False) -> bool:
    """Fast (bf16 Monarch) or precise (fp32 cuFFT) for activations of ``dtype`` and length ``seq_len``.

    auto: fast for bf16/fp16 activations (--precision bf16) of FAST_AUTO_MIN_LEN to FAST_AUTO_MAX_LEN tokens when no
    gradient is needed, precise otherwise; GENOMELM_CONV_MODE=precise|fast forces one mode for every call.
    """
    mode = conv_mode()
    if mode != "auto":
        return mode == "fast"
    low_precision = dtype in (torch.bfloat16, torch.float16)
    return low_precision and FAST_AUTO_MIN_LEN <= seq_len <= FAST_AUTO_MAX_LEN and not needs_grad


def compile_requested() -> bool:
    """True when GENOMELM_COMPILE (or the CLI's --compile) asks for torch.compile'd blocks."""
    return os.environ.get(COMPILE_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd will want a gradient of any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def fftconv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Causal FFT convolution (B, C, L) x (C, L) + D (C,) -> (B, C, L); see fftconv_ref."""
    if resolve_backend(backend, u.device) == "cuda":
        fast = use_fast_mode(u.dtype, u.shape[-1], needs_grad(u, k, D))
        return _fused_module(0).fftconv(u, k, D, fast=fast)
    return fftconv_ref(u, k, D)


def hyena_mix(projected, short_weight, short_bias, k, D, backend: str | None = None) -> torch.Tensor:
    """Short conv + gates + long conv of the Hyena operator, (B, L, 3C) -> (B, L, C); see hyena_mix_ref."""
    if resolve_backend(backend, projected.device) == "cuda":
        fast = use_fast_mode(projected.dtype, projected.shape[1], needs_grad(projected, short_weight, short_bias, k, D))
        return _fused_module(0).hyena_mix(projected, short_weight, short_bias, k, D, fast=fast)
    if projected.device.type == "cpu" and not torch.is_grad_enabled():
        return hyena_mix_cpu(projected, short_weight, short_bias, k, D)  # the reference, bitwise, in less memory
    return hyena_mix_ref(projected, short_weight, short_bias, k, D)


def add_layer_norm(x, residual, weight, bias, eps: float, out_dtype: torch.dtype, backend: str | None = None):
    """(residual + x) in fp32 and its LayerNorm cast to ``out_dtype``, (..., D) -> both; see add_layer_norm_ref."""
    if resolve_backend(backend, residual.device) == "cuda":
        return _fused_module(1).add_layer_norm(x, residual, weight, bias, eps, out_dtype)
    return add_layer_norm_ref(x, residual, weight, bias, eps, out_dtype)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """GELU(tanh)(x W^T + b), (..., K) -> (..., N): the MLP's first projection; see linear_gelu_ref.

    cuda: bias and GELU in the GEMM's cuBLASLt epilogue where it was measured faster (``use_gemm_epilogue``): bf16
    inference. Everything else, and always the CPU (torch's CPU op for the epilogue computes the erf GELU), takes
    the reference.
    """
    if resolve_backend(backend, x.device) == "cuda" and use_gemm_epilogue(x, weight, needs_grad(x, weight, bias)):
        return _fused_module(2).linear_gelu(x, weight, bias)
    return linear_gelu_ref(x, weight, bias)


def use_gemm_epilogue(x: torch.Tensor, weight: torch.Tensor, grad: bool) -> bool:
    """The epilogue for bf16/fp16 matrix products without autograd only. On an H200 (benchmarks/mlp_fusion.py,
    K 256 -> N 1024, 2^18-2^19 rows) it ran the op 1.57-1.66x faster in bf16 inference (the model 1.07-1.08x), but
    0.97-0.98x in fp32 (cuBLASLt's fp32 epilogue kernel is no faster than the plain GEMM plus GELU) and 0.76x (fp32)
    / 0.98x (bf16) in training, where its backward recomputes the pre-activation with one more GEMM."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    return dtype in (torch.bfloat16, torch.float16) and not grad


def cached_inference_tensors() -> list[torch.Tensor]:
    """The GPU tensors the fused backend keeps across inference calls (cached filter spectra), for a CUDA graph to
    hold on to: a captured graph reads them by address, so they must outlive every replay."""
    module = _fused[0] if _fused else None
    return [] if module is None else module.cached_spectra()
