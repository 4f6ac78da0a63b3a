"""Pieces every command shares: device, precision, threads, model loading, batching."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from genomelm.errors import UsageError
from genomelm.formats.checkpoint import load_model
from genomelm.log import get_logger
from genomelm.model.lm import HyenaDNA

log = get_logger(__name__)
T = TypeVar("T")

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_threads(threads: int | None) -> None:
    """Cap torch intra-op (OpenMP) and inter-op threads; None leaves the defaults.

    The environment variables are set too, for child processes and libraries loaded later: a
    scheduler's core allocation (Snakemake ``threads``, Nextflow ``task.cpus``) is then respected.
    """
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() > threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # only settable before the first parallel work; then intra-op is the cap
            log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())


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


def select_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; an explicit 'cuda' without a GPU is a usage error."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise UsageError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA GPU is available (torch.cuda.is_available() is False)")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for --precision bf16 (the FFT stays fp32 inside the kernels); a no-op for fp32."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def load_inference_model(
    spec: str | None,
    device: torch.device,
    conv_backend: str | None = None,
    trust_checkpoint: bool = False,
    filter_shift: float | None = None,
) -> HyenaDNA:
    """Load ``--model`` for inference: eval mode, on ``device``, with the requested conv backend."""
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


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    if size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {size}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pad_right(rows: list, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id arrays to one (B, L) tensor; also return the (B,) true lengths.

    Right padding is safe for a causal model: position t never sees positions > t.
    """
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row)
    return ids.to(device, non_blocking=True), lengths.to(device)
