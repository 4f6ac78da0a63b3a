"""The one model configuration (DESIGN.md house rule 3): a commented dataclass, serialised as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HyenaConfig:
    # --- backbone ---
    d_model: int = 128  # width of the residual stream
    n_layer: int = 2  # number of Hyena blocks
    d_inner: int = 512  # MLP hidden width (4 * d_model in every published preset)
    vocab_size: int = 12  # official character vocabulary (tokenizer.VOCAB)
    pad_vocab_size_multiple: int = 8  # embedding rows rounded up to a multiple of this (12 -> 16)
    l_max: int = 1026  # longest input; the implicit filter's positional buffers have this length
    layer_norm_epsilon: float = 1e-5
    residual_in_fp32: bool = True  # keep the residual stream in fp32 under autocast, as the official code
    tie_embeddings: bool = True  # LM head shares the embedding matrix (official models do)
    embed_dropout: float = 0.1  # dropout on the embedding output (training only)
    resid_dropout: float = 0.0  # dropout on every other residual branch
    initializer_range: float = 0.02  # std of the normal init of Linear and Embedding weights
    # --- Hyena operator ---
    hyena_order: int = 2  # only order 2 exists in the published models
    short_filter_order: int = 3  # causal depthwise conv kernel size before the long convolution
    hyena_dropout: float = 0.0
    # --- implicit long filter ---
    filter_order: int = 64  # width of the filter MLP
    emb_dim: int = 5  # positional features: t, and (emb_dim - 1) / 2 complex exponentials
    num_inner_mlps: int = 2  # hidden Linear+Sin pairs after the first
    activation_freq: float = 10.0  # initial frequency of the shared Sin activation ('w' in the official config)
    modulate: bool = True  # exponential decay window on the filter
    # 0.0 in the official training code (Lightning checkpoints), 0.05 in the standalone / Hugging Face port.
    filter_shift: float = 0.0
    # --- provenance (not architecture) ---
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"source": "lightning"}; copied into config.json

    @property
    def padded_vocab_size(self) -> int:
        multiple = self.pad_vocab_size_multiple
        return (self.vocab_size + multiple - 1) // multiple * multiple

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HyenaConfig:
        """Build from a dict; unknown keys are an error so that a typo never silently changes a model."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown HyenaConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> HyenaConfig:
        return dataclasses.replace(self, **changes)


# Sane upper bounds, checked before any tensor is allocated (a typo such as d_model 10**6 would otherwise try
# to allocate hundreds of GB). The published models are far inside them (largest: d 256, 8 layers, l_max 1M).
_POSITIVE_INT_LIMITS = {
    "d_model": 16384,
    "n_layer": 512,
    "d_inner": 65536,
    "vocab_size": 65536,
    "pad_vocab_size_multiple": 4096,
    "l_max": 1 << 24,
    "hyena_order": 2,
    "short_filter_order": 1024,
    "filter_order": 4096,
    "emb_dim": 1024,
}
_MAX_PARAMETERS = 2_000_000_000
_MIN_VOCAB = 12  # the official character vocabulary (tokenizer.VOCAB) must fit
_FRACTIONS = ("embed_dropout", "resid_dropout", "hyena_dropout")
_FLAGS = ("residual_in_fp32", "tie_embeddings", "modulate")


def config_problems(config: HyenaConfig) -> list[str]:
    """What is wrong with ``config`` ('d_model must be a positive integer, got "256"'), empty if nothing."""
    problems = [_int_problem(name, getattr(config, name), limit) for name, limit in _POSITIVE_INT_LIMITS.items()]
    inner = config.num_inner_mlps
    if isinstance(inner, bool) or not isinstance(inner, int) or not 0 <= inner <= 64:
        problems.append(f"num_inner_mlps must be an integer in [0, 64], got {_shown(inner)}")
    flags = [n for n in _FLAGS if not isinstance(getattr(config, n), bool)]
    problems += [f"{n} must be true or false, got {_shown(getattr(config, n))}" for n in flags]
    problems += [_number_problem(n, getattr(config, n), 0.0, 1.0) for n in _FRACTIONS]
    problems.append(_number_problem("layer_norm_epsilon", config.layer_norm_epsilon, 0.0, 1.0, open_low=True))
    problems += [_number_problem(n, getattr(config, n), -1e6, 1e6) for n in ("activation_freq", "filter_shift")]
    problems = [p for p in problems if p]
    if not problems:
        problems += _size_problems(config)
    return problems


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _int_problem(name: str, value: Any, limit: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"{name} must be a positive integer, got {_shown(value)}"
    if value > limit:
        return f"{name} {value} is larger than genomelm allows ({limit})"
    return None


def _number_problem(name: str, value: Any, low: float, high: float, open_low: bool = False) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (low < value if open_low else low <= value) and value <= high:
        return None
    bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
    return f"{name} must be a number in {bounds}, got {_shown(value)}"


def _size_problems(config: HyenaConfig) -> list[str]:
    problems = []
    if config.vocab_size < _MIN_VOCAB:
        problems.append(f"vocab_size must be at least {_MIN_VOCAB} (the character vocabulary), got {config.vocab_size}")
    if config.emb_dim < 3 or config.emb_dim % 2 == 0:
        problems.append(f"emb_dim must be an odd integer >= 3 (t and complex exponentials), got {config.emb_dim}")
    if config.hyena_order != 2:
        problems.append(f"hyena_order must be 2 (the only order of the published models), got {config.hyena_order}")
    per_layer = 4 * config.d_model**2 + 2 * config.d_model * config.d_inner + config.filter_order**2 * 3
    parameters = config.n_layer * per_layer + config.padded_vocab_size * config.d_model
    if parameters > _MAX_PARAMETERS:
        problems.append(f"sizes give about {parameters:,} parameters, more than genomelm allows ({_MAX_PARAMETERS:,})")
    return problems


def _preset(d_model: int, n_layer: int, l_max: int) -> HyenaConfig:
    return HyenaConfig(d_model=d_model, n_layer=n_layer, d_inner=4 * d_model, l_max=l_max)


# The published HyenaDNA sizes (parameter counts with the tied head in the comments).
PRESETS: dict[str, HyenaConfig] = {
    "tiny-1k": _preset(128, 2, 1026),  # 436,096
    "tiny-1k-d256": _preset(256, 2, 1026),  # 1,641,088
    "tiny-16k-d128": _preset(128, 2, 16386),  # 436,096
    "small-32k": _preset(256, 4, 32770),  # 3,277,568
    "medium-160k": _preset(256, 8, 160002),  # 6,550,528
    "medium-450k": _preset(256, 8, 450002),  # 6,550,528
    "large-1m": _preset(256, 8, 1000002),  # 6,550,528
}


def preset(name: str) -> HyenaConfig:
    """A fresh copy of a published preset's config."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name], extra={})
