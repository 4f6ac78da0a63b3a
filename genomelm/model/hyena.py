"""Hyena building blocks, exactly as the official HyenaDNA implementation (DESIGN.md §5).

Module and parameter names follow the official code so that checkpoint key tables stay one-to-one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genomelm.errors import UsageError
from genomelm.kernels import add_layer_norm, hyena_mix, linear_gelu, map_row_blocks
from genomelm.model.config import HyenaConfig


class Sin(nn.Module):
    """sin(freq * x) with a learnable per-channel frequency; ONE instance is shared by the filter MLP."""

    def __init__(self, dim: int, w: float):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class PositionalEmbedding(nn.Module):
    """z = [t, Re e^{-i f w}, Im e^{-i f w}] over l_max positions; recomputed, not stored in checkpoints."""

    def __init__(self, emb_dim: int, l_max: int):
        super().__init__()
        t = torch.linspace(0, 1, l_max)[None, :, None]  # (1, L, 1)
        bands = (emb_dim - 1) // 2
        t_rescaled = torch.linspace(0, l_max - 1, l_max)[None, :, None]
        w = 2 * math.pi * t_rescaled / l_max  # (1, L, 1)
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]  # (1, 1, bands)
        z = torch.exp(-1j * f * w)
        self.register_buffer("z", torch.cat([t, z.real, z.imag], dim=-1), persistent=False)  # (1, L, emb_dim)
        self.register_buffer("t", t, persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.z[:, :seq_len], self.t[:, :seq_len]


class ExponentialModulation(nn.Module):
    """h *= exp(-t |deltas|) + shift: a per-channel decay window on the implicit filter."""

    def __init__(self, d_model: int, modulate: bool, shift: float, fast_decay=0.3, slow_decay=1.5, target=1e-2):
        super().__init__()
        self.modulate = modulate
        self.shift = shift
        max_decay = math.log(target) / fast_decay
        min_decay = math.log(target) / slow_decay
        deltas = torch.linspace(min_decay, max_decay, d_model)[None, None]  # (1, 1, D)
        self.register_buffer("deltas", deltas, persistent=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if not self.modulate:
            return h
        decay = torch.exp(-t * self.deltas.abs())  # (1, L, D)
        return h * (decay + self.shift)


class HyenaFilter(nn.Module):
    """Implicit long filter: an MLP over positional features, modulated by a decay window.

    ``bias`` is the skip term D of the long convolution (the official name).
    """

    def __init__(self, config: HyenaConfig):
        super().__init__()
        d, order = config.d_model * (config.hyena_order - 1), config.filter_order
        self.l_max = config.l_max
        self.bias = nn.Parameter(torch.randn(d))
        self.pos_emb = PositionalEmbedding(config.emb_dim, config.l_max)
        act = Sin(order, config.activation_freq)
        layers: list[nn.Module] = [nn.Linear(config.emb_dim, order), act]
        for _ in range(config.num_inner_mlps):
            layers += [nn.Linear(order, order), act]
        layers.append(nn.Linear(order, d, bias=False))
        self.implicit_filter = nn.Sequential(*layers)
        self.modulation = ExponentialModulation(d, config.modulate, config.filter_shift)

    def filter(self, seq_len: int) -> torch.Tensor:
        """The filter for the first ``seq_len`` positions, (D, L), in fp32.

        Without autograd (inference) the filter is cached: it depends only on the weights and the length,
        so embedding a genome window after window computes it once. The key holds the weights' in-place
        version counters, so an optimiser step (or load_state_dict) invalidates it.
        """
        if torch.is_grad_enabled():
            return self._compute_filter(seq_len)
        key = (seq_len, self.bias.device, self.modulation.shift, tuple(p._version for p in self.parameters()))
        cached = getattr(self, "_filter_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self._compute_filter(seq_len))
            self._filter_cache = cached
        return cached[1]

    def train(self, mode: bool = True) -> HyenaFilter:
        """Switching between training and evaluation also forgets the cached filter: an optimiser that changes
        the weights without bumping their version counters (torch's fused AdamW) cannot leave it stale across
        the usual train() / eval() cycle of a training loop."""
        if mode != self.training:  # eval() on a model already in eval mode (each api call) keeps the cache
            self._filter_cache = None
        return super().train(mode)

    def _compute_filter(self, seq_len: int) -> torch.Tensor:
        z, t = self.pos_emb(seq_len)
        with torch.autocast(device_type=z.device.type, enabled=False):
            h = self.implicit_filter(z.float())  # (1, L, D)
            h = self.modulation(t, h)
        return h[0].transpose(0, 1)  # (D, L)


class HyenaOperator(nn.Module):
    """Order-2 Hyena: in_proj -> short causal conv -> gate -> long FFT conv -> gate -> out_proj."""

    def __init__(self, config: HyenaConfig):
        super().__init__()
        if config.hyena_order != 2:
            raise ValueError("only hyena_order 2 (all published HyenaDNA models) is supported")
        width = config.d_model * (config.hyena_order + 1)
        self.d_model = config.d_model
        self.l_max = config.l_max
        self.in_proj = nn.Linear(config.d_model, width)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        taps = config.short_filter_order
        self.short_filter = nn.Conv1d(width, width, taps, padding=taps - 1, groups=width)
        self.filter_fn = HyenaFilter(config)
        self.dropout = nn.Dropout(config.hyena_dropout)
        self.conv_backend: str | None = None  # None = kernels' default (env var or auto)

    def long_filter(self, seq_len: int) -> torch.Tensor:
        """The long filter (D, L) for inputs of ``seq_len`` tokens (cached at inference, see HyenaFilter)."""
        if seq_len > self.l_max:
            raise UsageError(f"input of {seq_len} tokens is longer than the model's l_max {self.l_max}")
        return self.filter_fn.filter(seq_len)

    def forward(self, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        """k: the long filter from ``long_filter`` when the caller computed it (compiled blocks), else None."""
        if k is None:
            k = self.long_filter(x.shape[1])  # (D, L)
        projected = self.in_proj(x)  # (B, L, 3D)
        y = hyena_mix(
            projected,
            self.short_filter.weight,
            self.short_filter.bias,
            k,
            self.filter_fn.bias,
            backend=self.conv_backend,
        )  # (B, L, D)
        return self.out_proj(self.dropout(y))


class Mlp(nn.Module):
    """fc2(GELU_tanh(fc1(x))); fc1's bias and GELU go through the kernel dispatcher (a GEMM epilogue on CUDA)."""

    def __init__(self, d_model: int, d_inner: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)

    def forward(self, x: torch.Tensor, backend: str | None = None) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        """backend: the kernels' backend (the block's conv backend; None = the dispatcher's default)."""
        if x.device.type == "cpu" and x.is_contiguous() and not torch.is_grad_enabled():
            return map_row_blocks(self._project, x)  # CPU inference: 16 MB slices, not 256 MB buffers (same values)
        return self._project(x, backend)

    def _project(self, x: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        hidden = linear_gelu(x, self.fc1.weight, self.fc1.bias, backend=backend)  # (..., d_inner)
        return self.fc2(hidden)


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the next matrix product computes in: autocast's on x's device when enabled, else the weights'."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class Block(nn.Module):
    """Pre-norm block; the residual stream stays in fp32 (official residual_in_fp32).

    x = x + Hyena(LN1(x)); x = x + MLP(LN2(x)), with every residual add fused into the LayerNorm that follows it
    (kernels.add_layer_norm, which also casts the normalised rows to the compute dtype): a block hands its MLP
    output to the next block (or ln_f) unadded, as ``branch``.
    """

    def __init__(self, config: HyenaConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.mixer = HyenaOperator(config)
        self.norm2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.mlp = Mlp(config.d_model, config.d_inner)
        self.dropout = nn.Dropout(config.resid_dropout)

    def forward(
        self, residual: torch.Tensor, branch: torch.Tensor | None = None, k: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual (B, L, D), branch (B, L, D) or None, k (D, L) or None) -> (residual fp32, branch).

        The stream after the block is residual + branch: the returned branch (this block's MLP output) is added by
        the next fused LayerNorm. k: the mixer's long filter when the caller computed it, else None.
        """
        dtype = compute_dtype(residual, self.norm1.weight)
        backend = self.mixer.conv_backend
        hidden, residual = _norm(self.norm1, branch, residual, dtype, backend)
        hidden, residual = _norm(self.norm2, self.dropout(self.mixer(hidden, k)), residual, dtype, backend)
        return residual, self.dropout(self.mlp(hidden, backend))


def _norm(norm: nn.LayerNorm, x, residual, dtype: torch.dtype, backend: str | None):
    """(LN(residual + x) in ``dtype``, residual + x in fp32) through the fused kernel's dispatcher."""
    return add_layer_norm(x, residual, norm.weight, norm.bias, norm.eps, dtype, backend=backend)
