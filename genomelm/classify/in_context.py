"""In-context classification (HyenaDNA paper §4.4): records as token rows, soft-prompt fitting and
instruction tuning on labelled prompts, test prompts and the logits after each query.

``Context.opts`` is a ``genomelm.commands.in_context.InContextOptions`` (any object with its fields); the
command resolves the options, loads the model and writes the outputs. See the command's docstring for the
methods and their recipes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genomelm.classify.readouts import TOKEN_NAMES, readouts
from genomelm.errors import GenomelmError, InputError, UsageError
from genomelm.formats.labels import LabelledRecord, class_index
from genomelm.icl_prompts import (
    STREAM_DEV,
    STREAM_TEST,
    STREAM_TRAIN,
    STREAM_TUNE,
    DemoPool,
    Prompt,
    build_prompt,
    prompt_length,
)
from genomelm.log import get_logger, progress
from genomelm.model.lm import HyenaDNA
from genomelm.model.soft_prompt import SoftPrompt, prompted_logits
from genomelm.runtime import autocast, batched, pad_right
from genomelm.tokenizer import PAD_ID, VOCAB_SIZE, CharTokenizer
from genomelm.training import make_optimizer, stop_if_diverged

log = get_logger(__name__)

IGNORE = -100  # cross-entropy target of padded label positions


CLIP_NORM = 1.0


@dataclass
class Task:
    classes: list[str]  # label values in class-index order
    label_ids: list[int]  # label token id of each class

    @property
    def label_names(self) -> list[str]:
        return [TOKEN_NAMES[i] for i in self.label_ids]


@dataclass
class Rows:
    """Records after tokenisation and class lookup."""

    records: list[LabelledRecord]
    ids: list[np.ndarray | None]  # None where the record cannot be used
    classes: np.ndarray  # (n,) class index; -1 when the label is missing or not a known class
    flags: list[str]  # '.' or why the record is flagged


@dataclass
class Context:
    """Everything a method needs, prepared once."""

    opts: Any
    device: torch.device
    model: HyenaDNA
    task: Task
    test: Rows
    prompt: SoftPrompt | None = None
    pool: DemoPool | None = None  # labelled demonstrations (and training queries)
    dev: Rows | None = None
    flagged: dict[str, int] = field(default_factory=dict)  # reason -> count, for metrics.json

    @property
    def budget(self) -> int:
        """Tokens left for the text prompt once the soft prompt is in."""
        return self.model.l_max - (self.prompt.n_tokens if self.prompt is not None else 0)


def encode_rows(records: list[LabelledRecord], task: Task) -> Rows:
    """Tokenise every record; flag unusable ones ('.' = fine). Labels outside the task's classes are
    flagged but the record is still predicted (it is left out of the metrics)."""
    tokenizer = CharTokenizer()
    classes = np.array(class_index([r.label or "" for r in records], task.classes), dtype=np.int64)
    ids, flags = [], []
    for record, cls in zip(records, classes):
        try:
            if record.problem:
                raise InputError(record.problem)
            ids.append(tokenizer.encode(record.sequence, record=record.where))
            flags.append("." if record.label is None or cls >= 0 else f"unknown label {record.label!r}")
        except GenomelmError as exc:
            ids.append(None)
            flags.append(_reason(record, exc))
    return Rows(records, ids, classes, flags)


def _reason(record: LabelledRecord, exc: GenomelmError) -> str:
    """The message without its 'file:line: ' prefix."""
    message = str(exc)
    prefix = f"{record.where}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def trains_prompt(ctx: Context) -> bool:
    return ctx.prompt is not None and ctx.opts.prompt is None


def subset_rows(rows: Rows, keep: list[int]) -> Rows:
    return Rows(
        [rows.records[i] for i in keep], [rows.ids[i] for i in keep], rows.classes[keep], [rows.flags[i] for i in keep]
    )


def fit_soft_prompt(ctx: Context) -> dict:
    """Train only the soft prompt; keep the weights of the epoch with the lowest dev loss."""
    opts, prompt = ctx.opts, ctx.prompt
    ctx.model.requires_grad_(False)  # the backbone stays bit-identical
    optimizer = make_optimizer(prompt, opts.lr, opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=0)
    dev_prompts = _row_prompts(ctx, ctx.dev, STREAM_DEV)
    best, history = (math.inf, prompt.weight.detach().clone()), []
    for epoch in range(opts.epochs):
        train_loss = _train_epoch(ctx, _pool_prompts(ctx, STREAM_TRAIN, epoch), prompt, optimizer, epoch)
        dev_loss = _mean_loss(ctx, dev_prompts) if dev_prompts else train_loss  # no dev rows: watch training
        scheduler.step(dev_loss)
        lr = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "dev_loss": dev_loss, "lr": lr})
        log.info("epoch %d: train loss %.4f, dev loss %.4f", epoch + 1, train_loss, dev_loss)
        if dev_loss < best[0]:
            best = (dev_loss, prompt.weight.detach().clone())
        if _plateaued([h["dev_loss"] for h in history]):
            break
    with torch.no_grad():
        prompt.weight.copy_(best[1])
    prompt.eval()
    return {
        "kind": "soft-prompt",
        "epochs_run": len(history),
        "best_dev_loss": best[0],
        "dev_prompts": len(dev_prompts),
        "history": history,
    }


def _plateaued(dev_losses: list[float]) -> bool:
    """Early stop: the latest dev loss is no better than two or more earlier epochs' (official rule)."""
    latest = dev_losses[-1]
    return sum(latest >= earlier for earlier in dev_losses[:-1]) > 1


def instruction_tune(ctx: Context) -> dict:
    """Tune the whole model on N labelled k-shot prompts built from --train (queries and demonstrations)."""
    opts, pool = ctx.opts, ctx.pool
    n = min(opts.tune_samples, len(pool.ids))
    if n < opts.tune_samples:
        log.warning("--tune-samples %d: only %d training records, tuning on %d", opts.tune_samples, n, n)
    chosen = np.random.default_rng([opts.seed, STREAM_TUNE]).choice(len(pool.ids), size=n, replace=False)
    prompts = [_pool_prompt(ctx, int(row), STREAM_TUNE, int(row)) for row in chosen]
    _count_too_long(ctx, "tune", prompts)
    prompts = [p for p in prompts if p is not None]
    ctx.model.requires_grad_(True)
    optimizer = make_optimizer(ctx.model, opts.lr, opts.weight_decay)
    losses = [_train_epoch(ctx, prompts, ctx.model, optimizer, epoch) for epoch in range(opts.epochs)]
    ctx.model.eval()
    return {"kind": "instruction", "tune_prompts": len(prompts), "epochs_run": opts.epochs, "train_loss": losses}


def _train_epoch(ctx: Context, prompts: list[Prompt], trained: torch.nn.Module, optimizer, epoch: int) -> float:
    """One pass over ``prompts`` in a seeded shuffled order, updating ``trained``; returns the mean loss."""
    ctx.model.train()  # dropout on, as the official recipe (a frozen backbone still gets no updates)
    if ctx.prompt is not None:
        ctx.prompt.train()
    order = np.random.default_rng([ctx.opts.seed, STREAM_TRAIN, epoch, 1]).permutation(len(prompts))
    params = [p for p in trained.parameters() if p.requires_grad]
    losses = []
    with progress("prompts") as bar:
        task = bar.add_task(f"epoch {epoch + 1}", total=len(prompts))
        for batch in batched([prompts[i] for i in order], ctx.opts.batch_size):
            loss = _batch_loss(ctx, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
            optimizer.step()
            losses.append(loss.item())
            stop_if_diverged(losses[-1], trained, f"epoch {epoch + 1}, batch {len(losses)}")
            bar.advance(task, len(batch))
    ctx.model.eval()
    return float(np.mean(losses)) if losses else math.nan


def _batch_loss(ctx: Context, batch: list[Prompt]) -> torch.Tensor:
    """Cross-entropy over the whole vocabulary at every label position of the batch's prompts."""
    ids, _ = pad_right([p.ids for p in batch], PAD_ID, ctx.device)  # (B, L)
    positions, targets = _label_targets(batch, ctx.device)  # (B, M), (B, M)
    with autocast(ctx.device, ctx.opts.precision):
        logits = prompted_logits(ctx.model, ids, ctx.prompt)  # (B, L, V)
    rows = torch.arange(len(batch), device=ctx.device)[:, None]
    picked = logits.float()[rows, positions]  # (B, M, V)
    return F.cross_entropy(picked.reshape(-1, picked.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


def _label_targets(batch: list[Prompt], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M) label positions and targets, padded with position 0 / target IGNORE."""
    width = max(len(p.label_positions) for p in batch)
    positions = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, p in enumerate(batch):
        positions[i, : len(p.label_positions)] = torch.as_tensor(p.label_positions)
        targets[i, : len(p.targets)] = torch.as_tensor(np.where(p.targets < 0, IGNORE, p.targets))
    return positions.to(device), targets.to(device)


@torch.no_grad()
def _mean_loss(ctx: Context, prompts: list[Prompt]) -> float:
    """Mean loss over ``prompts`` in eval mode (no dropout)."""
    ctx.model.eval()
    ctx.prompt.eval()
    total = 0.0
    for batch in batched(prompts, ctx.opts.eval_batch_size):
        total += _batch_loss(ctx, batch).item() * len(batch)
    return total / len(prompts)


def _pool_prompt(ctx: Context, row: int, stream: int, key: int) -> Prompt | None:
    """A labelled training prompt whose query is pool row ``row`` (never one of its own demonstrations)."""
    pool = ctx.pool
    label = ctx.task.label_ids[pool.classes[row]]
    return pool.make_prompt(pool.ids[row], ctx.opts.shots, ctx.budget, stream, key, label, exclude=row)


def _pool_prompts(ctx: Context, stream: int, epoch: int) -> list[Prompt]:
    """One labelled prompt per pool row, with demonstrations drawn afresh for each epoch."""
    n = len(ctx.pool.ids)
    prompts = [_pool_prompt(ctx, row, stream, epoch * n + row) for row in range(n)]
    if epoch == 0:
        _count_too_long(ctx, "train", prompts)
    return [p for p in prompts if p is not None]


def _row_prompts(ctx: Context, rows: Rows | None, stream: int) -> list[Prompt]:
    """Labelled prompts for the dev rows (their demonstrations come from the pool)."""
    if rows is None:
        return []
    labels = [ctx.task.label_ids[c] for c in rows.classes]
    prompts = [_make_prompt(ctx, ids, stream, i, labels[i]) for i, ids in enumerate(rows.ids)]
    _count_too_long(ctx, "dev", prompts)
    return [p for p in prompts if p is not None]


def _count_too_long(ctx: Context, role: str, prompts: list[Prompt | None]) -> None:
    missing = sum(p is None for p in prompts)
    if missing and ctx.opts.strict:
        raise InputError(f"{missing} {role} records are longer than the model allows ({ctx.budget} tokens) (--strict)")
    if missing:
        log.warning("%d %s records are longer than the model allows (%d tokens): not used", missing, role, ctx.budget)
        ctx.flagged[f"{role}_records_too_long"] = missing


def _make_prompt(ctx: Context, ids: np.ndarray, stream: int, key: int, label: int | None) -> Prompt | None:
    """A prompt for a record outside the pool (dev or test), or None if too long even without demonstrations."""
    if ctx.pool is None:  # zero-shot without --train
        return build_prompt(ids, query_label=label) if prompt_length([], len(ids)) <= ctx.budget else None
    return ctx.pool.make_prompt(ids, ctx.opts.shots, ctx.budget, stream, key, label)


def test_prompts(ctx: Context) -> list[Prompt | None]:
    """One prompt per test record (None where it is flagged or too long); flags what was cut or skipped."""
    prompts = []
    for i, ids in enumerate(ctx.test.ids):
        prompt = _make_prompt(ctx, ids, STREAM_TEST, i, None) if ids is not None else None
        if ids is not None and prompt is None:
            ctx.test.flags[i] = f"too long: {len(ids) + 1} tokens, the model takes {ctx.budget}"
        prompts.append(prompt)
    _check_test_flags(ctx, prompts)
    return prompts


def _check_test_flags(ctx: Context, prompts: list[Prompt | None]) -> None:
    """Warn about (or with --strict refuse) flagged records and prompts that got fewer shots than asked."""
    flagged = [(r.where, f) for r, f in zip(ctx.test.records, ctx.test.flags) if f != "."]
    cut = [p.shots for p in prompts if p is not None and p.shots < ctx.opts.shots]
    if ctx.opts.strict and flagged:
        raise InputError(f"{flagged[0][0]}: {flagged[0][1]} (--strict)")
    if ctx.opts.strict and cut:
        raise UsageError(
            f"{len(cut)} prompts with {ctx.opts.shots} shots per class do not fit the model's maximum length "
            f"({ctx.budget} tokens) (--strict); lower --shots"
        )
    if flagged:
        log.warning("%d test records flagged (first: %s: %s)", len(flagged), *flagged[0])
    if cut:
        log.warning(
            "%d prompts do not fit the model's maximum length (%d tokens) with %d shots per class: "
            "they use fewer (down to %d)",
            len(cut),
            ctx.budget,
            ctx.opts.shots,
            min(cut),
        )
    ctx.flagged["prompts_with_fewer_shots"] = len(cut)


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def predict_logits(ctx: Context, prompts: list[Prompt | None]) -> tuple[np.ndarray, np.ndarray]:
    """(n, VOCAB_SIZE) logits after each query's final [SEP] (NaN where skipped), and (n,) shots used (-1)."""
    ctx.model.eval()
    if ctx.prompt is not None:
        ctx.prompt.eval()
    logits = np.full((len(prompts), VOCAB_SIZE), np.nan, dtype=np.float32)
    shots = np.array([p.shots if p is not None else -1 for p in prompts], dtype=np.int64)
    todo = [i for i, p in enumerate(prompts) if p is not None]
    with progress("prompts") as bar:
        task = bar.add_task("predict", total=len(todo))
        for batch in batched(todo, ctx.opts.eval_batch_size):
            logits[batch] = _last_logits(ctx, [prompts[i] for i in batch])
            bar.advance(task, len(batch))
    return logits, shots


def _last_logits(ctx: Context, batch: list[Prompt]) -> np.ndarray:
    """(B, VOCAB_SIZE) logits at each prompt's last token (right padding never reaches it: causal model)."""
    ids, lengths = pad_right([p.ids for p in batch], PAD_ID, ctx.device)  # (B, L)
    with autocast(ctx.device, ctx.opts.precision):
        logits = prompted_logits(ctx.model, ids, ctx.prompt)  # (B, L, V)
    last = logits[torch.arange(len(batch), device=ctx.device), lengths - 1]  # (B, V)
    return last[:, :VOCAB_SIZE].float().cpu().numpy()


def prediction_rows(ctx: Context, logits: np.ndarray, shots: np.ndarray) -> list[dict]:
    by_label, _, probs = readouts(logits, ctx.task.label_ids)
    tokens = np.nan_to_num(logits, nan=0).argmax(axis=1)
    rows = []
    for i, record in enumerate(ctx.test.records):
        done = by_label[i] >= 0
        rows.append(
            {
                "id": record.id,
                "predicted": ctx.task.classes[by_label[i]] if done else "NA",
                "predicted_token": TOKEN_NAMES[tokens[i]] if done else "NA",
                "probs": probs[i],
                "shots": str(shots[i]) if done else "NA",
                "label": record.label,
                "flag": ctx.test.flags[i],
            }
        )
    return rows
