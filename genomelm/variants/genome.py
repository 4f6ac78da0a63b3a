"""Every possible SNV of a genome, scored once: the plan of llr blocks and the segments of scores.

The genome is cut into the llr blocks of ``LlrTiling`` (block k of a contig = 0-based positions
[k*stride, (k+1)*stride)), exactly those score-variants uses, and each block's values come from
``block_log_probs``: so the llr of an SNV here equals score-variants --method llr's for that SNV
(same tiling, precision; to float rounding, since a score-variants pass may stop at its last variant).

Runs of consecutive blocks form *segments* (about ``SEGMENT_BASES`` bases), the unit saved to disk,
shared among torchrun ranks and kept for --resume. A segment holds, per position:

- ``ref`` (n + 2,) uint8: token ids, with one flanking base on each side (N beyond a contig end);
- ``forward_llr`` / ``reverse_llr`` (n, 4) float32: llr of changing the position to A, C, G, T
  per strand, rounded as score-variants rounds them (0 at the reference base);
- ``forward_ref`` / ``reverse_ref`` (n,) float32: log P(reference base) per strand.

NaN = no value: a strand without context (a contig's first / last base), a reference base that is
not A/C/G/T, a context with more N than --max-n-frac allows, a position outside --regions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from genomelm.errors import InputError
from genomelm.formats.fasta import Region, resolve_contig
from genomelm.runtime import autocast, pad_right
from genomelm.tokenizer import A_ID, C_ID, G_ID, N_ID, PAD_ID, T_ID, reverse_complement_ids
from genomelm.variants.llr import LlrTiling
from genomelm.variants.reference import Reference

SEGMENT_BASES = 1 << 20  # about this many bases per saved segment
_FORWARD_COLUMNS = [A_ID, C_ID, G_ID, T_ID]  # vocabulary ids of A, C, G, T
_REVERSE_COLUMNS = [T_ID, G_ID, C_ID, A_ID]  # the reverse strand reads the complement of each base


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class GenomePlan:
    """What a run scores: the contigs of the tracks and the segments, in genome order.

    ``contigs`` (name, length) in FASTA order: those with positions to score. ``segments`` are
    (index into contigs, first block, end block), consecutive blocks of one contig. ``regions``
    maps a contig to the merged [start, end) spans to score (0-based), None = the whole contig.
    """

    contigs: list[tuple[str, int]]
    segments: list[tuple[int, int, int]]
    regions: dict[str, list[tuple[int, int]] | None]

    @property
    def bases(self) -> int:
        """Positions to score."""
        return sum(
            length if self.regions[name] is None else sum(e - s for s, e in self.regions[name])
            for name, length in self.contigs
        )


def plan_genome(lengths: dict[str, int], regions: list[Region] | None, tiling: LlrTiling, blocks_per_segment: int):
    """The GenomePlan of a FASTA (``lengths`` in file order) and optional regions (0-based half-open)."""
    spans = _region_spans(lengths, regions)
    contigs, segments = [], []
    for name, length in lengths.items():
        if length == 0 or (regions is not None and not spans.get(name)):
            continue
        index = len(contigs)
        contigs.append((name, length))
        for first, end in _block_runs(spans.get(name) or [(0, length)], tiling.stride):
            for start in range(first, end, blocks_per_segment):
                segments.append((index, start, min(start + blocks_per_segment, end)))
    return GenomePlan(contigs, segments, {name: spans.get(name) for name, _ in contigs})


def _region_spans(lengths: dict[str, int], regions: list[Region] | None) -> dict[str, list[tuple[int, int]]]:
    """Merged, sorted [start, end) spans per contig; unknown contigs and spans past the end -> InputError."""
    if regions is None:
        return {}
    spans: dict[str, list[tuple[int, int]]] = {}
    for region in regions:
        if region.contig not in lengths:
            alias = resolve_contig(region.contig, lengths)
            hint = f"; did you mean '{alias}'?" if alias else ""
            raise InputError(f"region {region}: contig '{region.contig}' is not in the FASTA{hint}")
        length = lengths[region.contig]
        end = length if region.end is None else region.end
        if end > length:
            raise InputError(f"region {region} is outside contig {region.contig} (length {length})")
        if end > region.start:
            spans.setdefault(region.contig, []).append((region.start, end))
    return {name: _merge(found) for name, found in spans.items()}


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def _block_runs(spans: list[tuple[int, int]], stride: int) -> list[tuple[int, int]]:
    """[first, end) runs of consecutive blocks that cover the spans."""
    runs: list[list[int]] = []
    for start, end in spans:
        first, last = start // stride, (end - 1) // stride + 1
        if runs and first <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], last)
        else:
            runs.append([first, last])
    return [(a, b) for a, b in runs]


# --------------------------------------------------------------------------- scoring segments


@dataclass
class GenomeScorer:
    """Scores the blocks of a segment with the model, a batch of blocks at a time."""

    model: object
    reference: Reference
    tiling: LlrTiling
    device: object
    precision: str
    batch_size: int
    max_n_frac: float

    def score(self, contig: str, blocks: range, spans, stop: Callable[[], bool]) -> tuple[int, dict] | None:
        """Arrays of blocks [blocks.start, k) for the largest k <= blocks.stop reached before ``stop()``
        says so (checked after each batch of blocks): (k, arrays), or None when no block was done.
        ``spans``: the [start, end) spans to keep (None = all)."""
        length = self.reference.length(contig)
        start = blocks.start * self.tiling.stride
        parts, done, pending = [], blocks.start, None
        for first in range(blocks.start, blocks.stop, self.batch_size):
            batch = range(first, min(first + self.batch_size, blocks.stop))
            launched = self._launch(contig, batch, length)  # queued on the device ...
            if pending is not None:
                parts.append(pending.collect())  # ... while the host finishes the batch before
            pending, done = launched, batch.stop
            if stop():
                break
        if pending is None:
            return None
        parts.append(pending.collect())
        end = min(done * self.tiling.stride, length)
        arrays = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        _keep_spans(arrays, start, end, spans)
        arrays["ref"] = _ref_with_flanks(self.reference, contig, start, end)
        return done, arrays

    def _launch(self, contig: str, blocks: range, length: int) -> _Batch:
        """Queue the passes of ``blocks`` (N-heavy ones are not run) and the copy of their llr back."""
        ref = {b: self.reference.ids(contig, *self.tiling.block_span(b, length)) for b in blocks}
        live = [b for b in blocks if self._context_ok(contig, b, length)]
        spans = [_pass_spans(self.tiling, b, length) for b in live]
        strands = []
        for strand, reverse in ((0, False), (1, True)):
            passes = [(contig, *pair[strand]) for pair in spans]
            values, counts = _strand_rows(self, passes, reverse)
            strands.append(_Copy(_llr_rows(values, counts, passes, [ref[b] for b in live], reverse), counts, passes))
        return _Batch(blocks, live, {b: len(ids) for b, ids in ref.items()}, strands)

    def _context_ok(self, contig: str, block: int, length: int) -> bool:
        """As score-variants decides per SNV (n_in_context, no_context): some context, few enough N."""
        left, right = self.tiling.context_span(block * self.tiling.stride, length)
        bases = right - left - 1
        return bases > 0 and self.reference.n_count(contig, left, right) <= self.max_n_frac * bases


def dense_block_log_probs(scorer: GenomeScorer, contig: str, blocks: list[int], length: int):
    """(forward, reverse) log P(A, C, G, T) of every position of each block, (P, 4) float64 each.

    The passes of ``block_log_probs`` for whole blocks (the same sequences, the same float64
    log-softmax of the same float32 logits), with the head, the log-softmax and the choice of rows
    done on the device in one go per strand: block_log_probs picks rows through Python lists and
    normalises on the CPU, which costs more than the model at genome scale. Equality with it is
    tested (to float rounding); score-genome goes one step further and takes the llr on the device."""
    spans = [_pass_spans(scorer.tiling, b, length) for b in blocks]
    out = []
    for strand, reverse in ((0, False), (1, True)):
        passes = [(contig, *pair[strand]) for pair in spans]
        values, counts = _strand_rows(scorer, passes, reverse)
        rows = np.split(values.cpu().numpy(), np.cumsum(counts)[:-1]) if blocks else []
        out.append([_in_order(r, p[-1], reverse) for r, p in zip(rows, passes)])
    return list(zip(*out))


def _pass_spans(tiling: LlrTiling, block: int, length: int):
    """For each strand: (sequence start, sequence end, first row, end row, rows before the first
    position that has context) of a whole block's pass; see LlrTiling for the spans."""
    start, end = tiling.block_span(block, length)
    left, right = tiling.context_span(start, length)
    first = max(start, left + 1)  # forward index i predicts position left + i + 1
    forward = (left, end - 1, first - left - 1, end - left - 1, first - start)
    last = min(end, right - 1)  # reverse index i predicts position right - i - 2
    reverse = (start + 1, right, right - last - 1, right - start - 1, end - last)
    return forward, reverse


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def _strand_rows(scorer: GenomeScorer, passes, reverse: bool) -> tuple[torch.Tensor, list[int]]:
    """log P(A, C, G, T) (K, 4) float64, on the device, at the rows of one strand's passes (reverse:
    columns for the forward-strand bases), and the number of rows of each pass (0: nothing to run)."""
    ids, counts = [], []
    for contig, lo, hi, first, end, _ in passes:
        seq = scorer.reference.ids(contig, lo, hi) if hi > lo else np.empty(0, dtype=np.int64)
        ids.append(reverse_complement_ids(seq) if reverse else seq)
        counts.append(end - first if len(seq) else 0)
    runnable = [j for j, seq in enumerate(ids) if len(seq)]
    if not runnable:
        return torch.empty((0, 4), dtype=torch.float64, device=scorer.device), counts
    tokens, _ = pad_right([ids[j] for j in runnable], PAD_ID, scorer.device)  # (B, L)
    with autocast(scorer.device, scorer.precision):
        hidden = scorer.model.hidden_states(tokens)  # (B, L, D)
    rows = [passes[j][3:5] for j in runnable]
    picked = torch.cat([hidden[b, lo:hi] for b, (lo, hi) in enumerate(rows)]).float()  # (K, D)
    log_probs = torch.log_softmax(scorer.model.lm_head(picked).double(), dim=-1)  # (K, V) float64
    return log_probs[:, _REVERSE_COLUMNS if reverse else _FORWARD_COLUMNS], counts


def _llr_rows(values: torch.Tensor, counts: list[int], passes, refs: list[np.ndarray], reverse: bool):
    """(K, 5) float32 on the device: the llr of A, C, G, T and log P(ref) at each row, NaN where the
    reference is not A/C/G/T. The llr is taken on the device (float64 difference, then float32, as
    BlockLogProbs.snv_llr rounds it), so that only 20 bytes per position come back to the host."""
    codes = []
    for ref, one_pass, count in zip(refs, passes, counts):
        code = ref.astype(np.int64) - A_ID  # (P,) block order
        missing = one_pass[-1]
        codes.append(code[:count][::-1] if reverse else code[missing : missing + count])
    code = torch.as_tensor(np.concatenate(codes) if codes else np.empty(0, np.int64), device=values.device)
    valid = (code >= 0) & (code < 4)
    ref_lp = values.gather(1, code.clamp(0, 3)[:, None])  # (K, 1)
    llr = (values - ref_lp).float().masked_fill(~valid[:, None], float("nan"))  # (K, 4)
    return torch.cat([llr, ref_lp.float().masked_fill(~valid[:, None], float("nan"))], dim=1)


class _Copy:
    """One strand's rows on their way to the host: an asynchronous copy and the event that ends it."""

    def __init__(self, rows: torch.Tensor, counts: list[int], passes):
        self.counts, self.passes, self.event = counts, passes, None
        if rows.is_cuda:
            self.rows = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
            self.rows.copy_(rows, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.rows = rows

    def per_pass(self, reverse: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """(llr (P, 4), log P(ref) (P,)) float32 per pass, in block order."""
        if self.event is not None:
            self.event.synchronize()
        out = []
        for rows, one_pass in zip(np.split(self.rows.numpy(), np.cumsum(self.counts)[:-1]), self.passes):
            ordered = _in_order(rows, one_pass[-1], reverse)
            out.append((ordered[:, :4], ordered[:, 4]))
        return out


@dataclass
class _Batch:
    """A batch of blocks whose device work is queued."""

    blocks: range
    live: list[int]
    sizes: dict[int, int]  # positions per block
    strands: list[_Copy]  # forward, reverse

    def collect(self) -> dict[str, np.ndarray]:
        """Wait for the batch's copies and lay its values out as segment arrays."""
        forward, reverse = self.strands[0].per_pass(False), self.strands[1].per_pass(True)
        results = {b: (f, r) for b, f, r in zip(self.live, forward, reverse)}
        parts = [_block_arrays(results.get(b), self.sizes[b]) for b in self.blocks]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _in_order(rows: np.ndarray, missing: int, reverse: bool) -> np.ndarray:
    """A pass's rows in block order, with ``missing`` NaN rows where that strand has no context
    (before the rows forward; after them reverse, whose pass lists positions from the right)."""
    pad = np.full((missing, rows.shape[1]), np.nan, dtype=rows.dtype)
    return np.concatenate([rows[::-1], pad]) if reverse else np.concatenate([pad, rows])


def _block_arrays(result, n: int) -> dict[str, np.ndarray]:
    """The segment arrays of one block of ``n`` positions (NaN everywhere when it was not run)."""
    if result is None:
        nan4, nan = np.full((n, 4), np.nan, dtype=np.float32), np.full(n, np.nan, dtype=np.float32)
        return {"forward_llr": nan4, "reverse_llr": nan4, "forward_ref": nan, "reverse_ref": nan}
    (forward_llr, forward_ref), (reverse_llr, reverse_ref) = result
    return {
        "forward_llr": forward_llr,
        "reverse_llr": reverse_llr,
        "forward_ref": forward_ref,
        "reverse_ref": reverse_ref,
    }


def _keep_spans(arrays: dict[str, np.ndarray], start: int, end: int, spans) -> None:
    """NaN at the positions of [start, end) outside ``spans`` (None: keep all)."""
    if spans is None:
        return
    keep = np.zeros(end - start, dtype=bool)
    for lo, hi in spans:
        keep[max(lo, start) - start : max(min(hi, end) - start, 0)] = True
    for array in arrays.values():
        array[~keep] = np.nan


def _ref_with_flanks(reference: Reference, contig: str, start: int, end: int) -> np.ndarray:
    """Token ids of [start - 1, end + 1), N beyond the contig's ends; uint8."""
    length = reference.length(contig)
    ids = reference.ids(contig, max(start - 1, 0), min(end + 1, length)).astype(np.uint8)
    before = [N_ID] if start == 0 else []
    after = [N_ID] if end == length else []
    return np.concatenate([np.array(before, np.uint8), ids, np.array(after, np.uint8)])
