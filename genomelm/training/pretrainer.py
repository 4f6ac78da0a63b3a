"""The pretraining engine: one run's data, model, optimiser, loop, evaluation, checkpoints and model card.

``Trainer`` reads its settings from a ``genomelm.commands.pretrain.PretrainOptions`` (any object with the
same fields); the command resolves and checks them, this module runs them. See the command's docstring for
the recipe and the RUN_DIR layout.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genomelm import __version__
from genomelm.errors import GenomelmError, InputError, UsageError
from genomelm.formats.atomic import write_text
from genomelm.formats.checkpoint import load_checkpoint_dir
from genomelm.formats.fasta import FastaSource
from genomelm.log import format_rate, get_logger, progress
from genomelm.model.config import HyenaConfig, preset
from genomelm.model.lm import HyenaDNA
from genomelm.runtime import resolve_precision
from genomelm.training import windows as data
from genomelm.training.distributed import DistInfo, all_reduce, gather_objects
from genomelm.training.losses import forward_loss, window_nll
from genomelm.training.meter import StepMeter, duration, utc_now
from genomelm.training.optim import cosine_lr_factor, make_optimizer, seqlen_at, sequences_per_batch
from genomelm.training.state import (
    CHECKPOINT_DIR,
    MetricsLog,
    StopRequest,
    load_training_state,
    portable_rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)

log = get_logger(__name__)

STATE_VERSION = 1
Options = Any  # a genomelm.commands.pretrain.PretrainOptions (the engine does not import commands)


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


def accumulation_steps(opts: Options, world_size: int) -> int:
    """Forward passes per optimiser step on each process: global batch / (batch * processes)."""
    per_round = opts.batch_size * world_size
    global_batch = opts.global_batch_size or per_round
    if global_batch % per_round:
        raise UsageError(
            f"--global-batch-size {global_batch} is not a multiple of --batch-size {opts.batch_size} "
            f"x {world_size} process(es)"
        )
    return global_batch // per_round


def model_config(opts: Options) -> HyenaConfig:
    """The architecture: a preset (dimensions overridable) or --d-model/--n-layer/--d-inner."""
    base = preset(opts.preset) if opts.preset else HyenaConfig(l_max=opts.seq_len + 2)
    d_model = opts.d_model or base.d_model
    changes = {"d_model": d_model, "n_layer": opts.n_layer or base.n_layer}
    changes["d_inner"] = opts.d_inner or (base.d_inner if d_model == base.d_model else 4 * d_model)
    changes["l_max"] = opts.l_max or base.l_max
    if changes["l_max"] < opts.seq_len:
        raise UsageError(f"--seq-len {opts.seq_len} is longer than the model's l_max {changes['l_max']}")
    return base.replace(**changes)


class Trainer:
    """One pretraining run: data, model, optimiser, loop, evaluation, checkpoints."""

    def __init__(self, opts: Options, device: torch.device, dist: DistInfo, started: float | None = None):
        self.opts, self.device, self.dist = opts, device, dist
        self.started = time.perf_counter() if started is None else started  # the time limit counts from here
        self.precision = resolve_precision(opts.precision, device)
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
            record = {"options": asdict(self.opts), "genomelm": __version__, "started": utc_now()}
            write_text(self.run_dir / "run.json", json.dumps(record, indent=2, sort_keys=True) + "\n")

    def _load_data(self):
        """Split the genome, read the training intervals, pick the validation windows; fail before training."""
        opts = self.opts
        with FastaSource(opts.fasta) as fasta:
            lengths = fasta.contig_lengths()
            split = data.plan_split(lengths, opts.train_regions, opts.val_regions, opts.val_contigs, opts.val_fraction)
            data.check_training_lengths(split, opts.seq_len)
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
        meter = StepMeter(self.step)
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

    def _after_step(self, loss: float, meter: StepMeter) -> None:
        opts, step = self.opts, self.step
        if step % opts.log_every == 0 or step == opts.steps:
            self._log_train(loss, meter)
        if self.val is not None and len(self.val) and (step % opts.eval_every == 0 or step == opts.steps):
            self.evaluate()
        if step % opts.save_every == 0 and step < opts.steps:
            self.save()

    def _should_stop(self, stop: StopRequest, meter: StepMeter) -> str | None:
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
        if self.dist.enabled:  # one process alone decides without a device round trip (a sync per step on a GPU)
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
            "split": data.split_record(self.split),
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
        if state["split"] != data.split_record(self.split):
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
        lines.append(f"- written {utc_now()}\n\nLoad with `--model {self.run_dir / CHECKPOINT_DIR}`.\n")
        return "\n".join(lines)

    # -- reporting

    def _status(self, loss: float) -> str:
        ppl = math.exp(min(loss, 50))
        return f"step {self.step}/{self.opts.steps} loss {loss:.4f} ppl {ppl:.3f} lr {self.last_lr:.2e}"

    def _log_train(self, loss: float, meter: StepMeter) -> None:
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
        self._info("%s seq %d | %s | ETA %s", self._status(loss), length, format_rate(rate, "tok"), duration(eta))

    def _summary(self, stopped_by: str | None, seconds: float, meter: StepMeter) -> PretrainSummary:
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
        return progress("tok", enabled=self.dist.is_main)

    def _info(self, message: str, *args) -> None:
        if self.dist.is_main:
            log.info(message, *args)


# --------------------------------------------------------------------------- helpers
