"""`genomelm in-context`: classify sequences by next-token prediction, as in the HyenaDNA paper (§4.4).

A class label is written as one vocabulary token (binary: A, N) and read from the model's logits after the
query's final [SEP]; genomelm.icl_prompts documents the token format. Methods:

- ``soft-prompt``: P learned vectors before ``x [SEP]`` (genomelm.model.soft_prompt). The backbone is frozen;
  only the prompt is trained: AdamW lr 1e-3, gradient clipping 1.0, learning rate x0.1 whenever the dev
  loss does not improve, up to 20 epochs, stopping once the dev loss is no better than two earlier epochs;
  the prompt of the best dev epoch is kept. P = 0 evaluates the bare model. ``--prompt PATH`` reuses a
  trained prompt without training.
- ``k-shot``: pure in-context learning, k demonstrations per class from --train before each query; no
  weights change.
- ``instruction``: the whole model is tuned on N k-shot prompts built from --train (1 epoch, lr 1e-4,
  batch 2, as the official recipe), then evaluated as k-shot; the tuned model is saved.

Training losses cover every label position of a prompt (each demonstration's label and the query's), over
the whole vocabulary, as the official code. Predictions are reported two ways: argmax over the label tokens
only, and argmax over the whole vocabulary (the paper's protocol: any other token counts as wrong).

Outputs in the -o directory: predictions.tsv, metrics.json (written last), prompt.safetensors (a trained
soft prompt), model/ (an instruction-tuned model). Each file is written to a temporary name and renamed.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from genomelm import __version__
from genomelm.classify.in_context import (
    Context,
    Rows,
    Task,
    encode_rows,
    fit_soft_prompt,
    instruction_tune,
    predict_logits,
    prediction_rows,
    subset_rows,
    test_prompts,
    trains_prompt,
)
from genomelm.classify.readouts import format_table, readouts, scores
from genomelm.commands._common import load_inference_model, model_label, select_device
from genomelm.errors import InputError, UsageError
from genomelm.formats import atomic
from genomelm.formats.atomic import refuse_overwriting_inputs
from genomelm.formats.checkpoint import save_model
from genomelm.formats.labels import LabelledRecord, class_names, read_records
from genomelm.formats.predictions import write_icl_predictions
from genomelm.formats.soft_prompt import load_prompt, save_prompt
from genomelm.icl_prompts import STREAM_DEV, DemoPool, parse_label_tokens
from genomelm.log import get_logger
from genomelm.model.lm import HyenaDNA
from genomelm.model.soft_prompt import SoftPrompt
from genomelm.runtime import device_name, set_threads
from genomelm.tokenizer import VOCAB
from genomelm.training import seed_everything

log = get_logger(__name__)

METHODS = ("soft-prompt", "k-shot", "instruction")
DEV_FRACTION = 0.1  # held out of --train for the plateau schedule when no --dev is given
# Method defaults, from the official soft_prompting / instruction_tuned configs (batch 2 x 8 accumulated).
DEFAULTS = {
    "soft-prompt": {"shots": 0, "epochs": 20, "lr": 1e-3, "batch_size": 16, "prompt_tokens": 32},
    "k-shot": {"shots": 2, "epochs": 0, "lr": 0.0, "batch_size": 1, "prompt_tokens": 0},
    "instruction": {"shots": 2, "epochs": 1, "lr": 1e-4, "batch_size": 2, "prompt_tokens": 0},
}

OUTPUT_FILES = ("predictions.tsv", "metrics.json", "prompt.safetensors", "model")  # what -o DIR receives


@dataclass
class InContextOptions:
    test: str  # sequences to classify: CSV/TSV (sequence[,label][,id]) or FASTA; labels optional
    output: str  # output directory
    method: str = "soft-prompt"
    train: str | None = None  # labelled: demonstrations, and training data for soft-prompt / instruction
    dev: str | None = None  # labelled, for the soft prompt's plateau schedule (default: 10% of --train)
    model: str | None = None
    prompt: str | None = None  # a trained soft prompt (safetensors) to reuse without training
    prompt_tokens: int | None = None  # P; None: 32 (or the --prompt file's)
    shots: int | None = None  # demonstrations per class; None: 0 for soft-prompt, 2 otherwise
    tune_samples: int = 16  # N prompts for instruction tuning
    label_tokens: str | None = None  # 'A,N'; None: defaults for the number of classes (or the --prompt file's)
    epochs: int | None = None  # None: 20 (soft-prompt), 1 (instruction)
    lr: float | None = None  # None: 1e-3 (soft-prompt), 1e-4 (instruction)
    weight_decay: float = 0.0
    batch_size: int | None = None  # training batch; None: 16 (soft-prompt), 2 (instruction)
    eval_batch_size: int = 64
    seed: int = 0
    strict: bool = False  # any flagged record (bad sequence, too long, fewer shots) is fatal
    device: str = "auto"
    precision: str = "fp32"
    conv_backend: str | None = None
    threads: int | None = None
    trust_checkpoint: bool = False


@dataclass
class InContextSummary:
    output: str
    method: str
    queries: int  # records of --test
    scored: int  # records with a prediction and a known label
    skipped: int  # records without a prediction (invalid or too long)
    accuracy: float | None  # argmax over the label tokens; None without test labels
    mcc: float | None
    accuracy_vocab: float | None  # argmax over the whole vocabulary (the paper's protocol)
    mcc_vocab: float | None
    prompt_path: str | None  # the soft prompt written (or reused)
    seconds: float
    table: str = ""  # the human-readable metrics table (the CLI prints it to stderr)


def run(opts: InContextOptions) -> InContextSummary:
    opts = resolve_defaults(opts)
    _check_options(opts)
    set_threads(opts.threads)
    started = time.perf_counter()
    ctx = _prepare(opts)
    training = _adapt(ctx)
    logits, shots = predict_logits(ctx, test_prompts(ctx))
    report = _report(ctx, logits, shots, training, time.perf_counter() - started)
    return _write_outputs(ctx, logits, shots, report)


def resolve_defaults(opts: InContextOptions) -> InContextOptions:
    """Fill the method-dependent defaults (None fields)."""
    if opts.method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {opts.method!r}")
    changes = {name: value for name, value in DEFAULTS[opts.method].items() if getattr(opts, name) is None}
    if opts.prompt is not None:
        changes.pop("prompt_tokens", None)  # taken from the file
        changes.pop("shots", None)
    return replace(opts, **changes)


def _check_options(opts: InContextOptions) -> None:
    for name in ("shots", "epochs", "tune_samples", "prompt_tokens"):
        if (getattr(opts, name) or 0) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(opts, name)}")
    if opts.batch_size < 1 or opts.eval_batch_size < 1:
        raise UsageError("--batch-size and --eval-batch-size must be >= 1")
    if opts.prompt is not None and opts.method != "soft-prompt":
        raise UsageError("--prompt is a trained soft prompt: use it with --method soft-prompt")
    if opts.method != "soft-prompt" and opts.prompt_tokens:
        raise UsageError("--prompt-tokens is for --method soft-prompt")
    if opts.method == "instruction" and opts.tune_samples < 1:
        raise UsageError("--method instruction needs --tune-samples >= 1")
    if opts.output == "-":
        raise UsageError("in-context writes a directory: give -o DIR (not '-')")
    written = {f"--output ({name})": Path(opts.output) / name for name in OUTPUT_FILES}
    inputs = [opts.test, opts.train, opts.dev, opts.model]  # a given --prompt is reused, never rewritten
    refuse_overwriting_inputs(written, inputs, directories=["--output (model)"])


# --------------------------------------------------------------------------- preparation


def _prepare(opts: InContextOptions) -> Context:
    device = select_device(opts.device)
    seed_everything(opts.seed)
    model = load_inference_model(opts.model, device, opts.conv_backend, opts.trust_checkpoint)
    loaded = load_prompt(opts.prompt, model) if opts.prompt else None
    if loaded is not None:
        opts = _options_from_prompt(opts, loaded[0], loaded[1])
    train = read_records(opts.train, require_labels=True) if opts.train else None
    test = read_records(opts.test, require_labels=False)
    task = _task(opts, train, test, loaded)
    ctx = Context(opts, device, model, task, encode_rows(test, task))
    ctx.prompt = loaded[0].to(device) if loaded else _new_prompt(opts, model, device)
    if ctx.budget < 2:
        raise UsageError(f"--prompt-tokens {ctx.prompt.n_tokens} leaves no room in the model's {model.l_max}")
    if train is not None:
        ctx.pool, ctx.dev = _training_rows(ctx, train)
    _check_needs(ctx)
    return ctx


def _options_from_prompt(opts: InContextOptions, prompt: SoftPrompt, info: dict) -> InContextOptions:
    """With --prompt: P and (unless given) k come from the file; a conflicting --prompt-tokens is an error."""
    if opts.prompt_tokens is not None and opts.prompt_tokens != prompt.n_tokens:
        raise UsageError(f"--prompt-tokens {opts.prompt_tokens} differs from --prompt's {prompt.n_tokens}")
    return replace(opts, prompt_tokens=prompt.n_tokens, shots=info["shots"] if opts.shots is None else opts.shots)


def _task(opts: InContextOptions, train, test, loaded) -> Task:
    """Classes and their label tokens: from the --prompt file, else --train's labels, else --test's."""
    if loaded is not None:
        info = loaded[1]
        ids = [VOCAB[name] for name in info["label_tokens"]]
        if opts.label_tokens is not None and parse_label_tokens(opts.label_tokens, len(ids)) != ids:
            raise UsageError(f"--label-tokens differs from the prompt's own ({','.join(info['label_tokens'])})")
        return Task(info["classes"], ids)
    source = train if train is not None else test
    labels = [r.label for r in source if r.label is not None]
    if not labels:
        raise UsageError("cannot tell the classes: give a labelled --train (sequence,label) or a --prompt")
    classes = class_names(labels)
    if len(classes) < 2:
        raise InputError(f"{opts.train or opts.test}: need at least two classes, found {len(classes)}")
    return Task(classes, parse_label_tokens(opts.label_tokens, len(classes)))


def _new_prompt(opts: InContextOptions, model: HyenaDNA, device: torch.device) -> SoftPrompt | None:
    if opts.method != "soft-prompt" or not opts.prompt_tokens:
        return None
    return SoftPrompt(opts.prompt_tokens, model.config.d_model).to(device)


def _training_rows(ctx: Context, train: list[LabelledRecord]) -> tuple[DemoPool, Rows | None]:
    """The demonstration / training pool, and the dev rows for the soft prompt's schedule."""
    rows = encode_rows(train, ctx.task)
    usable = [i for i, flag in enumerate(rows.flags) if flag == "."]
    _flag_training(ctx, rows)
    dev = None
    if trains_prompt(ctx):
        dev, usable = _dev_rows(ctx, rows, usable)
    pool = DemoPool([rows.ids[i] for i in usable], rows.classes[usable], ctx.task.label_ids, ctx.opts.seed)
    return pool, dev


def _flag_training(ctx: Context, rows: Rows) -> None:
    """Count (and with --strict refuse) training records that cannot be used."""
    bad = [(r, flag) for r, flag in zip(rows.records, rows.flags) if flag != "."]
    if not bad:
        return
    if ctx.opts.strict:
        raise InputError(f"{bad[0][0].where}: {bad[0][1]} (--strict)")
    log.warning("%d training records skipped (first: %s: %s)", len(bad), bad[0][0].where, bad[0][1])
    ctx.flagged["train_records_skipped"] = ctx.flagged.get("train_records_skipped", 0) + len(bad)


def _dev_rows(ctx: Context, rows: Rows, usable: list[int]) -> tuple[Rows, list[int]]:
    """--dev, or a reproducible 10% of --train held out (then not used as demonstrations)."""
    if ctx.opts.dev:
        dev = encode_rows(read_records(ctx.opts.dev, require_labels=True), ctx.task)
        return subset_rows(dev, [i for i, flag in enumerate(dev.flags) if flag == "."]), usable
    n_dev = max(1, int(len(usable) * DEV_FRACTION)) if len(usable) > 1 else 0
    order = np.random.default_rng([ctx.opts.seed, STREAM_DEV]).permutation(len(usable))
    log.info("no --dev: holding out %d of %d training records for the learning-rate schedule", n_dev, len(usable))
    return subset_rows(rows, sorted(usable[i] for i in order[:n_dev])), sorted(usable[i] for i in order[n_dev:])


def _check_needs(ctx: Context) -> None:
    opts, pool = ctx.opts, ctx.pool
    needs_train = opts.shots > 0 or opts.method == "instruction" or trains_prompt(ctx)
    if needs_train and (pool is None or not pool.ids):
        raise UsageError(f"--method {opts.method} with these settings needs a labelled --train file")
    if pool is not None and opts.shots > 0 and pool.max_shots == 0:
        raise InputError(f"{opts.train}: some class has no usable demonstrations")
    if pool is not None and pool.max_shots < opts.shots:
        log.warning("the smallest class has %d demonstrations: at most that many shots", pool.max_shots)


# --------------------------------------------------------------------------- adaptation


def _adapt(ctx: Context) -> dict | None:
    """Train what the method trains; returns a training report for metrics.json (None if nothing trained)."""
    if trains_prompt(ctx):
        return fit_soft_prompt(ctx)
    if ctx.opts.method == "instruction":
        return instruction_tune(ctx)
    return None


# --------------------------------------------------------------------------- prompts


# --------------------------------------------------------------------------- prediction


# --------------------------------------------------------------------------- report and outputs


def _report(ctx: Context, logits: np.ndarray, shots: np.ndarray, training: dict | None, seconds: float) -> dict:
    """Everything metrics.json holds."""
    by_label, by_vocab, _ = readouts(logits, ctx.task.label_ids)
    opts, used = ctx.opts, shots[shots >= 0]
    settings = {k: v for k, v in asdict(opts).items() if k not in ("output", "trust_checkpoint")}
    return {
        "format": "genomelm-in-context-metrics",
        "genomelm_version": __version__,
        "method": opts.method,
        "model": model_label(opts.model, ctx.model),
        "settings": settings,
        "classes": ctx.task.classes,
        "label_tokens": ctx.task.label_names,
        "soft_prompt_tokens": ctx.prompt.n_tokens if ctx.prompt is not None else 0,
        "shots": {
            "requested": opts.shots,
            "min": int(used.min()) if used.size else None,
            "mean": float(used.mean()) if used.size else None,
        },
        "test": {"rows": len(ctx.test.ids), "predicted": int((by_label >= 0).sum())},
        "flagged": {**ctx.flagged, "test_records_flagged": sum(f != "." for f in ctx.test.flags)},
        "metrics": scores(ctx.test.classes, by_label, by_vocab, len(ctx.task.classes)),
        "training": training,
        "seconds": round(seconds, 2),
        "device": device_name(ctx.device),
        "date": datetime.date.today().isoformat(),
        "versions": {"genomelm": __version__, "torch": torch.__version__},
    }


def _write_outputs(ctx: Context, logits: np.ndarray, shots: np.ndarray, report: dict) -> InContextSummary:
    out = Path(ctx.opts.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"-o {out}: cannot create the directory ({exc.strerror or exc})") from None
    report["prompt"] = _save_trained(ctx, out)
    has_labels = any(r.label is not None for r in ctx.test.records)
    rows = prediction_rows(ctx, logits, shots)
    with atomic.atomic_file(out / "predictions.tsv", "w", encoding="utf-8", newline="") as handle:
        write_icl_predictions(handle, rows, ctx.task.classes, has_labels)
    atomic.write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")  # last: means the run finished
    return _summary(ctx, report)


def _save_trained(ctx: Context, out: Path) -> str | None:
    """Save what the method trained: the instruction-tuned model, a new soft prompt. Returns the prompt path."""
    if ctx.opts.method == "instruction":
        save_model(
            ctx.model,
            out / "model",
            tuned_by="genomelm in-context --method instruction",
            tuned_from=model_label(ctx.opts.model, ctx.model),
        )
        log.info("instruction-tuned model -> %s", out / "model")
    if ctx.prompt is None:
        return None
    if not trains_prompt(ctx):
        return ctx.opts.prompt
    info = {
        "classes": ctx.task.classes,
        "label_tokens": ctx.task.label_names,
        "shots": ctx.opts.shots,
        "model": model_label(ctx.opts.model, ctx.model),
    }
    save_prompt(out / "prompt.safetensors", ctx.prompt, ctx.model, info)
    return str(out / "prompt.safetensors")


def _summary(ctx: Context, report: dict) -> InContextSummary:
    m, test = report["metrics"], report["test"]

    def pick(kind: str, key: str) -> float | None:
        return m[kind][key] if m else None

    summary = InContextSummary(
        output=ctx.opts.output,
        method=ctx.opts.method,
        queries=test["rows"],
        scored=m["rows"] if m else 0,
        skipped=test["rows"] - test["predicted"],
        accuracy=pick("label_tokens", "accuracy"),
        mcc=pick("label_tokens", "mcc"),
        accuracy_vocab=pick("vocabulary", "accuracy"),
        mcc_vocab=pick("vocabulary", "mcc"),
        prompt_path=report["prompt"],
        seconds=report["seconds"],
        table=format_table(report),
    )
    log.info(
        "%d queries, %d scored, %d skipped in %.1f s -> %s",
        summary.queries,
        summary.scored,
        summary.skipped,
        summary.seconds,
        summary.output,
    )
    return summary
