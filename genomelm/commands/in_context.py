"""`genomelm in-context`: classify sequences by next-token prediction, as in the HyenaDNA paper (§4.4).

A class label is written as one vocabulary token (binary: A, N) and read from the model's logits after the
query's final [SEP]; genomelm.prompts documents the token format. Methods:

- ``soft-prompt``: P learned vectors before ``x [SEP]`` (genomelm.model.prompt). The backbone is frozen;
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
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genomelm import __version__
from genomelm.commands import in_context_io as io
from genomelm.commands._common import (
    autocast,
    batched,
    load_inference_model,
    model_label,
    pad_right,
    select_device,
    set_threads,
)
from genomelm.errors import GenomelmError, InputError, UsageError
from genomelm.formats.atomic import refuse_overwriting_inputs
from genomelm.formats.checkpoint import save_model
from genomelm.formats.labels import LabelledRecord, class_index, class_names, read_records
from genomelm.log import get_logger, progress
from genomelm.model.lm import HyenaDNA
from genomelm.model.prompt import SoftPrompt, prompted_logits
from genomelm.prompts import (
    STREAM_DEV,
    STREAM_TEST,
    STREAM_TRAIN,
    STREAM_TUNE,
    DemoPool,
    Prompt,
    build_prompt,
    parse_label_tokens,
    prompt_length,
)
from genomelm.tokenizer import PAD_ID, VOCAB, VOCAB_SIZE, CharTokenizer
from genomelm.training import make_optimizer, seed_everything, stop_if_diverged

log = get_logger(__name__)

METHODS = ("soft-prompt", "k-shot", "instruction")
IGNORE = -100  # cross-entropy target of padded label positions
CLIP_NORM = 1.0
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


@dataclass
class Task:
    classes: list[str]  # label values in class-index order
    label_ids: list[int]  # label token id of each class

    @property
    def label_names(self) -> list[str]:
        return [io.TOKEN_NAMES[i] for i in self.label_ids]


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

    opts: InContextOptions
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


def run(opts: InContextOptions) -> InContextSummary:
    opts = resolve_defaults(opts)
    _check_options(opts)
    set_threads(opts.threads)
    started = time.perf_counter()
    ctx = _prepare(opts)
    training = _adapt(ctx)
    logits, shots = _predict(ctx, _test_prompts(ctx))
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
    loaded = io.load_prompt(opts.prompt, model) if opts.prompt else None
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
    if _trains_prompt(ctx):
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


def _trains_prompt(ctx: Context) -> bool:
    return ctx.prompt is not None and ctx.opts.prompt is None


def _dev_rows(ctx: Context, rows: Rows, usable: list[int]) -> tuple[Rows, list[int]]:
    """--dev, or a reproducible 10% of --train held out (then not used as demonstrations)."""
    if ctx.opts.dev:
        dev = encode_rows(read_records(ctx.opts.dev, require_labels=True), ctx.task)
        return _subset(dev, [i for i, flag in enumerate(dev.flags) if flag == "."]), usable
    n_dev = max(1, int(len(usable) * DEV_FRACTION)) if len(usable) > 1 else 0
    order = np.random.default_rng([ctx.opts.seed, STREAM_DEV]).permutation(len(usable))
    log.info("no --dev: holding out %d of %d training records for the learning-rate schedule", n_dev, len(usable))
    return _subset(rows, sorted(usable[i] for i in order[:n_dev])), sorted(usable[i] for i in order[n_dev:])


def _subset(rows: Rows, keep: list[int]) -> Rows:
    return Rows(
        [rows.records[i] for i in keep], [rows.ids[i] for i in keep], rows.classes[keep], [rows.flags[i] for i in keep]
    )


def _check_needs(ctx: Context) -> None:
    opts, pool = ctx.opts, ctx.pool
    needs_train = opts.shots > 0 or opts.method == "instruction" or _trains_prompt(ctx)
    if needs_train and (pool is None or not pool.ids):
        raise UsageError(f"--method {opts.method} with these settings needs a labelled --train file")
    if pool is not None and opts.shots > 0 and pool.max_shots == 0:
        raise InputError(f"{opts.train}: some class has no usable demonstrations")
    if pool is not None and pool.max_shots < opts.shots:
        log.warning("the smallest class has %d demonstrations: at most that many shots", pool.max_shots)


# --------------------------------------------------------------------------- adaptation


def _adapt(ctx: Context) -> dict | None:
    """Train what the method trains; returns a training report for metrics.json (None if nothing trained)."""
    if _trains_prompt(ctx):
        return fit_soft_prompt(ctx)
    if ctx.opts.method == "instruction":
        return instruction_tune(ctx)
    return None


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


# --------------------------------------------------------------------------- prompts


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


def _test_prompts(ctx: Context) -> list[Prompt | None]:
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


# --------------------------------------------------------------------------- prediction


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def _predict(ctx: Context, prompts: list[Prompt | None]) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------- report and outputs


def _report(ctx: Context, logits: np.ndarray, shots: np.ndarray, training: dict | None, seconds: float) -> dict:
    """Everything metrics.json holds."""
    by_label, by_vocab, _ = io.readouts(logits, ctx.task.label_ids)
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
        "metrics": io.scores(ctx.test.classes, by_label, by_vocab, len(ctx.task.classes)),
        "training": training,
        "seconds": round(seconds, 2),
        "device": _device_name(ctx.device),
        "date": datetime.date.today().isoformat(),
        "versions": {"genomelm": __version__, "torch": torch.__version__},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def _write_outputs(ctx: Context, logits: np.ndarray, shots: np.ndarray, report: dict) -> InContextSummary:
    out = Path(ctx.opts.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"-o {out}: cannot create the directory ({exc.strerror or exc})") from None
    report["prompt"] = _save_trained(ctx, out)
    has_labels = any(r.label is not None for r in ctx.test.records)
    rows = _prediction_rows(ctx, logits, shots)
    io.atomic_write(out / "predictions.tsv", lambda h: io.write_predictions(h, rows, ctx.task.classes, has_labels))
    io.write_json(out / "metrics.json", report)  # last: its presence means the run finished
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
    if not _trains_prompt(ctx):
        return ctx.opts.prompt
    info = {
        "classes": ctx.task.classes,
        "label_tokens": ctx.task.label_names,
        "shots": ctx.opts.shots,
        "model": model_label(ctx.opts.model, ctx.model),
    }
    io.save_prompt(out / "prompt.safetensors", ctx.prompt, ctx.model, info)
    return str(out / "prompt.safetensors")


def _prediction_rows(ctx: Context, logits: np.ndarray, shots: np.ndarray) -> list[dict]:
    by_label, _, probs = io.readouts(logits, ctx.task.label_ids)
    tokens = np.nan_to_num(logits, nan=0).argmax(axis=1)
    rows = []
    for i, record in enumerate(ctx.test.records):
        done = by_label[i] >= 0
        rows.append(
            {
                "id": record.id,
                "predicted": ctx.task.classes[by_label[i]] if done else "NA",
                "predicted_token": io.TOKEN_NAMES[tokens[i]] if done else "NA",
                "probs": probs[i],
                "shots": str(shots[i]) if done else "NA",
                "label": record.label,
                "flag": ctx.test.flags[i],
            }
        )
    return rows


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
        table=io.format_table(report),
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
