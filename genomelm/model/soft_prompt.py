"""Soft prompting: P learned vectors prepended to the token embeddings of a frozen HyenaDNA model.

As in the HyenaDNA paper's soft-prompting experiments: the vectors start from N(0, 0.02), get their own
dropout (0.1) while training, and enter the model right after the embedding layer, so the input is
``[soft_1 .. soft_P, x_1 .. x_L]``; the backbone's own embedding dropout then applies to all of it, as in
the official code. Only the prompt is trained. The P positions count towards the model's ``l_max``.
"""

from __future__ import annotations

import torch
from torch import nn

from genomelm.errors import UsageError
from genomelm.model.lm import HyenaDNA


class SoftPrompt(nn.Module):
    """P learnable embedding vectors of width D, prepended to a batch of token embeddings."""

    def __init__(self, n_tokens: int, d_model: int, dropout: float = 0.1, init_std: float = 0.02):
        super().__init__()
        if n_tokens < 0:
            raise UsageError(f"soft prompt length must be >= 0, got {n_tokens}")
        self.weight = nn.Parameter(torch.empty(n_tokens, d_model))  # (P, D)
        nn.init.normal_(self.weight, mean=0.0, std=init_std)
        self.dropout = nn.Dropout(dropout)

    @property
    def n_tokens(self) -> int:
        return self.weight.shape[0]

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, L, D) token embeddings -> (B, P + L, D) with the prompt first."""
        soft = self.dropout(self.weight).to(embeds.dtype)  # (P, D)
        return torch.cat([soft.expand(embeds.shape[0], -1, -1), embeds], dim=1)


def prompted_logits(model: HyenaDNA, input_ids: torch.Tensor, prompt: SoftPrompt | None = None) -> torch.Tensor:
    """(B, L) ids -> (B, L, V) next-token logits at the token positions (the P soft positions are dropped).

    Without a prompt (or with P = 0) this is exactly ``model(input_ids)``.
    """
    if prompt is None or prompt.n_tokens == 0:
        return model(input_ids)
    total = prompt.n_tokens + input_ids.shape[1]
    if total > model.l_max:
        raise UsageError(
            f"{prompt.n_tokens} soft tokens + {input_ids.shape[1]} tokens = {total} is longer than the "
            f"model's maximum length {model.l_max}"
        )
    embeds = model.backbone.embeddings(input_ids)  # (B, L, D)
    logits = model(inputs_embeds=prompt(embeds))  # (B, P + L, V)
    return logits[:, prompt.n_tokens :]
