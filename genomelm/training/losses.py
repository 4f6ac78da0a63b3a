"""Losses of next-token pretraining on (B, L + 1) windows of token ids."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genomelm.runtime import autocast
from genomelm.tokenizer import A_ID, N_ID, PAD_ID, T_ID


def forward_loss(model, batch: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """Mean next-token cross-entropy of (B, L + 1) windows; N targets ignored (there is nothing to learn)."""
    inputs, targets = batch[:, :-1], batch[:, 1:].clone()  # (B, L) each
    targets[targets == N_ID] = PAD_ID
    with autocast(device, precision):
        logits = model(inputs)  # (B, L, V)
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=PAD_ID, reduction="sum")
    return losses / (targets != PAD_ID).sum().clamp(min=1)


def window_nll(model, batch: torch.Tensor, device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of -ln P, number of targets) over the A/C/G/T targets of (B, L + 1) windows, in float64."""
    inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, L)
    with autocast(device, precision):
        logits = model(inputs)  # (B, L, V)
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")  # (B*L,)
    is_base = (targets.flatten() >= A_ID) & (targets.flatten() <= T_ID)
    return nll[is_base].double().sum(), is_base.sum().double()
