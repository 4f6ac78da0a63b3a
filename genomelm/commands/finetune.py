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
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from genomelm import __version__
from genomelm.classify.data import Dataset, encode_split, max_input_length
from genomelm.classify.engine import evaluate, train, trainable_parameters
from genomelm.classify.metrics import format_metric, report_table
from genomelm.commands._common import model_label, select_device
from genomelm.errors import InputError, UsageError
from genomelm.formats.atomic import refuse_overwriting_inputs
from genomelm.formats.checkpoint import TRUNCATIONS, ClassifierMeta, load_model, save_classifier
from genomelm.formats.labels import Columns, LabelledRecord, class_names, read_records
from genomelm.log import get_logger
from genomelm.model.lm import CLASSIFIER_POOLINGS, HyenaDNAClassifier
from genomelm.runtime import PRECISION_CHOICES, device_name, resolve_precision, set_threads
from genomelm.training import seed_everything

log = get_logger(__name__)

METRICS = ("mcc", "accuracy", "f1_macro", "auroc", "loss")  # early-stopping choices; loss: lower is better


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


# --------------------------------------------------------------------------- run


def run(opts: FinetuneOptions) -> FinetuneSummary:
    _check_options(opts)
    started = time.perf_counter()
    set_threads(opts.threads)
    seed_everything(opts.seed)
    device = select_device(opts.device, opts.conv_backend)
    precision = resolve_precision(opts.precision, device)
    base = load_model(opts.model, trust_checkpoint=opts.trust_checkpoint)
    max_length = max_input_length(opts.max_length, base.l_max)
    splits, classes = _read_splits(opts, max_length)
    model = _build_classifier(base, len(classes), opts, device)
    trained = train(model, splits, opts, device, precision)
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
        trainable_parameters=trainable_parameters(model),
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
        (opts.precision in PRECISION_CHOICES, f"--precision must be one of {', '.join(PRECISION_CHOICES)}"),
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
        "device": device_name(device),
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


def _model_card(model, meta: ClassifierMeta, summary: FinetuneSummary) -> str:
    keys = ("accuracy", "mcc", "f1_macro", "auroc")
    rows = "\n".join(
        f"| {split} | {m['n']} | " + " | ".join(format_metric(m[k]) for k in keys) + " |"
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
