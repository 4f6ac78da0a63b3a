"""Optimiser groups (weight decay on weight matrices only), the warmup + cosine learning-rate schedule and
the sequence-length warmup of the HyenaDNA recipe."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.graph import increment_version


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


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; ``fused`` None = fused when every trained parameter is on CUDA."""
    if fused is None:
        fused = all(p.is_cuda for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)
    if fused:
        optimizer.register_step_post_hook(_mark_parameters_changed)
    return optimizer


def _mark_parameters_changed(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """The fused AdamW kernel updates parameters without bumping their in-place version counters (torch 2.x),
    and the model's inference caches (HyenaFilter's filter, the CUDA backend's filter spectrum) are keyed on
    those counters: without this, a validation pass after a step would reuse the filters of the previous one."""
    increment_version([p for group in optimizer.param_groups for p in group["params"]])


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


# --------------------------------------------------------------------------- sequence-length warmup


def seqlen_stages(seq_len: int, start: int = 64) -> list[int]:
    """Warmup lengths below ``seq_len``: start, 2*start, 4*start, ... (empty if seq_len <= start)."""
    stages = []
    length = start
    while length < seq_len:
        stages.append(length)
        length *= 2
    return stages


def seqlen_at(step: int, seq_len: int, warmup_steps: int, start: int = 64) -> int:
    """Training length at 0-based optimiser ``step`` under sequence-length warmup (HyenaDNA paper).

    The first ``warmup_steps`` steps are split evenly over the stages start, 2*start, ... (< seq_len);
    afterwards, and with warmup_steps 0, every step trains at ``seq_len``.
    """
    stages = seqlen_stages(seq_len, start)
    if warmup_steps <= 0 or step >= warmup_steps or not stages:
        return seq_len
    return stages[step * len(stages) // warmup_steps]


def sequences_per_batch(batch_size: int, seq_len: int, length: int) -> int:
    """Sequences of ``length`` holding as many tokens as ``batch_size`` of ``seq_len`` (paper: same tokens/step)."""
    return max(1, batch_size * seq_len // length)
