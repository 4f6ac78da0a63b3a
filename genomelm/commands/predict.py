"""`genomelm predict`: class probabilities from a fine-tuned classifier (``genomelm finetune`` output).

Input: a table (CSV/TSV), FASTA or BED + reference, as for finetune; labels are optional. Output: TSV,
one row per input record in input order: ``id``, ``predicted`` (class name), ``prob_<class>`` for each
class, ``label`` (only when the input has labels) and ``flag`` ('.' or why the record got no prediction).
Records that cannot be predicted (invalid characters, too long with truncate=error, a BED interval outside
the reference) are passed through with NA values and a flag, and counted; ``--strict`` makes them fatal.
Each row depends only on its own sequence: in fp32 (the default) batching never changes a prediction.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from genomelm.classify.data import fit_length
from genomelm.classify.engine import predict_probabilities
from genomelm.classify.metrics import classification_metrics, report_table
from genomelm.commands._common import select_device
from genomelm.errors import GenomelmError, InputError, UsageError
from genomelm.formats.atomic import atomic_file, check_output_file, refuse_overwriting_inputs, same_file, write_text
from genomelm.formats.checkpoint import TRUNCATIONS, ClassifierMeta, load_classifier
from genomelm.formats.labels import Columns, LabelledRecord, class_index, iter_records
from genomelm.formats.predictions import tsv_cell
from genomelm.log import get_logger, progress
from genomelm.runtime import batched, check_batch_size, resolve_precision, set_threads
from genomelm.tokenizer import CharTokenizer

log = get_logger(__name__)

NA = "NA"
NON_FINITE = "non_finite"  # flag of a record whose probabilities came out NaN or inf
_TOKENIZER = CharTokenizer()


@dataclass
class PredictOptions:
    model: str  # a `genomelm finetune` output directory
    input: str  # table, FASTA or BED ('-' = stdin; tables and, with --format fasta, FASTA)
    output: str = "-"  # TSV path, or '-' for stdout
    fasta: str | None = None  # reference for BED input
    labels: str | None = None  # labels table for FASTA input (only used for metrics)
    sequence_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    input_format: str = "auto"
    batch_size: int = 64
    truncate: str | None = None  # None: the policy recorded at training
    strict: bool = False  # a record that cannot be predicted is fatal
    metrics: str | None = None  # write metrics JSON here when the input has labels
    device: str = "auto"
    # fp32 by default: a row's probabilities then do not depend on the batch (bf16 GEMMs round differently
    # with the batch shape, which can flip a borderline call); bf16 / auto trade that for speed on GPU.
    precision: str = "fp32"
    conv_backend: str | None = None
    threads: int | None = None


@dataclass
class PredictSummary:
    output: str
    records: int
    predicted: int
    flagged: int
    metrics: dict | None
    seconds: float


@dataclass
class _Row:
    record: LabelledRecord
    ids: np.ndarray | None  # token ids (bases only), None when flagged
    flag: str  # '.' or the reason there is no prediction


def run(opts: PredictOptions) -> PredictSummary:
    _check_options(opts)
    started = time.perf_counter()
    set_threads(opts.threads)
    device = select_device(opts.device, opts.conv_backend)
    precision = resolve_precision(opts.precision, device)
    model, meta = load_classifier(opts.model)
    model.set_conv_backend(opts.conv_backend)
    model = model.to(device).eval()
    truncate = opts.truncate or meta.truncate
    records = _records(opts)
    first = next(records, None)
    has_labels = first is not None and first.label is not None
    records = itertools.chain([first], records) if first is not None else iter(())
    tally = _Tally(meta.classes)
    with _output(opts.output) as out:
        out.write("\t".join(_header(meta.classes, has_labels)) + "\n")
        with progress("seq") as bar:
            task = bar.add_task("predict", total=None)
            for batch in batched(records, opts.batch_size):
                rows = [_prepare(r, meta, truncate, opts.strict) for r in batch]
                _write_rows(out, rows, _predict(model, rows, device, precision, meta, opts.strict), has_labels, tally)
                bar.advance(task, len(batch))
    summary = PredictSummary(
        opts.output, tally.records, tally.predicted, tally.flagged, tally.metrics(), time.perf_counter() - started
    )
    _report(opts, summary, meta)
    return summary


def _check_options(opts: PredictOptions) -> None:
    check_batch_size(opts.batch_size)
    if opts.truncate is not None and opts.truncate not in TRUNCATIONS:
        raise UsageError(f"--truncate must be one of {', '.join(TRUNCATIONS)}, got {opts.truncate!r}")
    outputs = {"--output": opts.output, "--metrics": opts.metrics}
    refuse_overwriting_inputs(outputs, [opts.input, opts.fasta, opts.labels, opts.model])
    if opts.metrics is not None and same_file(opts.metrics, opts.output):
        raise UsageError("--metrics needs a file path of its own (not the --output)")
    for option, path in outputs.items():
        if path is not None:
            check_output_file(path, option)


def _records(opts: PredictOptions) -> Iterator[LabelledRecord]:
    columns = Columns(opts.sequence_column, opts.label_column, opts.id_column)
    return iter_records(
        opts.input, columns=columns, fasta=opts.fasta, labels=opts.labels, require_labels=False, fmt=opts.input_format
    )


def _header(classes: list[str], has_labels: bool) -> list[str]:
    names = ["id", "predicted"] + [f"prob_{tsv_cell(c)}" for c in classes]
    return names + (["label"] if has_labels else []) + ["flag"]


def _prepare(record: LabelledRecord, meta: ClassifierMeta, truncate: str, strict: bool) -> _Row:
    """Tokenise and fit one record, or flag it (fatal with --strict)."""
    try:
        if record.problem:
            raise InputError(f"{record.where}: {record.problem}")  # caught below: the record's flag
        ids = _TOKENIZER.encode(record.sequence, record=record.where)
        return _Row(record, fit_length(ids, meta.max_length, truncate, record.where), ".")
    except GenomelmError as exc:
        if strict:
            raise
        return _Row(record, None, _flag(record, exc))


def _flag(record: LabelledRecord, exc: GenomelmError) -> str:
    """A short reason for the flag column (the message without the 'file:line: ' prefix)."""
    message = str(exc)
    prefix = f"{record.where}: "
    return tsv_cell(message[len(prefix) :] if message.startswith(prefix) else message).split(";")[0]


def _predict(
    model, rows: list[_Row], device, precision: str, meta: ClassifierMeta, strict: bool = False
) -> list[np.ndarray | None]:
    """Probabilities (C,) for each unflagged row, None for flagged ones."""
    good = [i for i, row in enumerate(rows) if row.ids is not None]
    probs: list[np.ndarray | None] = [None] * len(rows)
    if good:
        batch = predict_probabilities(model, [rows[i].ids for i in good], device, precision, meta.add_sep)
        for i, p in zip(good, batch):
            probs[i] = p if np.isfinite(p).all() else _non_finite(rows[i], strict)
    return probs


def _non_finite(row: _Row, strict: bool) -> None:
    """Probabilities with NaN or inf are never written: the record is flagged (fatal with --strict)."""
    if strict:
        raise InputError(f"{row.record.where}: the model produced non-finite probabilities (NaN or inf)")
    row.flag = NON_FINITE


class _Tally:
    """Counts, and the (label, probabilities) pairs of labelled predictions for metrics."""

    def __init__(self, classes: list[str]):
        self.classes = classes
        self.records = self.predicted = self.flagged = self.unknown_labels = 0
        self.labels: list[int] = []
        self.probs: list[np.ndarray] = []

    def add(self, row: _Row, probs: np.ndarray | None) -> None:
        self.records += 1
        if probs is None:
            self.flagged += 1
            return
        self.predicted += 1
        if row.record.label is not None:
            index = class_index([row.record.label], self.classes)[0]
            if index < 0:
                self.unknown_labels += 1
            else:
                self.labels.append(index)
                self.probs.append(probs)

    def metrics(self) -> dict | None:
        if self.unknown_labels:
            log.warning(
                "%d record(s) have labels outside the model's classes; left out of the metrics", self.unknown_labels
            )
        if not self.labels:
            return None
        return classification_metrics(np.asarray(self.labels), np.stack(self.probs))


def _write_rows(out, rows: list[_Row], probs: list, has_labels: bool, tally: _Tally) -> None:
    classes = tally.classes
    for row, p in zip(rows, probs):
        tally.add(row, p)
        cells = [tsv_cell(row.record.id)]
        if p is None:
            cells += [NA] * (1 + len(classes))
        else:
            cells += [tsv_cell(classes[int(np.argmax(p))])] + [f"{x:.6g}" for x in p]
        if has_labels:
            cells.append(tsv_cell(row.record.label) if row.record.label is not None else NA)
        cells.append(row.flag)
        out.write("\t".join(cells) + "\n")


# --------------------------------------------------------------------------- output


@contextmanager
def _output(path: str):
    """stdout for '-'; otherwise a temporary file beside ``path``, renamed onto it only on success."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_file(path, "w", encoding="utf-8") as handle:
        yield handle


def _report(opts: PredictOptions, summary: PredictSummary, meta: ClassifierMeta) -> None:
    if summary.flagged:
        log.warning(
            "%d of %d record(s) flagged, without a prediction (see the flag column)", summary.flagged, summary.records
        )
    if summary.metrics is not None:
        report_table({os.path.basename(opts.input): summary.metrics}, meta.classes)
        if opts.metrics:
            record = {"input": opts.input, "model": opts.model, "metrics": summary.metrics}
            write_text(opts.metrics, json.dumps(record, indent=2))
    elif opts.metrics:
        log.warning("--metrics %s: the input has no labels, no metrics written", opts.metrics)
    log.info("predicted %d record(s) in %.1f s -> %s", summary.predicted, summary.seconds, opts.output)
