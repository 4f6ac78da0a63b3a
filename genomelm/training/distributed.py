"""torchrun/DDP helpers: process info, reductions and gathers that are no-ops in a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------- distributed (torchrun)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job; world_size 1 and enabled False without torchrun."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPU); a no-op for a single process."""
    if not launched_by_torchrun():
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]), True)
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def close_distributed(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce(values: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """Sum (or max) a small tensor over ranks in place; unchanged for a single process."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return values


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` in rank order (on every rank); [obj] for a single process."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
