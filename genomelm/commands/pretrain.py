"""`genomelm pretrain`: next-nucleotide pretraining of HyenaDNA on a genome, resumable, DDP through torchrun.

Recipe (HyenaDNA paper and official code): random windows of ``seq_len`` bases ending with [SEP], AdamW
(0.9, 0.999), lr 6e-4, weight decay 0.1 on weight matrices only, linear warmup then cosine decay, gradient
clipping 1.0, gradient accumulation to the global batch, bf16 autocast on GPU (the FFT stays fp32),
optional reverse-complement augmentation and sequence-length warmup (64, 128, ... with the same tokens
per step). The loss ignores N targets (nothing to learn there); validation perplexity counts A/C/G/T
targets only, so it is a per-base figure comparable with `genomelm evaluate` and Markov baselines.

RUN_DIR holds run.json (the settings), metrics.jsonl, and checkpoint/ (a native model directory that every
command loads with ``--model RUN_DIR/checkpoint``, plus training_state.pt to resume exactly).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from genomelm.commands._common import select_device
from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.atomic import refuse_overwriting_inputs
from genomelm.log import get_logger
from genomelm.model.config import PRESETS
from genomelm.runtime import PRECISION_CHOICES, check_max_n_frac, set_threads
from genomelm.training import CHECKPOINT_DIR, close_distributed, init_distributed
from genomelm.training.pretrainer import PretrainSummary, Trainer, accumulation_steps, model_config

__all__ = ["PretrainOptions", "PretrainSummary", "run", "resolve_options", "check_options"]

log = get_logger(__name__)

# Settings that may differ when resuming: where things are and how the job runs, not what it computes.
RESUMABLE_CHANGES = (
    "fasta",
    "resume",
    "output",
    "device",
    "conv_backend",
    "threads",
    "save_every",
    "eval_every",
    "log_every",
    "time_limit",
    "stop_at_step",
    "force",
)

# Limits of one invocation: never inherited from the recorded run.
PER_INVOCATION = ("time_limit", "stop_at_step", "force")


@dataclass
class PretrainOptions:
    fasta: str | None = None
    output: str | None = None  # RUN_DIR
    train_regions: str | None = None  # BED (0-based), optional 4th column train/valid/test
    val_regions: list[str] | None = None  # BED paths and/or regions (1-based inclusive)
    val_contigs: list[str] | None = None
    val_fraction: float | None = None  # the last fraction of every training interval
    preset: str | None = None
    d_model: int | None = None
    n_layer: int | None = None
    d_inner: int | None = None  # default 4 * d_model
    l_max: int | None = None  # default: the preset's, else seq_len + 2 (as the official presets)
    seq_len: int = 1024  # bases per training window (the model reads seq_len tokens)
    batch_size: int = 8  # windows of seq_len per forward pass on each process
    global_batch_size: int | None = None  # windows of seq_len per optimiser step over all processes
    steps: int = 10000  # optimiser steps
    lr: float = 6e-4
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.1
    warmup_steps: int = 1000  # linear lr warmup
    grad_clip: float = 1.0
    seqlen_warmup: int = 0  # steps spent at 64, 128, ... < seq_len before training at seq_len
    rc_aug: bool = False
    max_n_frac: float = 0.1  # windows with a larger fraction of N are skipped
    val_windows: int = 64  # held-out windows per evaluation (0: all)
    eval_every: int = 1000
    save_every: int = 1000
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    conv_backend: str | None = None
    threads: int | None = None
    grad_checkpointing: bool = False
    resume: str | None = None  # RUN_DIR to continue
    time_limit: float | None = None  # seconds: checkpoint and stop before this much wall time has passed
    stop_at_step: int | None = None  # checkpoint and stop after this step (split a run into jobs)
    force: bool = False  # start over in an existing RUN_DIR


# --------------------------------------------------------------------------- options


def resolve_options(opts: PretrainOptions) -> PretrainOptions:
    """With --resume: the recorded settings of that run, plus the changes allowed (RESUMABLE_CHANGES)."""
    if not opts.resume:
        return opts
    record_path = Path(opts.resume) / "run.json"
    if not (Path(opts.resume) / CHECKPOINT_DIR).is_dir() or not record_path.exists():
        raise InputError(f"--resume {opts.resume}: no checkpoint there (expected run.json and {CHECKPOINT_DIR}/)")
    recorded = _recorded_options(record_path)
    defaults = PretrainOptions()
    changes = {}
    for f in dataclasses.fields(PretrainOptions):
        mine, theirs = getattr(opts, f.name), getattr(recorded, f.name)
        if f.name in PER_INVOCATION:
            changes[f.name] = mine
        elif f.name in RESUMABLE_CHANGES:
            changes[f.name] = mine if mine != getattr(defaults, f.name) else theirs
        elif mine != getattr(defaults, f.name) and mine != theirs:
            raise UsageError(f"--resume: {f.name} was {theirs!r} in that run; it cannot change when resuming")
    changes.update(output=opts.resume, resume=opts.resume)
    return dataclasses.replace(recorded, **changes)


def _recorded_options(record_path: Path) -> PretrainOptions:
    """The options a run recorded in its run.json; anything unreadable is a FormatError naming the file."""
    try:
        options = json.loads(record_path.read_text()).get("options")
        return PretrainOptions(**options)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise FormatError(
            f"{record_path}: no usable 'options' section ({type(exc).__name__}: {exc}); the run cannot be resumed"
        ) from None


def check_options(opts: PretrainOptions, world_size: int = 1) -> None:
    """Usage errors that need no data: raised before anything is loaded."""
    if not opts.fasta:
        raise UsageError("--fasta is required")
    if not opts.output:
        raise UsageError("-o/--output RUN_DIR is required")
    if opts.preset is not None and opts.preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {opts.preset!r}")
    _positive(
        seq_len=opts.seq_len,
        batch_size=opts.batch_size,
        steps=opts.steps,
        eval_every=opts.eval_every,
        save_every=opts.save_every,
        log_every=opts.log_every,
    )
    if opts.seq_len < 2:
        raise UsageError(f"--seq-len must be >= 2, got {opts.seq_len}")
    if opts.precision not in PRECISION_CHOICES:
        raise UsageError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {opts.precision!r}")
    check_max_n_frac(opts.max_n_frac)
    if opts.lr <= 0 or opts.warmup_steps < 0 or opts.seqlen_warmup < 0 or opts.val_windows < 0:
        raise UsageError("--lr must be > 0; --warmup-steps, --seqlen-warmup and --val-windows must be >= 0")
    accumulation_steps(opts, world_size)
    _refuse_overwriting_inputs(opts)
    if not opts.resume:
        model_config(opts)  # e.g. --seq-len beyond l_max: say so before reading the genome


def _refuse_overwriting_inputs(opts: PretrainOptions) -> None:
    """The run directory's files (run.json, metrics.jsonl, checkpoint/) must not be an input."""
    run_dir = Path(opts.output)
    written = {f"--output ({name})": run_dir / name for name in ("run.json", "metrics.jsonl", CHECKPOINT_DIR)}
    inputs = [opts.fasta, opts.train_regions, *(opts.val_regions or [])]
    refuse_overwriting_inputs(written, inputs, directories=[f"--output ({CHECKPOINT_DIR})"])


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


# --------------------------------------------------------------------------- run


def run(opts: PretrainOptions) -> PretrainSummary:
    """Pretrain (or resume) a model; returns when done, stopped by a limit or signal (after a checkpoint)."""
    opts = resolve_options(opts)
    set_threads(opts.threads)
    device = select_device(opts.device, opts.conv_backend)
    dist = init_distributed(device.type == "cuda")
    try:
        check_options(opts, dist.world_size)
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        return Trainer(opts, device, dist, started=time.perf_counter()).train()
    finally:
        close_distributed(dist)
