"""Site log-likelihood ratios from genome-fixed tiles of forward and reverse-complement passes.

The genome is tiled at positions fixed by coordinates alone: block k holds the positions
[k*stride, (k+1)*stride) (0-based). One forward pass over [k*stride - context, (k+1)*stride - 1)
gives the next-token distribution at every position of the block, each from between ``context`` and
``context + stride - 1`` bases of its own left context; one pass over the reverse complement of
[k*stride + 1, (k+1)*stride + context) does the same from the right. A position's values are
therefore a function of its position alone (the same whichever other positions are asked for), and
``block_log_probs`` is the one function that computes them, for score-variants and score-genome.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genomelm.errors import UsageError
from genomelm.runtime import Staging, autocast, batched
from genomelm.tokenizer import A_ID, C_ID, G_ID, PAD_ID, T_ID, reverse_complement_ids
from genomelm.variants.reference import Reference

BASES = "ACGT"  # column order of the (P, 4) log-probability arrays
BASE_INDEX = {base: i for i, base in enumerate(BASES)}
_FORWARD_COLUMNS = [A_ID, C_ID, G_ID, T_ID]  # vocabulary ids of A, C, G, T
_REVERSE_COLUMNS = [T_ID, G_ID, C_ID, A_ID]  # the reverse strand reads the complement of each base


@dataclass(frozen=True)
class LlrTiling:
    """Genome-fixed llr windows. Block k = positions [k*stride, (k+1)*stride) (0-based).

    Forward pass of block k reads [k*stride - context, (k+1)*stride - 1); the reverse pass reads the
    reverse complement of [k*stride + 1, (k+1)*stride + context). Both are clipped to the contig.
    """

    context: int
    stride: int

    @property
    def pass_length(self) -> int:
        """Tokens in one full forward pass (either strand)."""
        return self.context + self.stride - 1

    def block(self, pos: int) -> int:
        return pos // self.stride

    def block_span(self, block: int, contig_length: int) -> tuple[int, int]:
        """Positions [start, end) of ``block`` (0-based half-open), clipped to the contig."""
        return block * self.stride, min(contig_length, (block + 1) * self.stride)

    def context_span(self, pos: int, contig_length: int) -> tuple[int, int]:
        """[first base of pos's left context, end of its right context), 0-based half-open."""
        block_start = self.block(pos) * self.stride
        left = max(0, block_start - self.context)
        right = min(contig_length, block_start + self.stride + self.context)
        return left, right


def model_window(l_max: int) -> int:
    """Tokens per pass used by default: the largest power of two <= l_max (a faster FFT size;
    e.g. 32768 for the 32k models, whose l_max is 32770)."""
    return 1 << (l_max.bit_length() - 1)


def llr_tiling(context: int | None, stride: int | None, l_max: int) -> LlrTiling:
    """--context / --stride with defaults filling the model window; a pass longer than l_max -> UsageError."""
    full = model_window(l_max)
    if context is not None and context >= l_max:
        raise UsageError(
            f"--context {context} is longer than the model allows: context + stride - 1 must be <= {l_max}"
        )
    if context is None and stride is None:
        stride = full // 2
    if context is None:
        context = full - stride
    if stride is None:
        stride = full - context if full > context else l_max + 1 - context
    if context < 1 or stride < 1:
        raise UsageError(
            f"--context and --stride must be >= 1 (got context {context}, stride {stride}); "
            f"the model reads at most {l_max} bases per pass"
        )
    tiling = LlrTiling(context, stride)
    if tiling.pass_length > l_max:
        raise UsageError(
            f"--context {context} plus --stride {stride} needs passes of {tiling.pass_length} bases, "
            f"longer than the model allows ({l_max})"
        )
    return tiling


# --------------------------------------------------------------------------- passes


@dataclass
class Pass:
    """One sequence for the model and the indices whose next-token logits are wanted."""

    ids: np.ndarray  # (L,) token ids, any integer dtype (uint8 from the reference tiles: not copied, not written)
    positions: list[int]  # indices into ids: the logits there predict the token after


def run_passes(model, passes: list[Pass], device, precision: str, batch_size: int) -> list[np.ndarray]:
    """Next-token logits (K, V) float32 at each pass's positions (``start_passes``, waited for)."""
    return start_passes(model, passes, device, precision, batch_size)()


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def start_passes(
    model, passes: list[Pass], device, precision: str, batch_size: int, stage: Staging | None = None
) -> Callable[[], list[np.ndarray]]:
    """Queue every batch of ``passes`` on the device without waiting for it; the returned function
    waits and gives ``run_passes``'s result. Longest passes are batched together (right padding is
    invisible to a causal model); the head runs in fp32 on the picked rows only. Host inputs go
    through ``stage`` (reused, pinned on a GPU) in one copy before any model work, and the picked
    logits of all batches come back in one asynchronous copy, so the host can prepare the next
    chunk while the device runs this one."""
    stage = stage or Staging(torch.device(device).type == "cuda")
    order = sorted(range(len(passes)), key=lambda j: -len(passes[j].ids))
    batches = [[passes[j] for j in batch] for batch in batched(order, batch_size)]
    inputs = _copy_inputs(batches, device, stage)
    picked = [_queue_batch(model, batch, k, device, precision, inputs[k]) for k, batch in enumerate(batches)]
    if not picked:
        return lambda: []
    host, event = stage.to_host(torch.cat(picked))  # (K, V)
    counts = [len(one.positions) for batch in batches for one in batch]  # in ``order``: batches are its slices

    def finish() -> list[np.ndarray]:
        wait_for_device(event)
        rows = np.split(host.numpy().copy(), np.cumsum(counts)[:-1])  # a copy: the buffer is reused
        out: list[np.ndarray | None] = [None] * len(passes)
        for j, row in zip(order, rows):
            out[j] = row
        return out

    return finish


def wait_for_device(event) -> None:
    """Block until the device work before ``event`` is done (None: nothing to wait for, e.g. the CPU).
    A function of its own so that benchmarks/profile_variants.py can time the waits."""
    if event is not None:
        event.synchronize()


def _copy_inputs(batches: list[list[Pass]], device, stage: Staging) -> list[tuple[torch.Tensor, ...]]:
    """Every batch's right-padded token ids and picked (row, position) pairs, staged in one host buffer
    each and copied to the device together, before the chunk's first forward pass is queued: per batch,
    device views (tokens (B, L) uint8, rows (K,), cols (K,)). Two copies per chunk rather than three per
    batch, none of them queued behind a forward pass (issue 15: the host must not wait for the device
    while it could prepare the next chunk)."""
    if not batches:
        return []
    shapes = [(len(batch), max(len(one.ids) for one in batch)) for batch in batches]  # (B, L) per batch
    sizes = [n * length for n, length in shapes]
    tokens = stage.empty(("tokens",), (sum(sizes),), torch.uint8)  # (sum B*L,)
    flat = tokens.numpy()
    flat.fill(PAD_ID)  # numpy's fill: torch's fill_ of a host buffer wakes its thread pool (ms on a busy host)
    for batch, view in zip(batches, np.split(flat, np.cumsum(sizes)[:-1])):
        array = view.reshape(len(batch), -1)  # (B, L), a view of the staging buffer
        for b, one in enumerate(batch):
            array[b, : len(one.ids)] = one.ids
    rows = [np.repeat(np.arange(len(batch)), [len(one.positions) for one in batch]) for batch in batches]
    cols = [np.asarray(one.positions, dtype=np.int64) for batch in batches for one in batch]
    picks = stage.put(("picks",), np.stack([np.concatenate(rows), np.concatenate(cols)]))  # (2, K)
    tokens, picks = tokens.to(device, non_blocking=True), picks.to(device, non_blocking=True)
    counts = [len(r) for r in rows]
    token_views = [t.view(shape) for t, shape in zip(torch.split(tokens, sizes), shapes)]
    return [(t, *p) for t, p in zip(token_views, torch.split(picks, counts, dim=1))]


def _queue_batch(model, batch: list[Pass], k: int, device, precision: str, inputs) -> torch.Tensor:
    """Queue batch ``k`` of a chunk (``batch``: its passes) from its device ``inputs`` (``_copy_inputs``);
    (K, V) float32 logits at its passes' positions, on the device."""
    tokens, rows, cols = inputs  # (B, L) uint8, (K,), (K,)
    with autocast(device, precision):
        hidden = model.hidden_states(tokens.long())  # (B, L, D)
    return model.lm_head(hidden[rows, cols].float())  # (K, V)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, in float64 (so differences of two entries equal the logit
    difference to float64 rounding: llr values do not depend on the normaliser)."""
    wide = logits.astype(np.float64)
    top = wide.max(axis=-1, keepdims=True)
    return wide - (top + np.log(np.exp(wide - top).sum(axis=-1, keepdims=True)))


# --------------------------------------------------------------------------- per-block log-probabilities


@dataclass
class BlockLogProbs:
    """Log-probabilities of the 4 bases at some positions of one llr block, on both strands.

    ``forward[i, b]`` = log P(base b at positions[i] | left context) from the forward pass;
    ``reverse[i, b]`` = log P(base b at positions[i] | right context) from the reverse-complement
    pass, given for the forward-strand base (column A holds the reverse pass's log P(T)). Columns
    are A, C, G, T (``BASES``); rows without context on a strand (a contig's first base forward,
    its last base reverse) are NaN there, and ``has_forward`` / ``has_reverse`` say which rows have
    context, so a NaN in a row that has context means the model produced a non-finite value.
    """

    contig: str
    block: int
    positions: np.ndarray  # (P,) int64, 0-based, sorted
    forward: np.ndarray  # (P, 4) float64
    reverse: np.ndarray  # (P, 4) float64
    has_forward: np.ndarray  # (P,) bool
    has_reverse: np.ndarray  # (P,) bool
    passes: int = 0  # forward passes run for this block (0 to 2)

    def row(self, pos: int) -> int:
        """Index of 0-based ``pos`` in ``positions`` (KeyError when it was not asked for)."""
        i = int(np.searchsorted(self.positions, pos))
        if i == len(self.positions) or self.positions[i] != pos:
            raise KeyError(f"{self.contig}:{pos} is not among this block's positions")
        return i

    def snv_llr(self, pos: int, ref: str, alts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(forward, reverse) llr log P(alt) - log P(ref) of SNVs at 0-based ``pos``, one per ALT base;
        rounded to float32 (the precision of the model's logits); NaN where the strand has no context."""
        i, r = self.row(pos), BASE_INDEX[ref]
        columns = [BASE_INDEX[a] for a in alts]
        forward = (self.forward[i, columns] - self.forward[i, r]).astype(np.float32).astype(np.float64)
        reverse = (self.reverse[i, columns] - self.reverse[i, r]).astype(np.float32).astype(np.float64)
        return forward, reverse


@dataclass(frozen=True)
class BlockRequest:
    """Positions of one block to compute; ``positions`` None = every position of the block."""

    contig: str
    block: int
    positions: Sequence[int] | None = None


def block_log_probs(
    model,
    reference: Reference,
    contig: str,
    blocks: Iterable[int],
    tiling: LlrTiling,
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 8,
    positions: Mapping[int, Sequence[int]] | None = None,
) -> list[BlockLogProbs]:
    """Per-position base log-probabilities of ``blocks`` of ``contig``, both strands (see BlockLogProbs).

    Runs one forward and one reverse-complement pass per block, ``batch_size`` passes per model
    call. ``positions`` (block -> 0-based positions inside it) limits a block to those positions:
    its forward pass then ends at the last of them and its reverse pass starts after the first
    (the model is causal, so the others' values do not change beyond float rounding). Default:
    every position of the block. The llr of an SNV is ``result.snv_llr(pos, ref, alts)``: exactly
    what ``genomelm score-variants --method llr`` reports with the same tiling, precision and batch.
    """
    wanted = positions or {}
    requests = [BlockRequest(contig, b, wanted.get(b)) for b in blocks]
    return log_probs_of_blocks(model, reference, requests, tiling, device, precision, batch_size)


def log_probs_of_blocks(
    model, reference: Reference, requests: list[BlockRequest], tiling: LlrTiling, device, precision="fp32", batch_size=8
) -> list[BlockLogProbs]:
    """``block_log_probs`` for blocks of any contigs at once (their passes share batches)."""
    return start_log_probs_of_blocks(model, reference, requests, tiling, device, precision, batch_size)()


def start_log_probs_of_blocks(
    model,
    reference: Reference,
    requests: list[BlockRequest],
    tiling: LlrTiling,
    device,
    precision,
    batch_size,
    stage=None,
) -> Callable[[], list[BlockLogProbs]]:
    """``log_probs_of_blocks`` with the device work queued (see ``start_passes``); call the result for it."""
    plans = [_plan_block(reference, request, tiling) for request in requests]
    passes = [one_pass for _, plan in plans for one_pass, _, _ in plan]
    wait = start_passes(model, passes, device, precision, batch_size, stage)

    def finish() -> list[BlockLogProbs]:
        logits = iter(wait())
        return [_fill(request, positions, plan, logits) for request, (positions, plan) in zip(requests, plans)]

    return finish


def _plan_block(reference: Reference, request: BlockRequest, tiling: LlrTiling):
    """(positions, [(pass, strand, rows)]) of one block: strand 0 forward, 1 reverse; ``rows`` are
    the indices into ``positions`` that the pass's picked logits predict."""
    length = reference.length(request.contig)
    start, end = tiling.block_span(request.block, length)
    if request.positions is None:
        positions = np.arange(start, end, dtype=np.int64)
    else:
        positions = np.unique(np.asarray(request.positions, dtype=np.int64))
    left, right = tiling.context_span(start, length)
    plan = []
    if len(positions) and positions[-1] > left:  # forward: index i predicts position left + i + 1
        ids = reference.ids_uint8(request.contig, left, int(positions[-1]))  # (L,)
        rows = np.flatnonzero(positions > left)
        plan.append((Pass(ids, (positions[rows] - left - 1).tolist()), 0, rows))
    if len(positions) and right > positions[0] + 1:  # reverse: index i predicts position right - i - 2
        ids = reverse_complement_ids(reference.ids_uint8(request.contig, int(positions[0]) + 1, right))  # (L,)
        rows = np.flatnonzero(positions < right - 1)
        plan.append((Pass(ids, (right - positions[rows] - 2).tolist()), 1, rows))
    return positions, plan


def _fill(request: BlockRequest, positions: np.ndarray, plan, logits) -> BlockLogProbs:
    n = len(positions)
    arrays = [np.full((n, 4), np.nan), np.full((n, 4), np.nan)]  # forward, reverse: (P, 4)
    has = [np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)]
    for _, strand, rows in plan:
        arrays[strand][rows] = _log_softmax(next(logits))[:, _REVERSE_COLUMNS if strand else _FORWARD_COLUMNS]
        has[strand][rows] = True
    return BlockLogProbs(request.contig, request.block, positions, *arrays, *has, passes=len(plan))


# --------------------------------------------------------------------------- SNV queries


@dataclass
class SnvQuery:
    """One SNV site to score with llr: 0-based ``pos`` on FASTA contig ``contig``, REF and ALT bases."""

    contig: str
    pos: int
    ref: str
    alts: list[str]


@dataclass
class LlrResult:
    """Per-ALT llr values of one query; NaN where that strand has no context (or no finite value)."""

    forward: np.ndarray  # (n_alts,)
    reverse: np.ndarray  # (n_alts,)
    non_finite: np.ndarray | None = None  # (n_alts,) bool: a strand with context gave NaN/inf

    @property
    def mean(self) -> np.ndarray:
        """Mean of the strands that have a value (NaN only if neither has)."""
        forward, reverse = self.forward, self.reverse  # (n_alts,) each
        # Four ufuncs rather than stack/nansum: this runs once per record (lookups do 50k+/s).
        return np.where(np.isnan(forward), reverse, np.where(np.isnan(reverse), forward, (forward + reverse) / 2))


def score_llr_shared(
    model, reference: Reference, queries: list[SnvQuery], tiling: LlrTiling, device, precision="fp32", batch_size=8
) -> tuple[list[LlrResult], int]:
    """llr of every query from one forward pass per (block, strand) through ``log_probs_of_blocks``;
    returns the results and the number of passes."""
    return start_llr_shared(model, reference, queries, tiling, device, precision, batch_size)()


def start_llr_shared(
    model, reference: Reference, queries: list[SnvQuery], tiling: LlrTiling, device, precision, batch_size, stage=None
) -> Callable[[], tuple[list[LlrResult], int]]:
    """``score_llr_shared`` with the device work queued (see ``start_passes``); call the result for it."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, query in enumerate(queries):
        groups[(query.contig, tiling.block(query.pos))].append(i)
    requests = [BlockRequest(c, b, [queries[i].pos for i in members]) for (c, b), members in groups.items()]
    wait = start_log_probs_of_blocks(model, reference, requests, tiling, device, precision, batch_size, stage)

    def finish() -> tuple[list[LlrResult], int]:
        blocks = wait()
        results: list[LlrResult | None] = [None] * len(queries)
        for block, members in zip(blocks, groups.values()):
            for i, result in zip(members, _block_results(block, [queries[i] for i in members])):
                results[i] = result
        return results, sum(block.passes for block in blocks)

    return finish


def _block_results(block: BlockLogProbs, queries: list[SnvQuery]) -> list[LlrResult]:
    """``_query_result`` of every query of one block (whose positions the block was asked for), in a few
    array operations over all their ALTs: the same element-wise arithmetic, so the same bits, and less
    host time per pass than one call per query (issue 15)."""
    counts = [len(q.alts) for q in queries]
    rows = np.repeat(np.searchsorted(block.positions, [q.pos for q in queries]), counts)  # (A,) one per ALT
    refs = np.repeat([BASE_INDEX[q.ref] for q in queries], counts)
    alts = [BASE_INDEX[a] for q in queries for a in q.alts]
    forward = (block.forward[rows, alts] - block.forward[rows, refs]).astype(np.float32).astype(np.float64)
    reverse = (block.reverse[rows, alts] - block.reverse[rows, refs]).astype(np.float32).astype(np.float64)
    non_finite = (block.has_forward[rows] & ~np.isfinite(forward)) | (block.has_reverse[rows] & ~np.isfinite(reverse))
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    return [LlrResult(forward[a:b], reverse[a:b], non_finite[a:b]) for a, b in zip(starts, ends)]


def score_llr_naive(
    model, reference: Reference, queries: list[SnvQuery], tiling: LlrTiling, device, precision="fp32"
) -> tuple[list[LlrResult], int]:
    """The same scores, one forward pass per variant and strand over exactly that variant's context
    (as per-variant tools do). For tests and the benchmark; much slower than ``score_llr_shared``."""
    requests = [BlockRequest(q.contig, tiling.block(q.pos), [q.pos]) for q in queries]
    blocks = log_probs_of_blocks(model, reference, requests, tiling, device, precision, batch_size=1)
    return [_query_result(b, q) for b, q in zip(blocks, queries)], sum(b.passes for b in blocks)


def _query_result(block: BlockLogProbs, query: SnvQuery) -> LlrResult:
    forward, reverse = block.snv_llr(query.pos, query.ref, query.alts)
    i = block.row(query.pos)
    non_finite = (block.has_forward[i] & ~np.isfinite(forward)) | (block.has_reverse[i] & ~np.isfinite(reverse))
    return LlrResult(forward, reverse, non_finite)
