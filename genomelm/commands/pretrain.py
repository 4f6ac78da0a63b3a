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

import contextlib
import dataclasses
import datetime
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genomelm import __version__
from genomelm.commands import pretrain_data as data
from genomelm.commands._common import autocast, select_device, set_threads
from genomelm.errors import FormatError, GenomelmError, InputError, UsageError
from genomelm.formats.atomic import refuse_overwriting_inputs, write_text
from genomelm.formats.checkpoint import load_checkpoint_dir
from genomelm.formats.fasta import FastaSource
from genomelm.log import format_rate, get_logger, progress
from genomelm.model.config import PRESETS, HyenaConfig, preset
from genomelm.model.lm import HyenaDNA
from genomelm.tokenizer import A_ID, N_ID, PAD_ID, T_ID
from genomelm.training import (
    CHECKPOINT_DIR,
    DistInfo,
    MetricsLog,
    StopRequest,
    all_reduce,
    close_distributed,
    cosine_lr_factor,
    gather_objects,
    init_distributed,
    load_training_state,
    make_optimizer,
    portable_rng_state,
    save_checkpoint,
    seed_everything,
    seqlen_at,
    sequences_per_batch,
    set_rng_state,
)

log = get_logger(__name__)

STATE_VERSION = 1
PRECISIONS = ("auto", "fp32", "bf16")
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


@dataclass
class PretrainSummary:
    run_dir: str
    step: int
    steps: int
    tokens_seen: int
    loss: float | None
    val_loss: float | None
    val_ppl: float | None
    seconds: float
    tokens_per_second: float
    parameters: int
    world_size: int
    stopped_by: str | None = None  # None (finished), 'stop-at-step', 'time-limit', 'SIGINT' or 'SIGTERM'
    rank: int = 0  # this process's rank in a torchrun job (only rank 0 should report)

    @property
    def finished(self) -> bool:
        return self.step >= self.steps


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
    if opts.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {opts.precision!r}")
    if not 0 <= opts.max_n_frac <= 1:
        raise UsageError(f"--max-n-frac must be between 0 and 1, got {opts.max_n_frac}")
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


def accumulation_steps(opts: PretrainOptions, world_size: int) -> int:
    """Forward passes per optimiser step on each process: global batch / (batch * processes)."""
    per_round = opts.batch_size * world_size
    global_batch = opts.global_batch_size or per_round
    if global_batch % per_round:
        raise UsageError(
            f"--global-batch-size {global_batch} is not a multiple of --batch-size {opts.batch_size} "
            f"x {world_size} process(es)"
        )
    return global_batch // per_round


def model_config(opts: PretrainOptions) -> HyenaConfig:
    """The architecture: a preset (dimensions overridable) or --d-model/--n-layer/--d-inner."""
    base = preset(opts.preset) if opts.preset else HyenaConfig(l_max=opts.seq_len + 2)
    d_model = opts.d_model or base.d_model
    changes = {"d_model": d_model, "n_layer": opts.n_layer or base.n_layer}
    changes["d_inner"] = opts.d_inner or (base.d_inner if d_model == base.d_model else 4 * d_model)
    changes["l_max"] = opts.l_max or base.l_max
    if changes["l_max"] < opts.seq_len:
        raise UsageError(f"--seq-len {opts.seq_len} is longer than the model's l_max {changes['l_max']}")
    return base.replace(**changes)


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


class Trainer:
    """One pretraining run: data, model, optimiser, loop, evaluation, checkpoints."""

    def __init__(self, opts: PretrainOptions, device: torch.device, dist: DistInfo, started: float | None = None):
        self.opts, self.device, self.dist = opts, device, dist
        self.started = time.perf_counter() if started is None else started  # the time limit counts from here
        self.precision = opts.precision if opts.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
        self.run_dir = Path(opts.output)
        self.accum = accumulation_steps(opts, dist.world_size)
        self.tokens_per_step = opts.batch_size * self.accum * dist.world_size * opts.seq_len
        self.step, self.tokens_seen, self.last_loss, self.last_val = 0, 0, None, None
        self.last_lr = self.last_norm = 0.0
        self.saved_step: int | None = None
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=dist.is_main)
        self._check_run_dir()
        seed_everything(opts.seed + dist.rank)
        self.split, self.sampler, self.val = self._load_data()
        self._record_run()  # after the data: a FASTA that cannot be used leaves no run directory behind
        self.model = self._build_model()
        self.optimizer = make_optimizer(self.model, opts.lr, opts.weight_decay)
        self.ddp = self._wrap(self.model)
        if opts.resume and (self.run_dir / CHECKPOINT_DIR).is_dir():
            self._restore(load_training_state(self.run_dir))

    # -- setup

    def _check_run_dir(self) -> None:
        """A fresh run refuses a RUN_DIR that holds a checkpoint (unless --force)."""
        if not self.opts.resume and (self.run_dir / CHECKPOINT_DIR).exists() and not self.opts.force:
            raise UsageError(
                f"{self.run_dir} already holds a run: continue it with --resume {self.run_dir}, or pass --force"
            )

    def _record_run(self) -> None:
        """A fresh run records its settings in RUN_DIR/run.json (and starts a new metrics.jsonl)."""
        if self.opts.resume:
            return
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            record = {"options": asdict(self.opts), "genomelm": __version__, "started": _now()}
            write_text(self.run_dir / "run.json", json.dumps(record, indent=2, sort_keys=True) + "\n")

    def _load_data(self):
        """Split the genome, read the training intervals, pick the validation windows; fail before training."""
        opts = self.opts
        with FastaSource(opts.fasta) as fasta:
            lengths = fasta.contig_lengths()
            split = data.plan_split(lengths, opts.train_regions, opts.val_regions, opts.val_contigs, opts.val_fraction)
            _check_lengths(split, opts.seq_len)
            train_arrays = data.load_intervals(fasta, split.train)
            val_arrays = data.load_intervals(fasta, split.val)
        sampler = data.WindowSampler(train_arrays, opts.seed, self.dist.rank, opts.max_n_frac, opts.rc_aug)
        usable = sampler.usable_windows(opts.seq_len)
        if usable == 0:
            raise InputError(
                f"no window of {opts.seq_len:,} bases in the training regions has at most "
                f"{opts.max_n_frac:.0%} N: use shorter --seq-len, other regions, or raise --max-n-frac"
            )
        val = data.validation_windows(val_arrays, opts.seq_len, opts.max_n_frac, opts.val_windows or None)
        if split.val and len(val) == 0:
            raise InputError(f"the validation regions hold no window of {opts.seq_len:,} bases with few enough N")
        self._info_data(split, usable, len(val))
        return split, sampler, val

    def _info_data(self, split: data.Split, usable: int, n_val: int) -> None:
        self._info(
            "training on %s bp in %d interval(s) (%s windows of %s bp pass the N filter); validation: %s",
            f"{split.train_bases:,}",
            len(split.train),
            f"{usable:,}",
            f"{self.opts.seq_len:,}",
            f"{n_val} windows from {split.val_bases:,} bp" if n_val else "none (see --val-regions)",
        )

    def _build_model(self) -> HyenaDNA:
        if self.opts.resume:
            model = load_checkpoint_dir(self.run_dir / CHECKPOINT_DIR)
        else:
            model = HyenaDNA(model_config(self.opts))
        model.set_conv_backend(self.opts.conv_backend)
        model.set_gradient_checkpointing(self.opts.grad_checkpointing)
        return model.to(self.device).train()

    def _wrap(self, model: HyenaDNA):
        if not self.dist.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    # -- the loop

    def train(self) -> PretrainSummary:
        opts, started = self.opts, time.perf_counter()
        self._info(
            "model: %s parameters, d_model %d, %d layers, l_max %d; %d step(s) of %s tokens (%d x %d x %d process(es)"
            " x %d bp), %s on %s",
            f"{self.model.num_parameters():,}",
            self.model.config.d_model,
            self.model.config.n_layer,
            self.model.l_max,
            opts.steps,
            f"{self.tokens_per_step:,}",
            opts.batch_size,
            self.accum,
            self.dist.world_size,
            opts.seq_len,
            self.precision,
            self.device,
        )
        start_step, stopped_by = self.step, None
        meter = _Meter(self.step)
        with StopRequest() as stop, self._progress() as bar:
            task = bar.add_task("pretrain", total=opts.steps * self.tokens_per_step, completed=self.tokens_seen)
            while self.step < opts.steps and stopped_by is None:
                loss = self.train_step()
                meter.tick(self.step, self.tokens_per_step)
                bar.update(task, completed=self.step * self.tokens_per_step, description=self._status(loss))
                self._after_step(loss, meter)
                stopped_by = self._should_stop(stop, meter)
            self._finish(stopped_by, start_step)
        seconds = time.perf_counter() - started
        return self._summary(stopped_by, seconds, meter)

    def train_step(self) -> float:
        """One optimiser step (gradient accumulation over ``accum`` forward passes); the mean loss over ranks."""
        opts = self.opts
        length = seqlen_at(self.step, opts.seq_len, opts.seqlen_warmup)
        count = sequences_per_batch(opts.batch_size, opts.seq_len, length)
        total = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            batch = torch.from_numpy(self.sampler.sample(count, length)).to(self.device, non_blocking=True)
            with self._sync(micro == self.accum - 1):
                loss = forward_loss(self.ddp, batch, self.device, self.precision) / self.accum
                loss.backward()
            total += loss.detach()
        return self._optimizer_step(total)

    def _sync(self, last: bool):
        """DDP averages gradients only on the last forward pass of an accumulation round."""
        if self.dist.enabled and not last:
            return self.ddp.no_sync()
        return contextlib.nullcontext()

    def _optimizer_step(self, loss: torch.Tensor) -> float:
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.opts.grad_clip)
        reduced = all_reduce(torch.stack([loss.float(), grad_norm.float()]), self.dist)  # (2,)
        mean_loss, norm = reduced[0].item() / self.dist.world_size, reduced[1].item()
        if not (math.isfinite(mean_loss) and math.isfinite(norm)):
            self._diverged(mean_loss, norm)
        lr = self.opts.lr * cosine_lr_factor(self.step, self.opts.warmup_steps, self.opts.steps, self.opts.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self.last_loss, self.last_lr, self.last_norm = mean_loss, lr, norm / self.dist.world_size
        return mean_loss

    def _diverged(self, loss: float, norm: float) -> None:
        kept = self._checkpoint_step()
        where = "no checkpoint was written yet"
        if kept is not None:
            where = f"the last good checkpoint (step {kept}) is kept in {self.run_dir / CHECKPOINT_DIR}"
        raise GenomelmError(
            f"training diverged at step {self.step + 1}: loss {loss}, gradient norm {norm}; {where}; "
            "lower --lr or raise --warmup-steps, then --resume"
        )

    def _checkpoint_step(self) -> int | None:
        path = self.run_dir / CHECKPOINT_DIR / "config.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())["model"]["extra"].get("step")

    def _after_step(self, loss: float, meter: _Meter) -> None:
        opts, step = self.opts, self.step
        if step % opts.log_every == 0 or step == opts.steps:
            self._log_train(loss, meter)
        if self.val is not None and len(self.val) and (step % opts.eval_every == 0 or step == opts.steps):
            self.evaluate()
        if step % opts.save_every == 0 and step < opts.steps:
            self.save()

    def _should_stop(self, stop: StopRequest, meter: _Meter) -> str | None:
        """All ranks agree on stopping (a signal or the clock may reach only some of them)."""
        reason = None
        if self.opts.stop_at_step is not None and self.step >= self.opts.stop_at_step:
            reason = "stop-at-step"
        elif self.opts.time_limit is not None:
            # Leave room for one more step and a checkpoint before the limit.
            if time.perf_counter() - self.started + 2 * meter.step_seconds() + 5 > self.opts.time_limit:
                reason = "time-limit"
        codes = {None: 0, "stop-at-step": 1, "time-limit": 2, "SIGTERM": 3, "SIGINT": 4}
        code = max(codes[reason], codes.get(stop.signal_name, 0))
        code = int(all_reduce(torch.tensor([code], device=self.device), self.dist, op="max").item())
        return {v: k for k, v in codes.items()}[code]

    def _finish(self, stopped_by: str | None, start_step: int) -> None:
        if self.saved_step != self.step and (self.step > start_step or not (self.run_dir / CHECKPOINT_DIR).exists()):
            self.save()
        if stopped_by is None:
            self._info("finished %d steps; model in %s", self.step, self.run_dir / CHECKPOINT_DIR)
        else:
            self._info(
                "stopped (%s) after step %d; checkpoint in %s; continue with --resume %s",
                stopped_by,
                self.step,
                self.run_dir / CHECKPOINT_DIR,
                self.run_dir,
            )
        if stopped_by == "SIGINT":
            raise KeyboardInterrupt

    # -- evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Per-base loss over the fixed validation windows (A/C/G/T targets), split over ranks."""
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # (nll, bases)
        mine = self.val[self.dist.rank :: self.dist.world_size]
        for first in range(0, len(mine), self.opts.batch_size):
            batch = torch.from_numpy(mine[first : first + self.opts.batch_size].astype(np.int64)).to(self.device)
            sums += torch.stack(window_nll(self.model, batch, self.device, self.precision))
        self.model.train()
        nll, bases = all_reduce(sums, self.dist).tolist()
        loss = nll / max(bases, 1)
        record = {"step": self.step, "val_loss": loss, "val_ppl": math.exp(loss)}
        record.update(val_bits_per_base=loss / math.log(2), val_bases=int(bases), tokens_seen=self.tokens_seen)
        self.last_val = record
        self.metrics.write(record)
        self._info(
            "step %d: validation loss %.4f, perplexity %.4f, %.4f bits/base (%s bases)",
            self.step,
            loss,
            record["val_ppl"],
            record["val_bits_per_base"],
            f"{int(bases):,}",
        )
        return record

    # -- checkpoints

    def save(self) -> None:
        """Every rank hands its RNG and sampler states to rank 0, which writes RUN_DIR/checkpoint."""
        states = gather_objects({"rng": portable_rng_state(), "sampler": self.sampler.state()}, self.dist)
        if not self.dist.is_main:
            return
        state = {
            "version": STATE_VERSION,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "optimizer": self.optimizer.state_dict(),
            "world_size": self.dist.world_size,
            "ranks": states,
            "split": _split_record(self.split),
            "last_val": self.last_val,
        }
        provenance = {
            "source": "genomelm pretrain",
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "seq_len": self.opts.seq_len,
            "data": Path(self.opts.fasta).name,
        }
        save_checkpoint(self.run_dir, self.model, state, card=self._card(), **provenance)
        self.saved_step = self.step
        log.debug("checkpoint written at step %d", self.step)

    def _restore(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise InputError(f"{self.run_dir}: training state version {state.get('version')} is not supported")
        if state["split"] != _split_record(self.split):
            raise InputError(f"--resume {self.run_dir}: the FASTA's training/validation regions differ from the run's")
        self.step, self.tokens_seen, self.last_val = state["step"], state["tokens_seen"], state.get("last_val")
        self.optimizer.load_state_dict(state["optimizer"])
        self._restore_streams(state)
        self.metrics.truncate_after(self.step)
        self._info("resumed %s at step %d (%s tokens seen)", self.run_dir, self.step, f"{self.tokens_seen:,}")

    def _restore_streams(self, state: dict) -> None:
        """Exact continuation with the same number of processes; fresh, step-dependent streams otherwise."""
        if state["world_size"] == self.dist.world_size:
            mine = state["ranks"][self.dist.rank]
            set_rng_state(mine["rng"])
            self.sampler.set_state(mine["sampler"])
            return
        log.warning(
            "resuming with %d process(es) instead of %d: data streams are re-seeded (not bit-exact)",
            self.dist.world_size,
            state["world_size"],
        )
        seed_everything(self.opts.seed + 7919 * self.step + self.dist.rank)
        self.sampler = data.WindowSampler(
            self.sampler.arrays,
            self.opts.seed + 7919 * self.step,
            self.dist.rank,
            self.opts.max_n_frac,
            self.opts.rc_aug,
        )

    def _card(self) -> str:
        opts, c = self.opts, self.model.config
        val = self.last_val
        lines = [
            f"# HyenaDNA pretrained with genomelm {__version__}\n",
            f"- architecture: d_model {c.d_model}, {c.n_layer} layers, d_inner {c.d_inner}, l_max {c.l_max}, "
            f"{self.model.num_parameters():,} parameters",
            f"- data: {opts.fasta}; training {self.split.train_bases:,} bp; validation {self.split.val_bases:,} bp",
            f"- training: step {self.step} of {opts.steps}, {self.tokens_seen:,} tokens, seq_len {opts.seq_len}, "
            f"global batch {self.tokens_per_step:,} tokens, lr {opts.lr}, rc_aug {opts.rc_aug}, "
            f"seqlen_warmup {opts.seqlen_warmup}, {self.precision}, {self.dist.world_size} process(es)",
        ]
        if val:
            lines.append(
                f"- validation (step {val['step']}): perplexity {val['val_ppl']:.4f}, "
                f"{val['val_bits_per_base']:.4f} bits/base over {val['val_bases']:,} bases"
            )
        lines.append(f"- written {_now()}\n\nLoad with `--model {self.run_dir / CHECKPOINT_DIR}`.\n")
        return "\n".join(lines)

    # -- reporting

    def _status(self, loss: float) -> str:
        ppl = math.exp(min(loss, 50))
        return f"step {self.step}/{self.opts.steps} loss {loss:.4f} ppl {ppl:.3f} lr {self.last_lr:.2e}"

    def _log_train(self, loss: float, meter: _Meter) -> None:
        rate = meter.tokens_per_second()
        length = seqlen_at(self.step - 1, self.opts.seq_len, self.opts.seqlen_warmup)
        record = {
            "step": self.step,
            "loss": loss,
            "ppl": math.exp(min(loss, 50)),
            "lr": self.last_lr,
            "grad_norm": self.last_norm,
            "seq_len": length,
            "tokens_seen": self.tokens_seen,
            "tokens_per_s": rate,
            "time": time.time(),
        }
        self.metrics.write(record)
        eta = meter.step_seconds() * (self.opts.steps - self.step)
        self._info("%s seq %d | %s | ETA %s", self._status(loss), length, format_rate(rate, "tok"), _duration(eta))

    def _summary(self, stopped_by: str | None, seconds: float, meter: _Meter) -> PretrainSummary:
        val = self.last_val or {}
        return PretrainSummary(
            run_dir=str(self.run_dir),
            step=self.step,
            steps=self.opts.steps,
            tokens_seen=self.tokens_seen,
            loss=self.last_loss,
            val_loss=val.get("val_loss"),
            val_ppl=val.get("val_ppl"),
            seconds=seconds,
            tokens_per_second=meter.overall_tokens_per_second(),
            parameters=self.model.num_parameters(),
            world_size=self.dist.world_size,
            stopped_by=stopped_by,
            rank=self.dist.rank,
        )

    def _progress(self):
        """The progress bar on rank 0 only (every rank of a torchrun job shares the terminal)."""
        if self.dist.is_main:
            return progress("tok")
        return progress_disabled()

    def _info(self, message: str, *args) -> None:
        if self.dist.is_main:
            log.info(message, *args)


# --------------------------------------------------------------------------- losses


def forward_loss(model, batch: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """Mean next-token cross-entropy of (B, L + 1) windows; N targets ignored (there is nothing to learn)."""
    inputs, targets = batch[:, :-1], batch[:, 1:].clone()  # (B, L) each
    targets[targets == N_ID] = PAD_ID
    with autocast(device, precision):
        logits = model(inputs)  # (B, L, V)
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=PAD_ID, reduction="sum")
    return losses / (targets != PAD_ID).sum().clamp(min=1)


def window_nll(model, batch: torch.Tensor, device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of -ln P, number of targets) over the A/C/G/T targets of (B, L + 1) windows, in float64."""
    inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, L)
    with autocast(device, precision):
        logits = model(inputs)  # (B, L, V)
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")  # (B*L,)
    is_base = (targets.flatten() >= A_ID) & (targets.flatten() <= T_ID)
    return nll[is_base].double().sum(), is_base.sum().double()


# --------------------------------------------------------------------------- helpers


class _Meter:
    """Step timing for tokens/s and ETA (the first steps after a start include warm-up)."""

    def __init__(self, step: int):
        self.start_step, self.times, self.tokens = step, [time.perf_counter()], [0]

    def tick(self, step: int, tokens: int) -> None:
        self.times.append(time.perf_counter())
        self.tokens.append(self.tokens[-1] + tokens)

    def step_seconds(self, window: int = 20) -> float:
        recent = self.times[-window - 1 :]
        return (recent[-1] - recent[0]) / max(1, len(recent) - 1)

    def tokens_per_second(self, window: int = 20) -> float:
        k = min(window, len(self.times) - 1)
        if k == 0:
            return 0.0
        return (self.tokens[-1] - self.tokens[-1 - k]) / max(self.times[-1] - self.times[-1 - k], 1e-9)

    def overall_tokens_per_second(self) -> float:
        return self.tokens[-1] / max(self.times[-1] - self.times[0], 1e-9)


@contextlib.contextmanager
def progress_disabled():
    """A stand-in progress bar that shows nothing."""

    class _Silent:
        def add_task(self, *args, **kwargs) -> int:
            return 0

        def update(self, *args, **kwargs) -> None:
            pass

    yield _Silent()


def _check_lengths(split: data.Split, seq_len: int) -> None:
    """A clear error when no training interval can hold one window (e.g. a genome shorter than seq_len)."""
    if not split.train:
        raise InputError("no training sequence left (the validation regions cover all of it)")
    longest = max(i.length for i in split.train)
    if longest < seq_len:
        raise InputError(f"--seq-len {seq_len:,} is longer than every training interval (longest: {longest:,} bp)")


def _split_record(split: data.Split) -> dict:
    return {"train": [str(i) for i in split.train], "val": [str(i) for i in split.val]}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
