"""Soft-prompt files: a trained prompt (P, d_model) in safetensors with metadata (classes, label tokens,
shots, the model it was trained for and a fingerprint of that model's token embeddings).

Like checkpoint.py this is weight I/O, so it uses torch; it is written atomically (formats.atomic).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from genomelm import __version__
from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import atomic
from genomelm.formats.checkpoint import check_finite
from genomelm.log import get_logger
from genomelm.model.lm import HyenaDNA
from genomelm.model.soft_prompt import SoftPrompt

log = get_logger(__name__)


PROMPT_FORMAT = "genomelm-soft-prompt"


PROMPT_FORMAT_VERSION = 1


def model_fingerprint(model: HyenaDNA) -> str:
    """A short hash of the token embeddings: tells whether a prompt meets the model it was trained for."""
    weight = model.backbone.embeddings.word_embeddings.weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def save_prompt(path: Path, prompt: SoftPrompt, model: HyenaDNA, info: dict) -> None:
    """Write a trained prompt atomically; ``info`` gives classes, label_tokens (names), shots and model."""
    from safetensors.torch import save_file

    metadata = {
        "format": PROMPT_FORMAT,
        "format_version": str(PROMPT_FORMAT_VERSION),
        "n_tokens": str(prompt.n_tokens),
        "d_model": str(model.config.d_model),
        "classes": json.dumps(info["classes"]),
        "label_tokens": json.dumps(info["label_tokens"]),
        "shots": str(info["shots"]),
        "model": str(info["model"]),
        "model_fingerprint": model_fingerprint(model),
        "genomelm_version": __version__,
    }
    with atomic.atomic_path(path) as tmp:
        save_file({"prompt": prompt.weight.detach().float().cpu().contiguous()}, tmp, metadata=metadata)


def load_prompt(path: str, model: HyenaDNA) -> tuple[SoftPrompt, dict]:
    """A prompt written by ``save_prompt``, checked against ``model``; returns it (eval mode) and its
    metadata: classes (list), label_tokens (list of names), shots (int)."""
    meta, weight = _read_prompt_file(path)
    check_finite({"prompt": weight}, path)
    if weight.shape[1] != model.config.d_model:
        raise UsageError(
            f"--prompt {path}: width {weight.shape[1]} does not match the model's d_model {model.config.d_model}"
        )
    if meta.get("model_fingerprint") != model_fingerprint(model):
        log.warning("--prompt %s was trained with another model (%s)", path, meta.get("model"))
    prompt = SoftPrompt(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        prompt.weight.copy_(weight)
    try:
        info = {
            "classes": json.loads(meta["classes"]),
            "label_tokens": json.loads(meta["label_tokens"]),
            "shots": int(meta.get("shots", 0)),
        }
    except (KeyError, ValueError) as exc:
        raise FormatError(f"--prompt {path}: damaged metadata ({exc})") from None
    return prompt.eval(), info


def _read_prompt_file(path: str) -> tuple[dict, torch.Tensor]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise InputError(f"--prompt {path}: no such file")
    try:
        with safe_open(path, framework="pt") as handle:
            meta, weight = handle.metadata() or {}, handle.get_tensor("prompt")
    except Exception as exc:  # safetensors raises its own error types for a damaged file or a missing tensor
        raise FormatError(f"--prompt {path}: not a genomelm soft prompt ({_first_line(exc)})") from None
    if meta.get("format") != PROMPT_FORMAT or weight.ndim != 2:
        raise FormatError(f"--prompt {path}: not a genomelm soft prompt (format {meta.get('format')!r})")
    return meta, weight.float()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
