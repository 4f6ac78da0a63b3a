"""Training pieces shared by pretrain, finetune and in-context: optimiser groups, schedule, seeding,
sequence-length warmup, torchrun/DDP helpers, stop signals, atomic checkpoints and metrics.jsonl.

Official recipe (HyenaDNA): AdamW (0.9, 0.999), weight decay on weight matrices only; the implicit filter
(its MLP, Sin frequencies and the filter's D term), biases, norms and embeddings' positional features get none.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genomelm.errors import FormatError, GenomelmError, InputError


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


# --------------------------------------------------------------------------- divergence


def stop_if_diverged(loss: float, model: nn.Module, where: str, hint: str = "lower --lr") -> None:
    """GenomelmError (exit 1) when a training step produced a non-finite loss or weights: saving such a
    model would only hand NaN to every later command. ``where`` says which step ('epoch 2, step 7')."""
    if not math.isfinite(loss):
        raise GenomelmError(f"training diverged at {where}: the loss is {loss}; nothing saved; {hint}")
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trained:
        return
    total = torch.stack([p.detach().float().abs().sum() for _, p in trained]).sum()  # one device sync
    if bool(torch.isfinite(total)):
        return
    name = next(n for n, p in trained if not bool(torch.isfinite(p.detach()).all()))
    raise GenomelmError(f"training diverged at {where}: weight {name} became non-finite; nothing saved; {hint}")


# --------------------------------------------------------------------------- signals


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the training loop checks after each step (then it checkpoints).

    A second SIGINT while the flag is already set interrupts at once (KeyboardInterrupt), for the impatient.
    Handlers are installed only in the main thread and restored on exit.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            # After a SIGTERM the process is on its way out (exit 143): a second one (schedulers and `timeout`
            # signal the process and its group) must not interrupt the rest of the clean-up.
            terminating = signum == signal.SIGTERM and self.signal_name == "SIGTERM"
            signal.signal(signum, signal.SIG_IGN if terminating else handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


# --------------------------------------------------------------------------- checkpoints and metrics

TRAINING_STATE = "training_state.pt"
CHECKPOINT_DIR = "checkpoint"


def save_checkpoint(run_dir: str | os.PathLike, model: nn.Module, state: dict, card: str | None = None, **provenance):
    """Write RUN_DIR/checkpoint atomically: a native model directory (config.json, model.safetensors,
    README.md, loadable by every command) plus training_state.pt (optimiser, step, RNG and sampler states).

    The new directory is built beside the old one and swapped in only when complete, so an interrupted
    save always leaves the previous checkpoint intact.
    """
    from genomelm.formats import atomic
    from genomelm.formats.checkpoint import write_native_files

    target = Path(run_dir) / CHECKPOINT_DIR
    with atomic.atomic_directory(target) as staging:
        write_native_files(model, staging, card, provenance)
        torch.save(state, staging / TRAINING_STATE)
    return target


def load_training_state(run_dir: str | os.PathLike) -> dict:
    """training_state.pt of RUN_DIR/checkpoint (tensors, numbers, strings and RNG states only)."""
    path = Path(run_dir) / CHECKPOINT_DIR / TRAINING_STATE
    # weights_only: the state holds tensors and plain Python values only (see portable_rng_state); a file
    # with anything else was not written by genomelm and is never unpickled.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: missing; the run cannot be resumed") from None
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise FormatError(f"{path}: not a genomelm training state ({type(exc).__name__}: {text})") from None
    if not isinstance(state, dict):
        raise FormatError(f"{path}: not a genomelm training state (holds a {type(state).__name__})")
    return state


def portable_rng_state() -> dict:
    """``rng_state()`` with numpy's legacy state as plain lists, so torch.load(weights_only=True) reads it."""
    state = rng_state()
    name, keys, pos, has_gauss, cached = state["numpy"]
    state["numpy"] = (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
    return state


class MetricsLog:
    """RUN_DIR/metrics.jsonl: one JSON object per line; on resume, records after the checkpoint are dropped."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step`` <= the resumed step (a crash may have logged more)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        partial = self.path.with_suffix(".jsonl.partial")
        partial.write_text("".join(line + "\n" for line in kept))
        os.replace(partial, self.path)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
