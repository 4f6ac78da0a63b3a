"""`genomelm evaluate`: perplexity and bits per base of a model on a genome or regions of it.

Every base of a region except its first is scored once, from its left context inside a window: windows
of ``window + 1`` bases every ``window`` bases (0-based half-open [s, s + window + 1), consecutive windows
sharing one base); the model reads the first ``window`` and predicts the next base at each position.
Only A/C/G/T targets count. Windows with more than ``max_n_frac`` N are skipped and counted.
With ``both_strands`` the reverse complement of each window is scored too (the right-hand context);
each strand is reported, and the two together (their mean log-loss).

Perplexity = exp(mean -ln P(base | context)); bits per base = mean -log2 P. P is the model's full softmax.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from genomelm.commands._common import load_inference_model, model_label, select_device
from genomelm.errors import InputError, UsageError
from genomelm.formats.atomic import check_output_file, refuse_overwriting_inputs, write_text
from genomelm.formats.fasta import FastaSource, Region, Window, parse_regions
from genomelm.log import get_logger, progress
from genomelm.runtime import autocast, batched, check_batch_size, check_max_n_frac, pad_right, set_threads
from genomelm.tokenizer import A_ID, N_ID, PAD_ID, T_ID, CharTokenizer, reverse_complement_ids

log = get_logger(__name__)

DEFAULT_WINDOW_CAP = 32768
STRANDS = ("+", "-")


@dataclass
class EvaluateOptions:
    fasta: str
    model: str | None = None
    regions: list[str] | None = None  # BED paths and/or samtools-style regions (1-based inclusive)
    window: int | None = None  # context length per forward pass (default: model max, capped at 32768)
    both_strands: bool = False
    max_n_frac: float = 0.1  # windows with a larger fraction of N are skipped
    batch_size: int = 8
    device: str = "auto"
    precision: str = "fp32"
    conv_backend: str | None = None
    threads: int | None = None
    json_output: str | None = None  # path, or '-' for stdout (the table then goes to stderr)
    trust_checkpoint: bool = False


@dataclass
class Score:
    """Log-loss accumulated over one region and strand."""

    region: str
    strand: str  # '+', '-', or 'both'
    windows: int = 0
    skipped_windows: int = 0
    bases: int = 0
    nll: float = 0.0  # sum of -ln P over scored bases

    @property
    def loss(self) -> float:
        return self.nll / self.bases if self.bases else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.bases else float("nan")

    @property
    def bits_per_base(self) -> float:
        return self.loss / math.log(2) if self.bases else float("nan")

    def add(self, other: Score) -> None:
        self.windows += other.windows
        self.skipped_windows += other.skipped_windows
        self.bases += other.bases
        self.nll += other.nll

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(loss=self.loss, perplexity=self.perplexity, bits_per_base=self.bits_per_base)
        return out


@dataclass
class EvaluateSummary:
    model: str
    fasta: str
    window: int
    scores: list[Score] = field(default_factory=list)  # per region and strand
    totals: list[Score] = field(default_factory=list)  # over all regions: per strand, then 'both'
    seconds: float = 0.0

    @property
    def total(self) -> Score:
        """The headline figure: both strands when scored, else the forward strand."""
        return self.totals[-1]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "fasta": self.fasta,
            "window": self.window,
            "seconds": self.seconds,
            "total": self.total.to_dict(),
            "totals": [s.to_dict() for s in self.totals],
            "regions": [s.to_dict() for s in self.scores],
        }


def run(opts: EvaluateOptions) -> EvaluateSummary:
    _check_options(opts)
    set_threads(opts.threads)
    device = select_device(opts.device)
    model = load_inference_model(opts.model, device, opts.conv_backend, opts.trust_checkpoint)
    window = _window(opts, model.l_max)
    started = time.perf_counter()
    summary = EvaluateSummary(model_label(opts.model, model), opts.fasta, window)
    with FastaSource(opts.fasta) as fasta, progress("bp") as bar:
        task = bar.add_task("evaluate", total=None)
        for label, windows in _region_windows(fasta, opts.regions, window):
            scores = _score_region(model, device, opts, label, windows, bar, task)
            summary.scores.extend(scores)
    summary.totals = _totals(summary.scores, opts.both_strands)
    summary.seconds = time.perf_counter() - started
    if summary.total.bases == 0:
        raise InputError(f"{opts.fasta}: no base could be scored (every window skipped for N, or regions too short)")
    _report(summary, opts)
    return summary


def _check_options(opts: EvaluateOptions) -> None:
    check_batch_size(opts.batch_size)
    check_max_n_frac(opts.max_n_frac)
    if opts.json_output is not None:  # checked before the evaluation, not after it
        refuse_overwriting_inputs({"--json": opts.json_output}, [opts.fasta, opts.model, *(opts.regions or [])])
        check_output_file(opts.json_output, "--json")


def _window(opts: EvaluateOptions, l_max: int) -> int:
    window = opts.window if opts.window is not None else min(l_max, DEFAULT_WINDOW_CAP)
    if window < 1:
        raise UsageError(f"--window must be >= 1, got {window}")
    if window > l_max:
        raise UsageError(f"--window {window} is longer than the model's maximum length {l_max}")
    return window


def _region_windows(fasta: FastaSource, specs: list[str] | None, window: int) -> Iterator[tuple[str, Iterator]]:
    """(label, windows of window + 1 bases every window bases) per region, or per contig without regions."""
    if specs:
        for region in (r for spec in specs for r in parse_regions(spec)):
            yield str(region), fasta.windows(window + 1, window, [region])
        return
    if fasta.indexed:
        for name in fasta.contig_lengths():
            yield name, fasta.windows(window + 1, window, [Region(name, 0, None)])
        return
    yield from _group_by_contig(fasta.windows(window + 1, window))  # one streaming pass


def _group_by_contig(windows: Iterator[Window]) -> Iterator[tuple[str, Iterator[Window]]]:
    """Consecutive windows of one contig as one lazy group (a streamed file yields them contig by contig)."""
    yield from itertools.groupby(windows, key=lambda w: w.contig)


def _score_region(model, device, opts: EvaluateOptions, label: str, windows, bar, task) -> list[Score]:
    tokenizer = CharTokenizer()
    strands = STRANDS if opts.both_strands else STRANDS[:1]
    scores = {s: Score(label, s) for s in strands}
    for batch in batched(_kept(windows, tokenizer, opts, scores), opts.batch_size):
        for strand in strands:
            rows = batch if strand == "+" else [reverse_complement_ids(ids) for ids in batch]
            nll, count = score_rows(model, rows, device, opts.precision)
            scores[strand].nll += nll
            scores[strand].bases += count
            scores[strand].windows += len(batch)
        bar.advance(task, sum(len(ids) - 1 for ids in batch))
    return list(scores.values())


def _kept(windows, tokenizer: CharTokenizer, opts: EvaluateOptions, scores: dict[str, Score]):
    """Token ids of the windows worth scoring (>= 2 bases, few enough N); skipped ones are counted."""
    for w in windows:
        ids = tokenizer.encode(w.sequence, record=w.contig, offset=w.start)
        if len(ids) < 2:
            continue
        if np.count_nonzero(ids == N_ID) > opts.max_n_frac * len(ids):
            for score in scores.values():
                score.skipped_windows += 1
            continue
        yield ids


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def score_rows(model, rows: list[np.ndarray], device: torch.device, precision: str) -> tuple[float, int]:
    """(sum of -ln P, count) over the A/C/G/T targets of each row's next-base predictions."""
    tokens, lengths = pad_right(rows, PAD_ID, device)  # (B, L), (B,)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, L-1)
    with autocast(device, precision):
        logits = model(inputs)  # (B, L-1, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, L-1)
    positions = torch.arange(targets.shape[1], device=device)[None, :]
    scored = (positions < (lengths[:, None] - 1)) & (targets >= A_ID) & (targets <= T_ID)
    return float(nll[scored].double().sum()), int(scored.sum())


def _totals(scores: list[Score], both: bool) -> list[Score]:
    totals = {s: Score("total", s) for s in (STRANDS if both else STRANDS[:1])}
    for score in scores:
        totals[score.strand].add(score)
    out = list(totals.values())
    if both:
        combined = Score("total", "both")
        for score in out:
            combined.add(score)
        combined.windows //= 2
        combined.skipped_windows //= 2
        out.append(combined)
    return out


# --------------------------------------------------------------------------- output


def format_table(summary: EvaluateSummary) -> str:
    header = ["region", "strand", "windows", "skipped", "bases", "perplexity", "bits/base"]
    rows = [_row(s) for s in summary.scores + summary.totals]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines) + "\n"


def _row(s: Score) -> list[str]:
    return [
        s.region,
        s.strand,
        str(s.windows),
        str(s.skipped_windows),
        f"{s.bases:,}",
        f"{s.perplexity:.4f}",
        f"{s.bits_per_base:.4f}",
    ]


def _report(summary: EvaluateSummary, opts: EvaluateOptions) -> None:
    """The table on stdout (stderr when the JSON goes to stdout); the JSON written atomically."""
    table = format_table(summary)
    if opts.json_output == "-":
        sys.stderr.write(table)
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
        return
    sys.stdout.write(table)
    if opts.json_output:
        write_text(opts.json_output, json.dumps(summary.to_dict(), indent=2) + "\n")
    total = summary.total
    log.info(
        "perplexity %.4f, %.4f bits/base over %s bases (%s strand) in %.1f s",
        total.perplexity,
        total.bits_per_base,
        f"{total.bases:,}",
        total.strand,
        summary.seconds,
    )
