"""Pieces the commands share: model loading and labels, and the device choice checked against the conv
backend. Device, precision, threads, batching and padding live in genomelm.runtime (the one copy);
set_threads is re-exported here only for score_variants, which imports it from this module."""

from __future__ import annotations

import os

import torch

from genomelm.formats.checkpoint import load_model
from genomelm.log import get_logger
from genomelm.model.lm import HyenaDNA, check_conv_backend
from genomelm.runtime import select_device as _runtime_device
from genomelm.runtime import set_threads  # noqa: F401  (re-exported for score_variants)

log = get_logger(__name__)


def select_device(name: str, conv_backend: str | None = None) -> torch.device:
    """runtime.select_device, plus a usage error for a ``conv_backend`` that is unknown or cannot run on
    that device (checked here, before any work, so it exits 2 rather than failing mid-run)."""
    device = _runtime_device(name)
    check_conv_backend(conv_backend, device)
    return device


def load_inference_model(
    spec: str | None,
    device: torch.device,
    conv_backend: str | None = None,
    trust_checkpoint: bool = False,
    filter_shift: float | None = None,
) -> HyenaDNA:
    """Load ``--model`` for inference: eval mode, on ``device``, with the requested conv backend."""
    check_conv_backend(conv_backend, device)
    model = load_model(spec, trust_checkpoint=trust_checkpoint, filter_shift=filter_shift)
    model.set_conv_backend(conv_backend)
    return model.eval().to(device)


def model_label(spec: str | None, model: HyenaDNA) -> str:
    """A short human-readable name of the model for metadata and VCF headers."""
    if spec is None or spec == "default":
        return model.config.extra.get("name", "genomelm-default")
    return os.path.basename(os.path.normpath(str(spec))) or str(spec)
