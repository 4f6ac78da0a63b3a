"""What a run keeps and restores: seeding and RNG states, divergence checks, stop signals, atomic
checkpoints (RUN_DIR/checkpoint) and metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genomelm.errors import FormatError, GenomelmError, InputError
from genomelm.formats import atomic


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
        atomic.write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
