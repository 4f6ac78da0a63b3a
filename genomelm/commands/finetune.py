"""`genomelm finetune`: sequence classification on labelled DNA with a HyenaDNA backbone.

Recipe: pool the final hidden states over the real tokens (mean / last / first), one Linear head, cross
entropy; AdamW (decay on weight matrices only, training.param_groups) with linear warmup + cosine decay;
gradient clipping at 1.0; bf16 autocast on GPU. Validation after every epoch; the best epoch by the chosen
metric is kept and early stopping ends the run after ``patience`` epochs without improvement.
``--freeze-backbone`` trains the head alone (a linear probe) on features computed once.

Sequences are tokenised with the official ids and end with [SEP], as the official pretraining windows do.
The output directory is a native checkpoint: the backbone (loadable by ``load_model`` / ``embed --model``),
``head.*`` tensors, a ``classifier`` block in config.json, metrics.json and a model card.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genomelm import __version__
from genomelm.commands._common import autocast, model_label, pad_right, select_device, set_threads
from genomelm.errors import InputError, UsageError
from genomelm.formats.atomic import refuse_overwriting_inputs
from genomelm.formats.checkpoint import TRUNCATIONS, ClassifierMeta, load_model, save_classifier
from genomelm.formats.labels import Columns, LabelledRecord, class_index, class_names, read_records
from genomelm.log import get_logger, progress
from genomelm.model.lm import CLASSIFIER_POOLINGS, HyenaDNAClassifier
from genomelm.tokenizer import PAD_ID, SEP_ID, CharTokenizer, reverse_complement_ids
from genomelm.training import make_optimizer, make_scheduler, seed_everything, stop_if_diverged

log = get_logger(__name__)

METRICS = ("mcc", "accuracy", "f1_macro", "auroc", "loss")  # early-stopping choices; loss: lower is better
PRECISIONS = ("auto", "fp32", "bf16")
GRAD_CLIP = 1.0  # max global gradient norm (the official HyenaDNA fine-tuning recipe clips at 1.0)


@dataclass
class FinetuneOptions:
    train: str
    val: str
    output: str  # output checkpoint directory
    test: str | None = None
    model: str | None = None  # base model (--model); None = the shipped default
    random_init: bool = False  # the base model's architecture with fresh random weights (a baseline)
    fasta: str | None = None  # reference FASTA for BED inputs
    labels: str | None = None  # id -> label table for FASTA inputs without label= in the headers
    sequence_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    input_format: str = "auto"  # auto, table, fasta, bed
    pooling: str = "mean"
    freeze_backbone: bool = False
    rc_aug: bool = False  # reverse-complement each training sequence with probability 1/2
    epochs: int = 10
    batch_size: int = 64
    lr: float = 6e-4
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1  # fraction of all optimiser steps spent warming up
    patience: int = 3  # epochs without improvement before stopping; 0 = never stop early
    metric: str = "mcc"
    max_length: int | None = None  # bases; default: what the model takes (l_max minus the [SEP])
    truncate: str = "error"  # error; left = drop bases from the start; right = drop bases from the end
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    conv_backend: str | None = None
    threads: int | None = None
    force: bool = False  # replace an existing output directory
    trust_checkpoint: bool = False


@dataclass
class FinetuneSummary:
    output: str
    classes: list[str]
    best_epoch: int
    epochs_run: int
    val: dict
    test: dict | None
    trainable_parameters: int
    seconds: float
    history: list[dict] = field(default_factory=list)


@dataclass
class Dataset:
    """Tokenised split: base ids without [SEP] (each (L_i,)), class indices (N,), and record ids."""

    name: str
    ids: list[np.ndarray]
    labels: np.ndarray
    record_ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


# --------------------------------------------------------------------------- run


def run(opts: FinetuneOptions) -> FinetuneSummary:
    _check_options(opts)
    started = time.perf_counter()
    set_threads(opts.threads)
    seed_everything(opts.seed)
    device = select_device(opts.device, opts.conv_backend)
    precision = resolve_precision(opts.precision, device)
    base = load_model(opts.model, trust_checkpoint=opts.trust_checkpoint)
    max_length = _max_length(opts.max_length, base.l_max)
    splits, classes = _read_splits(opts, max_length)
    model = _build_classifier(base, len(classes), opts, device)
    trained = _train(model, splits, opts, device, precision)
    model.load_state_dict(trained.best_state)
    results = {
        name: evaluate(model, data, opts.batch_size, device, precision, opts.freeze_backbone)
        for name, data in splits.items()
        if name != "train"
    }
    summary = FinetuneSummary(
        output=opts.output,
        classes=classes,
        best_epoch=trained.best_epoch,
        epochs_run=len(trained.history),
        val=results["val"],
        test=results.get("test"),
        trainable_parameters=_trainable(model),
        seconds=time.perf_counter() - started,
        history=trained.history,
    )
    meta = ClassifierMeta(classes, opts.pooling, max_length, opts.truncate, True, _provenance(opts, base, splits))
    _save(model, meta, opts, summary, device, precision)
    report_table({"val": summary.val, "test": summary.test}, classes)
    log.info(
        "fine-tuned %s in %.1f s; best epoch %d of %d -> %s",
        model_label(opts.model, base),
        summary.seconds,
        summary.best_epoch,
        summary.epochs_run,
        opts.output,
    )
    return summary


def _check_options(opts: FinetuneOptions) -> None:
    checks = [
        (opts.pooling in CLASSIFIER_POOLINGS, f"--pooling must be one of {', '.join(CLASSIFIER_POOLINGS)}"),
        (opts.metric in METRICS, f"--metric must be one of {', '.join(METRICS)}"),
        (opts.truncate in TRUNCATIONS, f"--truncate must be one of {', '.join(TRUNCATIONS)}"),
        (opts.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
        (opts.epochs >= 1, "--epochs must be >= 1"),
        (opts.batch_size >= 1, "--batch-size must be >= 1"),
        (opts.lr > 0, "--lr must be > 0"),
        (opts.weight_decay >= 0, "--weight-decay must be >= 0"),
        (0 <= opts.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
        (opts.patience >= 0, "--patience must be >= 0"),
        (opts.max_length is None or opts.max_length >= 1, "--max-length must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    inputs = [opts.train, opts.val, opts.test, opts.fasta, opts.labels, opts.model]
    refuse_overwriting_inputs({"--output": opts.output}, inputs, directories=["--output"])
    output = Path(opts.output)
    if output.exists() and not opts.force and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(f"output {opts.output} already exists; pass --force to replace it")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA, fp32 elsewhere (bf16 autocast on CPU is slow and gains nothing here)."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _max_length(requested: int | None, l_max: int) -> int:
    """Longest input in bases: l_max minus one position for the [SEP] every sequence ends with."""
    capacity = l_max - 1
    if requested is not None and requested > capacity:
        raise UsageError(f"--max-length {requested} is longer than the model takes ({capacity} bases + [SEP])")
    return requested or capacity


# --------------------------------------------------------------------------- data


def _read_splits(opts: FinetuneOptions, max_length: int) -> tuple[dict[str, Dataset], list[str]]:
    """Train / val (/ test) datasets and the class names (from the training labels)."""
    paths = {"train": opts.train, "val": opts.val, "test": opts.test}
    records = {name: _read(path, opts) for name, path in paths.items() if path is not None}
    classes = class_names(r.label for r in records["train"])
    if len(classes) < 2:
        raise InputError(f"{opts.train}: every training sequence has label {classes[0]!r}; need at least 2 classes")
    splits = {
        name: encode_split(name, recs, classes, max_length, opts.truncate, paths[name])
        for name, recs in records.items()
    }
    counts = ", ".join(f"{name} {len(data):,}" for name, data in splits.items())
    log.info("%d classes (%s); sequences: %s", len(classes), ", ".join(classes), counts)
    return splits, classes


def _read(path: str, opts: FinetuneOptions) -> list[LabelledRecord]:
    columns = Columns(opts.sequence_column, opts.label_column, opts.id_column)
    records = read_records(path, columns=columns, fasta=opts.fasta, labels=opts.labels, fmt=opts.input_format)
    bad = next((r for r in records if r.problem), None)
    if bad is not None:
        raise InputError(f"{bad.where}: {bad.problem}")
    return records


def encode_split(
    name: str, records: list[LabelledRecord], classes: list[str], max_length: int, truncate: str, path: str
) -> Dataset:
    """Tokenise and index one split; labels outside ``classes`` and too-long sequences are InputErrors."""
    indices = np.asarray(class_index((r.label for r in records), classes), dtype=np.int64)
    unseen = sorted({r.label for r, i in zip(records, indices) if i < 0})
    if unseen:
        shown = ", ".join(repr(x) for x in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
        raise InputError(f"{path}: label(s) {shown} not among the training classes ({', '.join(classes)})")
    tokenizer = CharTokenizer()
    ids = [fit_length(tokenizer.encode(r.sequence, record=r.where), max_length, truncate, r.where) for r in records]
    return Dataset(name, ids, indices, [r.id for r in records])


def fit_length(ids: np.ndarray, max_length: int, truncate: str, where: str) -> np.ndarray:
    """``ids`` cut to ``max_length``: 'left' drops the start, 'right' drops the end, 'error' refuses."""
    if len(ids) <= max_length:
        return ids
    if truncate == "left":
        return ids[-max_length:]
    if truncate == "right":
        return ids[:max_length]
    raise InputError(
        f"{where}: sequence of {len(ids):,} bases is longer than the maximum {max_length:,}; "
        "use --truncate left|right to cut it, or a model with a longer context"
    )


def to_batch(rows: list[np.ndarray], device: torch.device, add_sep: bool = True, reverse=None):
    """(B, L) right-padded token ids (each row + [SEP]) and (B,) lengths; ``reverse[i]`` flips row i's strand."""
    sep = np.array([SEP_ID], dtype=np.int64)
    out = []
    for i, row in enumerate(rows):
        row = reverse_complement_ids(row) if reverse is not None and reverse[i] else row
        out.append(np.concatenate([row, sep]) if add_sep else row)
    return pad_right(out, PAD_ID, device)


# --------------------------------------------------------------------------- model


def _build_classifier(base, num_classes: int, opts: FinetuneOptions, device: torch.device) -> HyenaDNAClassifier:
    """The base model's architecture with a fresh head; its weights too unless --random-init."""
    model = HyenaDNAClassifier(base.config, num_classes, opts.pooling)
    if opts.random_init:
        log.warning("--random-init: training %s's architecture from random weights", model_label(opts.model, base))
    else:
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise InputError(f"base model weights do not fit the classifier: {missing + unexpected}")
    model.set_conv_backend(opts.conv_backend)
    if opts.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("head.")
    return model.to(device)


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- inputs: tokens or cached features


class TokenInputs:
    """A dataset fed through the whole model at every step (full fine-tuning, or evaluation)."""

    def __init__(self, data: Dataset, device: torch.device, precision: str):
        self.data, self.device, self.precision = data, device, precision

    def logits(self, model: HyenaDNAClassifier, index: np.ndarray, reverse=None) -> torch.Tensor:
        """(B, C) logits of the rows ``index``; ``reverse`` (B,) bools pick the reverse strand."""
        tokens, lengths = to_batch([self.data.ids[i] for i in index], self.device, reverse=reverse)
        with autocast(self.device, self.precision):
            return model(tokens, lengths)


class FeatureInputs:
    """A frozen backbone's pooled features, computed once per strand; only the head runs per step."""

    def __init__(self, model: HyenaDNAClassifier, data: Dataset, device, precision, batch_size, both_strands):
        self.data = data
        self.forward = self._features(model, data, device, precision, batch_size, reverse=False)  # (N, D)
        self.reverse = self._features(model, data, device, precision, batch_size, True) if both_strands else None

    @staticmethod
    @torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
    def _features(model, data, device, precision, batch_size, reverse: bool) -> torch.Tensor:
        model.eval()
        chunks = []
        for start in range(0, len(data), batch_size):
            rows = data.ids[start : start + batch_size]
            tokens, lengths = to_batch(rows, device, reverse=[reverse] * len(rows))
            with autocast(device, precision):
                chunks.append(model.features(tokens, lengths).float())
        return torch.cat(chunks)

    def logits(self, model: HyenaDNAClassifier, index: np.ndarray, reverse=None) -> torch.Tensor:
        rows = torch.as_tensor(index, device=self.forward.device)
        features = self.forward[rows]  # (B, D)
        if reverse is not None and self.reverse is not None:
            flip = torch.as_tensor(np.asarray(reverse), device=features.device)[:, None]
            features = torch.where(flip, self.reverse[rows], features)
        return model.classify(features)


def _inputs(model, data: Dataset, device, precision, opts: FinetuneOptions, training: bool):
    if opts.freeze_backbone:
        return FeatureInputs(model, data, device, precision, opts.batch_size, both_strands=training and opts.rc_aug)
    return TokenInputs(data, device, precision)


# --------------------------------------------------------------------------- training


@dataclass
class _Trained:
    best_state: dict
    best_epoch: int
    history: list[dict]


def _train(model: HyenaDNAClassifier, splits: dict[str, Dataset], opts: FinetuneOptions, device, precision):
    """Epochs of training with validation after each; returns the best epoch's weights and the history."""
    train = _inputs(model, splits["train"], device, precision, opts, training=True)
    val = _inputs(model, splits["val"], device, precision, opts, training=False)
    steps = opts.epochs * math.ceil(len(splits["train"]) / opts.batch_size)
    optimizer = make_optimizer(model, opts.lr, opts.weight_decay)
    scheduler = make_scheduler(optimizer, int(opts.warmup_ratio * steps), steps)
    rng = np.random.default_rng(opts.seed)
    best, best_score, best_epoch, stale, history = _state(model), -math.inf, 0, 0, []
    for epoch in range(1, opts.epochs + 1):
        loss = _train_epoch(model, train, optimizer, scheduler, rng, opts, epoch)
        metrics = _evaluate_inputs(model, val, splits["val"].labels, opts.batch_size)
        score = -metrics["loss"] if opts.metric == "loss" else (metrics[opts.metric] or 0.0)
        improved = score > best_score
        if improved:
            best, best_score, best_epoch, stale = _state(model), score, epoch, 0
        else:
            stale += 1
        history.append({"epoch": epoch, "train_loss": loss, "lr": scheduler.get_last_lr()[0], "val": metrics})
        _log_epoch(epoch, opts, loss, metrics, improved)
        if opts.patience and stale >= opts.patience:
            log.info("early stop: no %s improvement for %d epoch(s)", opts.metric, stale)
            break
    return _Trained(best, best_epoch, history)


def _train_epoch(
    model, inputs, optimizer, scheduler, rng: np.random.Generator, opts: FinetuneOptions, epoch=1
) -> float:
    """One pass over the shuffled training set; returns the mean training loss."""
    model.train()
    if opts.freeze_backbone:
        model.backbone.eval()  # a probe reads the frozen backbone without dropout
    order = rng.permutation(len(inputs.data))
    total, seen = 0.0, 0
    with progress("seq") as bar:
        task = bar.add_task("train", total=len(order))
        for start in range(0, len(order), opts.batch_size):
            index = order[start : start + opts.batch_size]
            reverse = rng.random(len(index)) < 0.5 if opts.rc_aug else None
            loss = _step(model, inputs, index, reverse, optimizer, scheduler)
            stop_if_diverged(loss, model, f"epoch {epoch}, step {start // opts.batch_size + 1}")
            total, seen = total + loss * len(index), seen + len(index)
            bar.advance(task, len(index))
    return total / max(seen, 1)


def _step(model, inputs, index, reverse, optimizer, scheduler) -> float:
    labels = torch.as_tensor(inputs.data.labels[index])
    logits = inputs.logits(model, index, reverse)  # (B, C)
    loss = nn.functional.cross_entropy(logits, labels.to(logits.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], GRAD_CLIP)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def _state(model: nn.Module) -> dict:
    """A CPU copy of the weights (the best epoch's, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _log_epoch(epoch: int, opts: FinetuneOptions, loss: float, metrics: dict, improved: bool) -> None:
    shown = " ".join(f"{k} {_fmt(metrics[k])}" for k in ("loss", "accuracy", "mcc", "auroc"))
    log.info("epoch %d/%d: train loss %.4f | val %s%s", epoch, opts.epochs, loss, shown, " (best)" if improved else "")


# --------------------------------------------------------------------------- evaluation


def evaluate(model, data: Dataset, batch_size: int, device, precision: str, frozen: bool = False) -> dict:
    """Metrics of ``model`` on a labelled dataset (see ``classification_metrics``)."""
    inputs = (
        FeatureInputs(model, data, device, precision, batch_size, False)
        if frozen
        else TokenInputs(data, device, precision)
    )
    return _evaluate_inputs(model, inputs, data.labels, batch_size)


def _evaluate_inputs(model, inputs, labels: np.ndarray, batch_size: int) -> dict:
    return classification_metrics(labels, _probabilities(model, inputs, batch_size))


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def _probabilities(model, inputs, batch_size: int) -> np.ndarray:
    """(N, C) class probabilities in dataset order, model in eval mode."""
    model.eval()
    n = len(inputs.data)
    chunks = [
        torch.softmax(inputs.logits(model, np.arange(s, min(s + batch_size, n))).float(), dim=-1).cpu()
        for s in range(0, n, batch_size)
    ]
    return torch.cat(chunks).numpy()


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def predict_probabilities(
    model: HyenaDNAClassifier, rows: list[np.ndarray], device: torch.device, precision: str, add_sep: bool = True
) -> np.ndarray:
    """(B, C) class probabilities of token-id rows (bases only; [SEP] added here), as predict computes them."""
    tokens, lengths = to_batch(rows, device, add_sep=add_sep)
    with autocast(device, precision):
        logits = model(tokens, lengths)
    return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """n, accuracy, MCC (multi-class: Gorodkin's R_K), macro F1 (over classes seen in labels or
    predictions), AUROC (binary: class 1 vs 0; multi-class: macro one-vs-rest) and cross-entropy loss.
    A metric that is undefined on this data (AUROC with one class present) is None."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    k = probs.shape[1]
    confusion = np.zeros((k, k), dtype=np.float64)  # rows: true class, columns: predicted
    np.add.at(confusion, (labels, predicted), 1)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {
        "n": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
        "mcc": _mcc(confusion),
        "f1_macro": _f1_macro(confusion),
        "auroc": _auroc_any(labels, probs),
        "loss": float(-np.mean(np.log(picked))) if len(labels) else None,
    }


def _mcc(confusion: np.ndarray) -> float:
    """Matthews correlation from a K x K confusion matrix (0 when a marginal is constant)."""
    n, correct = confusion.sum(), np.trace(confusion)
    true, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    numerator = correct * n - true @ pred
    denominator = math.sqrt((n * n - pred @ pred) * (n * n - true @ true))
    return float(numerator / denominator) if denominator > 0 else 0.0


def _f1_macro(confusion: np.ndarray) -> float:
    tp = np.diag(confusion)
    true, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (true + pred) > 0
    f1 = np.divide(2 * tp, true + pred, out=np.zeros_like(tp), where=(true + pred) > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def _auroc_any(labels: np.ndarray, probs: np.ndarray) -> float | None:
    if probs.shape[1] == 2:
        return auroc(probs[:, 1], labels == 1)
    scores = [auroc(probs[:, c], labels == c) for c in range(probs.shape[1])]
    scores = [s for s in scores if s is not None]
    return float(np.mean(scores)) if scores else None


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None without both classes."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # 1-based average ranks
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def report_table(columns: dict[str, dict | None], classes: list[str]) -> None:
    """A rich table on stderr (skipped with --quiet): one column of metrics per named dataset."""
    if not log.isEnabledFor(logging.INFO):  # --quiet keeps warnings only
        return
    from rich.console import Console
    from rich.table import Table

    columns = {name: m for name, m in columns.items() if m is not None}
    table = Table(title=f"metrics, {len(classes)} classes")
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key in ("n", "accuracy", "mcc", "f1_macro", "auroc", "loss"):
        table.add_row(key, *[str(m[key]) if key == "n" else _fmt(m[key]) for m in columns.values()])
    Console(stderr=True).print(table)


# --------------------------------------------------------------------------- output


def _provenance(opts: FinetuneOptions, base, splits: dict[str, Dataset]) -> dict:
    settings = {k: v for k, v in asdict(opts).items() if k not in ("output", "force", "trust_checkpoint")}
    return {
        "base_model": model_label(opts.model, base),
        "random_init": opts.random_init,
        "sizes": {name: len(data) for name, data in splits.items()},
        "settings": settings,
    }


def _save(model, meta: ClassifierMeta, opts: FinetuneOptions, summary: FinetuneSummary, device, precision) -> None:
    report = {
        "val": summary.val,
        "test": summary.test,
        "best_epoch": summary.best_epoch,
        "epochs_run": summary.epochs_run,
        "classes": summary.classes,
        "history": summary.history,
        "trainable_parameters": summary.trainable_parameters,
        "seconds": round(summary.seconds, 2),
        "device": _device_name(device),
        "precision": precision,
        "date": datetime.date.today().isoformat(),
        "versions": {"genomelm": __version__, "torch": torch.__version__},
        "training": meta.training,
    }
    card = _model_card(model, meta, summary)
    metrics = json.dumps(report, indent=2) + "\n"
    save_classifier(
        model.cpu(), meta, opts.output, card, {"metrics.json": metrics}, finetuned_from=meta.training["base_model"]
    )


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _model_card(model, meta: ClassifierMeta, summary: FinetuneSummary) -> str:
    keys = ("accuracy", "mcc", "f1_macro", "auroc")
    rows = "\n".join(
        f"| {split} | {m['n']} | " + " | ".join(_fmt(m[k]) for k in keys) + " |"
        for split, m in (("val", summary.val), ("test", summary.test))
        if m is not None
    )
    c = model.config
    return (
        f"# HyenaDNA sequence classifier (genomelm)\n\n"
        f"- base model: {meta.training['base_model']}{' (random init)' if meta.training['random_init'] else ''}\n"
        f"- architecture: d_model {c.d_model}, {c.n_layer} layers, max input {meta.max_length} bases\n"
        f"- classes: {', '.join(meta.classes)}; pooling {meta.pooling}; best epoch {summary.best_epoch}\n\n"
        f"| split | n | accuracy | MCC | macro F1 | AUROC |\n|---|---|---|---|---|---|\n{rows}\n\n"
        f"Predict: `genomelm predict {os.path.basename(os.path.normpath(summary.output))} INPUT -o preds.tsv`. "
        f"Embeddings: `genomelm embed --model DIR`.\n"
    )
