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

import functools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from genomelm.errors import InputError
from genomelm.formats import genome_store as store
from genomelm.formats.fasta import Region, resolve_contig
from genomelm.runtime import Staging as _Staging
from genomelm.runtime import autocast
from genomelm.tokenizer import A_ID, C_ID, G_ID, N_ID, PAD_ID, T_ID, reverse_complement_ids
from genomelm.variants.llr import LlrTiling
from genomelm.variants.reference import Reference

SEGMENT_BASES = 1 << 20  # about this many bases per saved segment
# The vocabulary columns of A, C, G, T, a slice (ids 7-10): indexing a CUDA tensor with a Python list
# copies the list to the device from pageable memory, which waits for all queued work (one stall per strand).
_BASE_COLUMNS = slice(A_ID, T_ID + 1)
assert (A_ID, C_ID, G_ID, T_ID) == tuple(range(A_ID, A_ID + 4))


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

    def covered_spans(self, stride: int) -> list[list[tuple[int, int]]]:
        """Per contig (in order), the merged [start, end) positions its segments cover (blocks of ``stride``)."""
        spans: list[list[tuple[int, int]]] = [[] for _ in self.contigs]
        for index, first, end in self.segments:
            start, stop = first * stride, min(end * stride, self.contigs[index][1])
            runs = spans[index]
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], stop)
            else:
                runs.append((start, stop))
        return spans

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
#
# The host never waits for the device except to read a batch's results: inputs go through pinned
# memory with non-blocking copies (a copy from pageable memory synchronises the stream), and up to
# ``in_flight`` batches stay queued, across segment boundaries, while the host lays out the oldest.


@dataclass
class GenomeScorer:
    """Scores runs of blocks with the model, a batch of blocks at a time."""

    model: object
    reference: Reference
    tiling: LlrTiling
    device: object
    precision: str
    batch_size: int
    max_n_frac: float
    in_flight: int = 3  # batches queued on the device while the host works on the oldest

    def score_ranges(self, ranges: list, stop: Callable[[], bool]) -> Iterator[tuple[int, int, dict]]:
        """Score ``ranges`` — (contig, blocks: range, spans to keep or None) — in order; yield
        (index into ranges, k, arrays) for each, the arrays of its blocks [blocks.start, k). ``stop()`` is
        asked after each batch is queued: when it says so, the queued batches are finished, the range
        in progress is yielded up to its last queued block (k < blocks.stop), and nothing more follows."""
        parts: dict[int, _Part] = {}
        pending: deque[_Batch] = deque()
        pinned = torch.device(self.device).type == "cuda"
        ring = [_Staging(pinned) for _ in range(self.in_flight + 1)]  # a slot is free again once collected
        for count, (index, blocks) in enumerate(self._batches(ranges)):
            if index not in parts:
                parts[index] = _Part(self.reference, self.tiling, *ranges[index])
            stage = ring[count % len(ring)]
            pending.append(self._queue(index, blocks, self._prepare(parts[index], blocks, stage), stage))
            stopped = stop()
            while len(pending) > (0 if stopped else self.in_flight - 1):
                yield from self._collect(pending.popleft(), parts, stopped and not pending)
            if stopped:
                return
        while pending:
            yield from self._collect(pending.popleft(), parts, False)

    def _batches(self, ranges: list) -> Iterator[tuple[int, range]]:
        for index, (_, blocks, _) in enumerate(ranges):
            for first in range(blocks.start, blocks.stop, self.batch_size):
                yield index, range(first, min(first + self.batch_size, blocks.stop))

    def _prepare(self, part: _Part, blocks: range, stage: _Staging) -> tuple[list[_Strand], int]:
        """Host side of a batch: its passes' token ids (N-heavy blocks are not run), both strands;
        and the number of positions of the batch."""
        stride, start = self.tiling.stride, blocks.start * self.tiling.stride
        live = [b for b in blocks if self._context_ok(part.contig, b, part.length)]
        spans = [_pass_spans(self.tiling, b, part.length) for b in live]
        refs = self.reference.ids(part.contig, start, min(blocks.stop * stride, part.length))  # (n,)
        offsets = [b * stride - start for b in live]
        strands = []
        for strand in (0, 1):
            passes = [(part.contig, *pair[strand]) for pair in spans]
            put = functools.partial(_put, stage, strand)
            strands.append(_prepare_strand(self.reference, passes, offsets, refs, strand == 1, put))
        return strands, len(refs)

    @torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
    def _queue(self, index: int, blocks: range, prepared: tuple[list[_Strand], int], stage: _Staging) -> _Batch:
        """Queue a batch's passes and the copy of its (positions, 10) values back to the host."""
        strands, n = prepared
        values = torch.cat([_strand_values(self, strand, n) for strand in strands], dim=1)  # (n, 10)
        return _Batch(index, blocks, *stage.to_host(values))

    def _collect(self, batch: _Batch, parts: dict, last: bool) -> Iterator[tuple[int, int, dict]]:
        """Wait for ``batch`` and place its values; yield its range when that is done (or ``last``)."""
        batch.wait()
        part = parts[batch.index]
        part.place(batch)
        if last or batch.blocks.stop == part.blocks.stop:
            del parts[batch.index]
            yield batch.index, batch.blocks.stop, part.finish(batch.blocks.stop)

    def _context_ok(self, contig: str, block: int, length: int) -> bool:
        """As score-variants decides per SNV (n_in_context, no_context): some context, few enough N."""
        left, right = self.tiling.context_span(block * self.tiling.stride, length)
        bases = right - left - 1
        return bases > 0 and self.reference.n_count(contig, left, right) <= self.max_n_frac * bases


@dataclass
class _Strand:
    """One strand's passes of a batch, laid out on the host (pinned when the device is a GPU)."""

    reverse: bool
    tokens: torch.Tensor | None  # (B, L) uint8 token ids, right-padded with PAD; None: nothing to run
    rows: list[tuple[int, int]]  # per pass run: [first, end) rows of its output that have context
    ref: torch.Tensor | None  # (K,) uint8: the reference base's id at each of those rows
    dest: torch.Tensor  # (K,) int64: the batch position (0 = the batch's first base) of each row


def _prepare_strand(reference: Reference, passes, offsets: list[int], refs, reverse: bool, put=None) -> _Strand:
    """The token ids of a strand's passes (see _pass_spans) and where each output row goes in the
    batch: forward row i predicts the block's position missing + i, reverse row i position
    count - 1 - i (its rows run from the right). ``refs``: the batch's reference ids (n,) or None.
    ``put(name, array)``: the array as a tensor in a reusable (pinned) buffer; default: a new tensor."""
    put = put or (lambda _, array: torch.from_numpy(np.ascontiguousarray(array)))
    ids, rows, dest = [], [], []
    for (contig, lo, hi, first, end, missing), offset in zip(passes, offsets):
        if hi <= lo:
            continue
        seq = reference.ids(contig, lo, hi)
        ids.append(reverse_complement_ids(seq) if reverse else seq)
        rows.append((first, end))
        count = np.arange(end - first)
        dest.append(offset + (end - first - 1 - count if reverse else missing + count))
    where = np.concatenate(dest) if dest else np.empty(0, np.int64)
    tokens = put("tokens", _padded(ids)) if ids else None
    ref = None if refs is None else put("ref", refs[where].astype(np.uint8))
    return _Strand(reverse, tokens, rows, ref, put("dest", where))


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    """(B, L) uint8 ids, right-padded with PAD as runtime.pad_right pads them (safe: causal model)."""
    out = np.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=np.uint8)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _put(stage: _Staging, strand: int, name: str, array: np.ndarray) -> torch.Tensor:
    return stage.put((strand, name), array)


def _strand_values(scorer: GenomeScorer, strand: _Strand, n: int) -> torch.Tensor:
    """(n, 5) float32 on the device: llr of A, C, G, T and log P(ref) at each batch position, NaN
    where there is none (no context on this strand, block not run, reference not A/C/G/T)."""
    out = torch.full((n, 5), float("nan"), dtype=torch.float32, device=scorer.device)
    if strand.tokens is None:
        return out
    tokens = strand.tokens.to(scorer.device, non_blocking=True).long()  # (B, L)
    values = _log_probs(scorer, tokens, strand.rows, strand.reverse)  # (K, 4)
    code = strand.ref.to(scorer.device, non_blocking=True).long() - A_ID  # (K,)
    return out.index_copy_(0, strand.dest.to(scorer.device, non_blocking=True), _llr_rows(values, code))


def _log_probs(scorer: GenomeScorer, tokens: torch.Tensor, rows, reverse: bool) -> torch.Tensor:
    """log P(A, C, G, T) (K, 4) float64 at the given rows of each pass (reverse: the columns of the
    forward-strand bases), the same float64 log-softmax of the same float32 logits as block_log_probs."""
    with autocast(scorer.device, scorer.precision):
        hidden = scorer.model.hidden_states(tokens)  # (B, L, D)
    picked = torch.cat([hidden[b, lo:hi] for b, (lo, hi) in enumerate(rows)]).float()  # (K, D)
    log_probs = torch.log_softmax(scorer.model.lm_head(picked).double(), dim=-1)  # (K, V) float64
    bases = log_probs[:, _BASE_COLUMNS]  # (K, 4)
    return bases.flip(1) if reverse else bases  # reverse: T, G, C, A = the complement of A, C, G, T


def _llr_rows(values: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """(K, 5) float32: the llr of A, C, G, T and log P(ref) at each row, NaN where the reference
    (``code`` = id - A_ID) is not A/C/G/T. The llr is taken on the device (float64 difference, then
    float32, as BlockLogProbs.snv_llr rounds it), so that only 20 bytes per position come back."""
    valid = (code >= 0) & (code < 4)
    ref_lp = values.gather(1, code.clamp(0, 3)[:, None])  # (K, 1)
    llr = (values - ref_lp).float().masked_fill(~valid[:, None], float("nan"))  # (K, 4)
    return torch.cat([llr, ref_lp.float().masked_fill(~valid[:, None], float("nan"))], dim=1)


@dataclass
class _Batch:
    """A batch of blocks of range ``index`` whose device work is queued."""

    index: int
    blocks: range
    values: torch.Tensor  # (positions, 10) float32: forward llr A-T, log P(ref), the same reverse
    event: object  # torch.cuda.Event, None on the CPU

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


class _Part:
    """The segment arrays of one range of blocks, filled batch by batch."""

    def __init__(self, reference: Reference, tiling: LlrTiling, contig: str, blocks: range, spans):
        self.reference, self.tiling, self.contig, self.blocks, self.spans = reference, tiling, contig, blocks, spans
        self.length = reference.length(contig)
        self.start = blocks.start * tiling.stride
        n = min(blocks.stop * tiling.stride, self.length) - self.start
        self.arrays = {f"{s}_llr": np.empty((n, 4), np.float32) for s in ("forward", "reverse")}
        self.arrays.update({f"{s}_ref": np.empty(n, np.float32) for s in ("forward", "reverse")})

    def place(self, batch: _Batch) -> None:
        values = batch.values.numpy()  # (m, 10)
        lo = batch.blocks.start * self.tiling.stride - self.start
        for column, strand in ((0, "forward"), (5, "reverse")):
            self.arrays[f"{strand}_llr"][lo : lo + len(values)] = values[:, column : column + 4]
            self.arrays[f"{strand}_ref"][lo : lo + len(values)] = values[:, column + 4]

    def finish(self, done: int) -> dict[str, np.ndarray]:
        """The arrays of blocks [blocks.start, done), spans kept, with the reference and its flanks."""
        end = min(done * self.tiling.stride, self.length)
        arrays = {key: array[: end - self.start] for key, array in self.arrays.items()}
        _keep_spans(arrays, self.start, end, self.spans)
        arrays["ref"] = _ref_with_flanks(self.reference, self.contig, self.start, end)
        return arrays


class SegmentSaver:
    """Saves segments (genome_store.write_segment) in order on a background thread, so that the
    scoring loop keeps the device fed meanwhile; at most ``queued`` segments wait in memory."""

    def __init__(self, directory: str, queued: int = 2):
        self.directory, self.queued = directory, queued
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="segment-saver")
        self._pending: deque = deque()

    def save(self, contig_index: int, blocks: tuple[int, int], start: int, arrays: dict) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.queued):
            self._pending.popleft().result()  # raises a failed save's error here
        write = store.write_segment
        self._pending.append(self._thread.submit(write, self.directory, contig_index, blocks, start, arrays))

    def flush(self) -> None:
        """Wait until every segment given is on disk."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> SegmentSaver:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.flush()
        finally:
            self._thread.shutdown(wait=True)


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
        prepared = _prepare_strand(scorer.reference, passes, [0] * len(passes), None, reverse)
        counts = [end - first if hi > lo else 0 for _, lo, hi, first, end, _ in passes]
        values = np.empty((0, 4))
        if prepared.tokens is not None:
            with torch.no_grad():
                tokens = prepared.tokens.to(scorer.device).long()
                values = _log_probs(scorer, tokens, prepared.rows, reverse).cpu().numpy()
        rows = np.split(values, np.cumsum(counts)[:-1]) if blocks else []
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


def _in_order(rows: np.ndarray, missing: int, reverse: bool) -> np.ndarray:
    """A pass's rows in block order, with ``missing`` NaN rows where that strand has no context
    (before the rows forward; after them reverse, whose pass lists positions from the right)."""
    pad = np.full((missing, rows.shape[1]), np.nan, dtype=rows.dtype)
    return np.concatenate([rows[::-1], pad]) if reverse else np.concatenate([pad, rows])


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
