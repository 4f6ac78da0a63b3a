"""Pieces the commands share: model loading and labels, and the device choice checked against the conv
backend. Device, precision, threads, batching and padding live in genomelm.runtime (the one copy);
set_threads is re-exported here only for score_variants, which imports it from this module."""

from __future__ import annotations

import ctypes
import os

import torch

from genomelm.formats.checkpoint import load_model
from genomelm.log import get_logger
from genomelm.model.lm import HyenaDNA, check_conv_backend
from genomelm.runtime import select_device as _runtime_device
from genomelm.runtime import set_threads  # noqa: F401  (re-exported for score_variants)

log = get_logger(__name__)


MALLOC_ENV_VAR = "GENOMELM_CPU_MALLOC"  # "0": leave glibc's allocator settings alone
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (glibc malloc.h)
_KEEP_FREED_BYTES = 2**31 - 1  # (mallopt takes a C int) keep up to 2 GB of freed heap for reuse


def reuse_freed_memory() -> bool:
    """glibc: serve large blocks from the heap and keep freed ones for reuse; True when applied.

    By default glibc maps every block over 32 MB afresh from the kernel and unmaps it on free, so each
    (B, L, 4D) buffer of a 32k-token forward is paid again in page faults: the quick start spent more system
    time there than computing (benchmarks/cpu_quickstart.py). A command process runs one model, so keeping its
    memory costs nothing. GENOMELM_CPU_MALLOC=0 opts out; other C libraries (no mallopt) are left as they are.
    """
    if os.environ.get(MALLOC_ENV_VAR, "1").strip() == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded in this process
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES))


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
    if device.type == "cpu":
        reuse_freed_memory()
    model = load_model(spec, trust_checkpoint=trust_checkpoint, filter_shift=filter_shift)
    model.set_conv_backend(conv_backend)
    return model.eval().to(device)


def model_label(spec: str | None, model: HyenaDNA) -> str:
    """A short human-readable name of the model for metadata and VCF headers."""
    if spec is None or spec == "default":
        return model.config.extra.get("name", "genomelm-default")
    return os.path.basename(os.path.normpath(str(spec))) or str(spec)
