"""Training pieces shared by pretrain, finetune and in-context: optimiser groups, schedule, seeding.

Official recipe (HyenaDNA): AdamW (0.9, 0.999), weight decay on weight matrices only; the implicit filter
(its MLP, Sin frequencies and the filter's D term), biases, norms and embeddings' positional features get none.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch import nn


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Parameters trained without weight decay: implicit filter, biases, norms (1-D tensors)."""
    return ".filter_fn." in name or param.ndim < 2 or ".norm" in name or "ln_f" in name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weight matrices, and everything the official recipe leaves undecayed."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if _no_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` (fused on CUDA when available)."""
    fused = all(p.is_cuda for p in model.parameters() if p.requires_grad)
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def cosine_lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total_steps`` (step is 0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.1):
    """LambdaLR applying ``cosine_lr_factor``; step it once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_lr_factor(step, warmup_steps, total_steps, min_ratio)
    )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state needed to resume a run exactly."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
