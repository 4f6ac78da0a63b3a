"""Device, threads, precision/autocast, batching and right-padding: the one copy every floor uses.

Below commands/ and variants/ (DESIGN.md §3): torch and the standard library only, plus errors/log.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from genomelm.errors import UsageError
from genomelm.log import get_logger

log = get_logger(__name__)
T = TypeVar("T")

PRECISIONS = ("fp32", "bf16")
# What --precision accepts where the command resolves "auto" (training: bf16 on CUDA, fp32 elsewhere).
PRECISION_CHOICES = ("auto", *PRECISIONS)
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


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA, fp32 elsewhere (bf16 autocast on CPU is slow and gains nothing here)."""
    if precision not in PRECISION_CHOICES:
        raise UsageError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def device_name(device: torch.device) -> str:
    """The GPU's name for reports (metrics.json, model cards); 'cpu' otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def check_batch_size(size: int | None) -> None:
    """--batch-size, the same usage error in every command (None: the default, see ``default_batch_size``)."""
    if size is not None and size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {size}")


GPU_BATCH_SIZE = 8  # windows (or passes) per model call on a GPU when --batch-size is not given
CPU_BATCH_TOKENS = 1 << 15  # on a CPU: as many as fit this many tokens (1 to GPU_BATCH_SIZE)


def default_batch_size(device: torch.device, tokens_per_item: int) -> int:
    """--batch-size when not given, for items (windows, passes) of ``tokens_per_item`` tokens: 8 on a GPU; on a
    CPU as many as fit 32,768 tokens, 1 to 8. A CPU runs one 32k-token window as fast as a batch of them, and
    eight only take more memory: embed, score-variants and score-genome on chrX with the default model peaked at
    4.4-5.7 GB resident at batch 8 against 1.0-1.5 GB by default, in the same time within 3 % or less
    (benchmarks/cpu_batch_memory.py, 2-core CPU, 2026-12-07)."""
    if device.type != "cpu":
        return GPU_BATCH_SIZE
    return max(1, min(GPU_BATCH_SIZE, CPU_BATCH_TOKENS // max(1, tokens_per_item)))


def check_max_n_frac(fraction: float) -> None:
    """--max-n-frac (the share of N a window may hold), the same usage error in every command."""
    if not 0 <= fraction <= 1:
        raise UsageError(f"--max-n-frac must be between 0 and 1, got {fraction}")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    check_batch_size(size)
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

    Right padding is safe for a causal model: position t never sees positions > t. Both copies are
    non-blocking: a blocking copy to the GPU waits for all queued work (torch synchronises the stream
    after it), which stalled the batches that embed keeps in flight. From pageable memory the driver
    stages the bytes before the call returns, so the host tensors may go at once.
    """
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row)
    return ids.to(device, non_blocking=True), lengths.to(device, non_blocking=True)


class Staging:
    """Host buffers of one batch (or chunk) in flight, kept and reused, page-locked when ``pinned``
    (the device is a GPU): page-locking new memory for every batch cost the host more time than the
    batch's passes cost the GPU (H200 host, 2026-12-02: about 8 ms per MB; benchmarks/profile_genome.py).
    A buffer may be reused once the device work that reads or writes it has been waited for."""

    def __init__(self, pinned: bool):
        self.pinned = pinned
        self._buffers: dict[tuple, torch.Tensor] = {}

    def put(self, key: tuple, array) -> torch.Tensor:
        """numpy ``array`` copied into this slot's buffer ``key``; a tensor of its shape."""
        out = self.empty(key, array.shape, torch.from_numpy(array[:0]).dtype)
        out.numpy()[...] = array
        return out

    def empty(self, key: tuple, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        count = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < count or buffer.dtype != dtype:  # grown rarely: sizes repeat
            buffer = torch.empty(max(count, 1) * 5 // 4, dtype=dtype, pin_memory=self.pinned)
            self._buffers[key] = buffer
        return buffer[:count].view(shape)

    def to_host(self, values: torch.Tensor) -> tuple[torch.Tensor, object]:
        """An asynchronous copy of device ``values`` into this slot's buffer and the CUDA event that ends it
        (a CPU tensor comes back as is, with no event)."""
        if not values.is_cuda:
            return values, None
        host = self.empty(("values",), tuple(values.shape), values.dtype)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event


# --------------------------------------------------------------------------- torchrun


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun (its environment variables), else (0, 1). The process group
    (gloo) only coordinates: inference commands share work through files, not collectives."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def rank_device(name: str, rank: int, world: int) -> str:
    """--device for this rank: under torchrun 'auto'/'cuda' take the GPU of LOCAL_RANK."""
    if world > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    return name


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
