"""`genomelm score-variants`: zero-shot variant effect scores, written into the VCF's INFO column.

Methods (DESIGN.md §6); every value is per ALT allele (Number=A), '.' where an allele has none:

- ``llr`` (SNVs): log P(alt) - log P(ref) at the variant from the model's next-token distribution,
  on the forward strand (left context) and the reverse-complement strand (right context), and their
  mean. The genome is tiled at positions fixed by coordinates alone: block k holds the positions
  [k*stride, (k+1)*stride) (0-based), and one forward pass per strand over
  [k*stride - context, (k+1)*stride - 1) scores every variant of the block, each from between
  ``context`` and ``context + stride - 1`` bases of its own left context (likewise on the right for
  the reverse strand). A variant's score is therefore a function of its position alone, the same
  alone or among neighbours, and ``score_llr_naive`` (one pass per variant, as peers do) reproduces it.
- ``delta-ll`` (SNVs, MNVs, indels): log-likelihood of a window centred on the variant with the ALT
  allele minus with the REF allele (same flanks), mean of both strands. The terms before the first
  changed base are equal in both (causal model) and left out; the REF passes are shared by all ALT
  alleles at a site.
- ``embedding``: cosine distance and L2 distance between the REF and ALT mean embeddings (final
  layer) of that centred window, both strands averaged.

Near contig ends a variant is scored with the context there is (a shorter window); a strand with no
context at all (the first or last base of a contig) is left out of the mean. Records that cannot be
scored are written unchanged apart from ``<prefix>SKIP=<reason>`` and counted in the summary.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from genomelm import __version__
from genomelm.commands._common import (
    autocast,
    batched,
    load_inference_model,
    model_label,
    pad_right,
    select_device,
    set_threads,
)
from genomelm.errors import InputError, RefMismatchError, UsageError
from genomelm.formats import vcf
from genomelm.formats.atomic import refuse_overwriting_inputs
from genomelm.formats.atomic import same_file as _same_file
from genomelm.formats.fasta import FastaSource, parse_regions
from genomelm.log import get_logger, progress
from genomelm.tokenizer import N_ID, PAD_ID, CharTokenizer, reverse_complement_ids

log = get_logger(__name__)

METHODS = ("llr", "delta-ll", "embedding")
MISMATCH_POLICIES = ("skip", "error")
DEFAULT_WINDOW_CAP = 4096  # delta-ll / embedding window when --window is not given
CHUNK_MAX_RECORDS = 65536  # records held at once (bounds memory whatever the VCF size)
WINDOW_SITES_PER_SLICE = 256  # delta-ll / embedding windows are built for this many sites at a time
_TILE = 1 << 16  # bases per cached reference tile

# Reasons a record or allele is not scored, besides vcf.allele_kind's (symbolic, breakend, ...).
CONTIG_MISSING, OUT_OF_RANGE, REF_MISMATCH = "contig_missing", "out_of_range", "ref_mismatch"
N_IN_CONTEXT, NOT_SNV, TOO_LONG, NO_CONTEXT = "n_in_context", "not_snv", "too_long", "no_context"
_SCORABLE = (vcf.SNV, vcf.MNV, vcf.INDEL)
_BASE_ID = {"A": 7, "C": 8, "G": 9, "T": 10}
_COMPLEMENT_ID = {7: 10, 8: 9, 9: 8, 10: 7}


@dataclass
class ScoreVariantsOptions:
    input: str  # VCF/BCF path, or '-' for stdin
    fasta: str  # reference FASTA (plain or bgzip: random access needed)
    output: str = "-"  # .vcf, .vcf.gz, .bcf, or '-' for VCF on stdout
    model: str | None = None
    methods: list[str] = field(default_factory=lambda: ["llr"])
    context: int | None = None  # llr: least context (bases) on each strand; default half the model window
    stride: int | None = None  # llr: length of the blocks scored by one pass; default the rest of the window
    window: int | None = None  # delta-ll / embedding: centred REF window; default min(model window / 2, 4096)
    regions: list[str] | None = None  # BED paths and/or samtools-style regions (1-based inclusive)
    tsv: str | None = None  # also write a flat table here
    index: bool = False  # write a .tbi/.csi beside a .vcf.gz/.bcf output
    info_prefix: str = "GLM_"
    on_ref_mismatch: str = "skip"
    strict: bool = False  # any record that cannot be scored is an error
    max_n_frac: float = 0.05  # skip a variant whose context has more N than this
    batch_size: int = 8
    device: str = "auto"
    precision: str = "fp32"
    conv_backend: str | None = None
    threads: int | None = None
    trust_checkpoint: bool = False


@dataclass
class ScoreVariantsSummary:
    output: str
    records: int = 0
    scored: int = 0  # records with at least one value
    alleles_scored: int = 0
    skipped: Counter = field(default_factory=Counter)  # records without any value, by reason
    alleles_unscored: Counter = field(default_factory=Counter)  # ALT alleles without a value, by reason
    forward_passes: int = 0  # sequences run through the model (one per window and strand)
    replaced: int = 0  # old INFO values with the output prefix removed from records (a re-run, another tool)
    seconds: float = 0.0

    @property
    def variants_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- reference access


class Reference:
    """Token ids of a FASTA by 0-based half-open span, from cached tiles of 64 kb.

    Each tile is encoded once (soft-masked lowercase -> the same ids as uppercase, IUPAC -> N) and
    keeps a running count of N, so ``n_count`` is O(tiles), not O(bases).
    """

    def __init__(self, fasta: FastaSource, cache_tiles: int = 64):
        self.fasta = fasta
        self.lengths = fasta.contig_lengths()
        self._cache: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_tiles = cache_tiles
        self._tokenizer = CharTokenizer()

    def length(self, contig: str) -> int:
        return self.lengths[contig]

    def ids(self, contig: str, start: int, end: int) -> np.ndarray:
        """int64 ids of [start, end) on ``contig`` (0-based half-open, inside the contig)."""
        parts = [tile[lo:hi] for tile, _, lo, hi in self._pieces(contig, start, end)]
        out = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)
        return out.astype(np.int64)

    def n_count(self, contig: str, start: int, end: int) -> int:
        """Number of N (or IUPAC) bases in [start, end), 0-based half-open."""
        return int(sum(counts[hi] - counts[lo] for _, counts, lo, hi in self._pieces(contig, start, end)))

    def _pieces(self, contig: str, start: int, end: int) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
        """(tile ids, tile N prefix counts, lo, hi) covering [start, end), tile-local lo/hi."""
        for tile_index in range(start // _TILE, (end - 1) // _TILE + 1 if end > start else start // _TILE):
            ids, counts = self._tile(contig, tile_index)
            offset = tile_index * _TILE
            yield ids, counts, max(start, offset) - offset, min(end, offset + _TILE) - offset

    def _tile(self, contig: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        key = (contig, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        start = index * _TILE
        text = self.fasta.fetch(contig, start, min(start + _TILE, self.lengths[contig]))
        ids = self._tokenizer.encode(text, record=contig, offset=start).astype(np.uint8)
        counts = np.concatenate([[0], np.cumsum(ids == N_ID, dtype=np.int32)])  # (len + 1,)
        self._cache[key] = (ids, counts)
        if len(self._cache) > self._cache_tiles:
            self._cache.popitem(last=False)
        return ids, counts


# --------------------------------------------------------------------------- llr: tiling and scoring


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

    def context_span(self, pos: int, contig_length: int) -> tuple[int, int]:
        """[first base of pos's left context, end of its right context), 0-based half-open."""
        block_start = self.block(pos) * self.stride
        left = max(0, block_start - self.context)
        right = min(contig_length, block_start + self.stride + self.context)
        return left, right


@dataclass
class SnvQuery:
    """One SNV site to score with llr: 0-based ``pos`` on FASTA contig ``contig``, REF and ALT bases."""

    contig: str
    pos: int
    ref: str
    alts: list[str]


@dataclass
class LlrResult:
    """Per-ALT llr values of one query; NaN where that strand has no context."""

    forward: np.ndarray  # (n_alts,)
    reverse: np.ndarray  # (n_alts,)

    @property
    def mean(self) -> np.ndarray:
        """Mean of the strands that have a value (NaN only if neither has)."""
        both = np.stack([self.forward, self.reverse])  # (2, n_alts)
        counts = np.sum(~np.isnan(both), axis=0)
        total = np.nansum(both, axis=0)
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


@dataclass
class _Pass:
    """One sequence for the model and the positions whose next-token logits are wanted."""

    ids: np.ndarray  # (L,) int64
    positions: list[int]  # indices into the pass: logits there predict the next token
    owners: list[tuple[int, int]]  # (query index, strand 0 forward / 1 reverse) per position


def score_llr_shared(
    model, reference: Reference, queries: list[SnvQuery], tiling: LlrTiling, device, precision="fp32", batch_size=8
) -> tuple[list[LlrResult], int]:
    """llr of every query from one forward pass per (block, strand); returns the results and the
    number of passes. A block's forward pass ends at its last variant and its reverse pass at its
    first (the model is causal, so the logits of the others do not change)."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, query in enumerate(queries):
        groups[(query.contig, tiling.block(query.pos))].append(i)
    passes = []
    for (contig, block), members in groups.items():
        passes += _block_passes(reference, queries, members, contig, block, tiling)
    logits = _run_passes(model, passes, device, precision, batch_size)
    return _llr_results(queries, passes, logits), len(passes)


def _block_passes(reference, queries, members, contig, block, tiling) -> list[_Pass]:
    length = reference.length(contig)
    positions = [queries[i].pos for i in members]
    left, right = tiling.context_span(block * tiling.stride, length)
    passes = []
    forward_end = max(positions)
    if forward_end > left:
        ids = reference.ids(contig, left, forward_end)  # (L,)
        keep = [(i, p) for i, p in zip(members, positions) if p > left]
        passes.append(_Pass(ids, [p - left - 1 for _, p in keep], [(i, 0) for i, _ in keep]))
    reverse_start = min(positions) + 1
    if right > reverse_start:
        ids = reverse_complement_ids(reference.ids(contig, reverse_start, right))  # (L,)
        keep = [(i, p) for i, p in zip(members, positions) if p < right - 1]
        passes.append(_Pass(ids, [right - p - 2 for _, p in keep], [(i, 1) for i, _ in keep]))
    return passes


def score_llr_naive(
    model, reference: Reference, queries: list[SnvQuery], tiling: LlrTiling, device, precision="fp32"
) -> tuple[list[LlrResult], int]:
    """The same scores, one forward pass per variant and strand over exactly that variant's context
    (as per-variant tools do). For tests and the benchmark; much slower than ``score_llr_shared``."""
    passes = []
    for i, query in enumerate(queries):
        left, right = tiling.context_span(query.pos, reference.length(query.contig))
        if query.pos > left:
            ids = reference.ids(query.contig, left, query.pos)
            passes.append(_Pass(ids, [len(ids) - 1], [(i, 0)]))
        if right > query.pos + 1:
            ids = reverse_complement_ids(reference.ids(query.contig, query.pos + 1, right))
            passes.append(_Pass(ids, [len(ids) - 1], [(i, 1)]))
    logits = _run_passes(model, passes, device, precision, batch_size=1)
    return _llr_results(queries, passes, logits), len(passes)


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def _run_passes(model, passes: list[_Pass], device, precision: str, batch_size: int) -> list[np.ndarray]:
    """Next-token logits (K, V) at each pass's positions. Longest passes are batched together
    (right padding is invisible to a causal model); the head runs in fp32 on the picked rows only."""
    out: list[np.ndarray | None] = [None] * len(passes)
    order = sorted(range(len(passes)), key=lambda j: -len(passes[j].ids))
    for batch in batched(order, batch_size):
        tokens, _ = pad_right([passes[j].ids for j in batch], PAD_ID, device)  # (B, L)
        with autocast(device, precision):
            hidden = model.hidden_states(tokens)  # (B, L, D)
        rows = torch.tensor([b for b, j in enumerate(batch) for _ in passes[j].positions], device=device)
        cols = torch.tensor([p for j in batch for p in passes[j].positions], device=device)
        picked = model.lm_head(hidden[rows, cols].float()).cpu().numpy()  # (K, V)
        start = 0
        for j in batch:
            out[j] = picked[start : start + len(passes[j].positions)]
            start += len(passes[j].positions)
    return out


def _llr_results(queries: list[SnvQuery], passes: list[_Pass], logits: list[np.ndarray]) -> list[LlrResult]:
    results = [LlrResult(np.full(len(q.alts), np.nan), np.full(len(q.alts), np.nan)) for q in queries]
    for one_pass, rows in zip(passes, logits):
        for (i, strand), row in zip(one_pass.owners, rows):
            ref, alts = _BASE_ID[queries[i].ref], [_BASE_ID[a] for a in queries[i].alts]
            if strand == 1:  # the reverse strand reads the complementary bases
                ref, alts = _COMPLEMENT_ID[ref], [_COMPLEMENT_ID[a] for a in alts]
            # The softmax normaliser cancels in log P(alt) - log P(ref): a logit difference.
            values = np.array([row[a] - row[ref] for a in alts], dtype=np.float64)
            (results[i].forward if strand == 0 else results[i].reverse)[:] = values
    return results


# --------------------------------------------------------------------------- delta-ll and embedding


@dataclass(frozen=True)
class CentredWindow:
    """A window of ``length`` bases centred on a variant's REF allele, clipped to the contig."""

    length: int

    def flanks(self, start: int, ref_length: int, contig_length: int) -> tuple[int, int]:
        """[left flank start, right flank end), 0-based half-open, around REF at [start, start + ref_length)."""
        left = (self.length - ref_length) // 2
        right = self.length - ref_length - left
        return max(0, start - left), min(contig_length, start + ref_length + right)


@dataclass
class _Seq:
    """A REF or ALT window on one strand; ``diverge`` = index of its first base that differs
    between REF and ALT (the log-likelihood terms before it are equal in both and left out)."""

    ids: np.ndarray  # (L,) int64
    diverge: int


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def _sequence_stats(model, seqs: list[_Seq], device, precision: str, batch_size: int):
    """(log-likelihood of tokens from ``diverge`` on, mean final embedding (D,)) per sequence."""
    out: list = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda j: -len(seqs[j].ids))
    for batch in batched(order, batch_size):
        tokens, lengths = pad_right([seqs[j].ids for j in batch], PAD_ID, device)  # (B, L), (B,)
        with autocast(device, precision):
            hidden = model.hidden_states(tokens)  # (B, L, D)
        hidden = hidden.float()
        logp = torch.log_softmax(model.lm_head(hidden[:, :-1]), dim=-1)  # (B, L-1, V): predicts tokens 1..L-1
        token_logp = logp.gather(-1, tokens[:, 1:, None])[..., 0]  # (B, L-1)
        t = torch.arange(1, tokens.shape[1], device=device)[None]  # (1, L-1) target positions
        diverge = torch.tensor([max(seqs[j].diverge, 1) for j in batch], device=device)[:, None]
        ll = (token_logp * ((t >= diverge) & (t < lengths[:, None]))).sum(1)  # (B,)
        real = (torch.arange(tokens.shape[1], device=device)[None] < lengths[:, None]).float()  # (B, L)
        mean = (hidden * real[..., None]).sum(1) / lengths[:, None]  # (B, D)
        for b, j in enumerate(batch):
            out[j] = (float(ll[b]), mean[b].cpu().numpy().astype(np.float64))
    return out


# --------------------------------------------------------------------------- per-record planning


@dataclass
class _Site:
    """One VCF record being scored: FASTA contig, 0-based start, alleles and what each method found."""

    record: object
    contig: str | None = None
    start: int = -1
    ref: str = ""
    alts: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per ALT: snv/mnv/indel or the reason it cannot be scored
    reason: str | None = None  # why the whole record cannot be scored
    values: dict[str, list[float | None]] = field(default_factory=dict)  # INFO key -> per-ALT values
    why: list[str | None] = field(default_factory=list)  # per ALT: first method-level reason

    def fail(self, allele: int, reason: str) -> None:
        """Note why a method left ``allele`` without a value; 'not_snv' (llr's) yields to any other
        method's reason, which says more about an allele that method could have scored."""
        if self.why[allele] in (None, NOT_SNV):
            self.why[allele] = reason

    def set(self, key: str, allele: int, value: float) -> None:
        if np.isfinite(value):
            self.values.setdefault(key, [None] * len(self.alts))[allele] = float(value)


class _Scorer:
    """Everything one run needs: model, reference, settings; turns chunks of records into sites."""

    def __init__(self, opts: ScoreVariantsOptions, model, reference: Reference, device, tiling, window):
        self.opts, self.model, self.reference, self.device = opts, model, reference, device
        self.tiling, self.window = tiling, window
        self.mapper = vcf.ContigMapper(reference.lengths)
        self.keys = info_keys(opts.info_prefix)
        self.passes = 0

    # -- planning

    def plan(self, record) -> _Site:
        alts = list(record.alts or ())
        site = _Site(record, ref=(record.ref or "").upper(), alts=alts, why=[None] * len(alts))
        site.kinds = [vcf.allele_kind(site.ref, alt) for alt in alts]
        if not alts:
            site.reason = vcf.NO_ALT
            return site
        site.contig, site.start = self.mapper(record.chrom), record.start
        if site.contig is None:
            site.reason = CONTIG_MISSING
        elif site.start < 0 or site.start + len(site.ref) > self.reference.length(site.contig):
            site.reason = OUT_OF_RANGE
        elif self._ref_differs(site):
            self._mismatch(site, record)
        return site

    def _ref_differs(self, site: _Site) -> bool:
        if not site.ref or not set(site.ref) <= set(_BASE_ID):
            return False  # not comparable; such alleles are 'unsupported_allele'
        found = self.reference.ids(site.contig, site.start, site.start + len(site.ref))
        return bool(np.any(found != np.array([_BASE_ID[b] for b in site.ref])))

    def _mismatch(self, site: _Site, record) -> None:
        if self.opts.on_ref_mismatch == "error":
            found = CharTokenizer().decode(self.reference.ids(site.contig, site.start, site.start + len(site.ref)))
            raise RefMismatchError(
                f"{record.chrom}:{record.pos}: REF {site.ref} does not match the reference ({found}) "
                f"in {self.opts.fasta} (--on-ref-mismatch skip passes such records through)"
            )
        site.reason = REF_MISMATCH

    def n_heavy(self, contig: str, left: int, right: int, skip: int) -> bool:
        """More N than allowed in [left, right) (0-based half-open), ``skip`` variant bases not counted."""
        bases = right - left - skip
        return bases > 0 and self.reference.n_count(contig, left, right) > self.opts.max_n_frac * bases

    # -- methods

    def score(self, records: list) -> list[_Site]:
        sites = [self.plan(r) for r in records]
        live = [s for s in sites if s.reason is None]
        if "llr" in self.opts.methods:
            self._llr(live)
        if "delta-ll" in self.opts.methods or "embedding" in self.opts.methods:
            self._window_methods(live)
        return sites

    def _llr(self, sites: list[_Site]) -> None:
        queries, owners = [], []
        for site in sites:
            snvs = [a for a, kind in enumerate(site.kinds) if kind == vcf.SNV]
            for a, kind in enumerate(site.kinds):
                if kind in (vcf.MNV, vcf.INDEL):
                    site.fail(a, NOT_SNV)
            if snvs and self._llr_context_ok(site, snvs):
                queries.append(SnvQuery(site.contig, site.start, site.ref, [site.alts[a].upper() for a in snvs]))
                owners.append((site, snvs))
        results, passes = score_llr_shared(
            self.model, self.reference, queries, self.tiling, self.device, self.opts.precision, self.opts.batch_size
        )
        self.passes += passes
        for (site, snvs), result in zip(owners, results):
            for a, fwd, rev, mean in zip(snvs, result.forward, result.reverse, result.mean):
                site.set(self.keys["llr_fwd"], a, fwd)
                site.set(self.keys["llr_rev"], a, rev)
                site.set(self.keys["llr"], a, mean)

    def _llr_context_ok(self, site: _Site, alleles: list[int]) -> bool:
        left, right = self.tiling.context_span(site.start, self.reference.length(site.contig))
        reason = None
        if right - left <= 1:
            reason = NO_CONTEXT
        elif self.n_heavy(site.contig, left, right, 1):
            reason = N_IN_CONTEXT
        for a in alleles:
            if reason:
                site.fail(a, reason)
        return reason is None

    def _window_methods(self, sites: list[_Site]) -> None:
        # A slice of sites at a time: the windows of a whole chunk (up to CHUNK_MAX_RECORDS) could
        # need gigabytes of ids, a slice needs a few megabytes.
        for start in range(0, len(sites), WINDOW_SITES_PER_SLICE):
            self._window_slice(sites[start : start + WINDOW_SITES_PER_SLICE])

    def _window_slice(self, sites: list[_Site]) -> None:
        seqs: dict[tuple, tuple[_Seq, _Seq]] = {}  # one REF window per site, shared by its ALT alleles
        wanted: list[tuple[_Site, int, tuple, tuple]] = []  # (site, allele, ref key, alt key)
        for site in sites:
            for a in self._window_alleles(site):
                ref_key = (site.contig, site.start, site.ref)
                alt_key = (*ref_key, site.alts[a].upper())
                for key, allele in ((ref_key, site.ref), (alt_key, alt_key[-1])):
                    if key not in seqs:
                        seqs[key] = self._window_pair(site, allele)
                wanted.append((site, a, ref_key, alt_key))
        flat = [s for pair in seqs.values() for s in pair]
        stats = _sequence_stats(self.model, flat, self.device, self.opts.precision, self.opts.batch_size)
        self.passes += len(flat)
        by_key = {key: (stats[2 * i], stats[2 * i + 1]) for i, key in enumerate(seqs)}
        for site, a, ref_key, alt_key in wanted:
            self._set_window_values(site, a, by_key[ref_key], by_key[alt_key])

    def _window_alleles(self, site: _Site) -> list[int]:
        length = self.reference.length(site.contig)
        left, right = self.window.flanks(site.start, len(site.ref), length)
        alleles = []
        for a, kind in enumerate(site.kinds):
            if kind not in _SCORABLE:
                continue
            if len(site.ref) > self.window.length or right - left - len(site.ref) + len(site.alts[a]) > self.l_max:
                site.fail(a, TOO_LONG)
            elif right - left == len(site.ref):  # the contig is the REF allele: no flank at all
                site.fail(a, NO_CONTEXT)
            elif self.n_heavy(site.contig, left, right, len(site.ref)):
                site.fail(a, N_IN_CONTEXT)
            else:
                alleles.append(a)
        return alleles

    @property
    def l_max(self) -> int:
        return self.model.l_max

    def _window_pair(self, site: _Site, allele: str) -> tuple[_Seq, _Seq]:
        """The window with ``allele`` in place of REF: (forward, reverse complement) sequences."""
        length = self.reference.length(site.contig)
        left, right = self.window.flanks(site.start, len(site.ref), length)
        end = site.start + len(site.ref)
        left_ids, right_ids = (
            self.reference.ids(site.contig, left, site.start),
            self.reference.ids(site.contig, end, right),
        )
        ids = np.concatenate([left_ids, [_BASE_ID[b] for b in allele], right_ids]).astype(np.int64)  # (L,)
        return _Seq(ids, len(left_ids)), _Seq(reverse_complement_ids(ids), len(right_ids))

    def _set_window_values(self, site: _Site, a: int, ref, alt) -> None:
        (ref_f, ref_r), (alt_f, alt_r) = ref, alt
        if "delta-ll" in self.opts.methods:
            site.set(self.keys["dll"], a, ((alt_f[0] - ref_f[0]) + (alt_r[0] - ref_r[0])) / 2)
        if "embedding" in self.opts.methods:
            ref_vec, alt_vec = (ref_f[1] + ref_r[1]) / 2, (alt_f[1] + alt_r[1]) / 2  # (D,)
            norms = np.linalg.norm(ref_vec) * np.linalg.norm(alt_vec)
            site.set(self.keys["emb_cos"], a, 1.0 - float(ref_vec @ alt_vec) / norms if norms > 0 else 0.0)
            site.set(self.keys["emb_l2"], a, float(np.linalg.norm(ref_vec - alt_vec)))


# --------------------------------------------------------------------------- INFO fields


def info_keys(prefix: str) -> dict[str, str]:
    """Short name -> INFO key with ``prefix``."""
    names = {"llr": "LLR", "llr_fwd": "LLR_FWD", "llr_rev": "LLR_REV", "dll": "DLL"}
    names.update(emb_cos="EMB_COS", emb_l2="EMB_L2", skip="SKIP")
    return {short: prefix + name for short, name in names.items()}


def info_fields(
    opts: ScoreVariantsOptions, label: str, tiling: LlrTiling, window: CentredWindow
) -> list[vcf.InfoField]:
    """The INFO header lines for the requested methods (each names method, model, context, strands)."""
    keys, fields = info_keys(opts.info_prefix), []
    span = f"{tiling.context}-{tiling.pass_length} bp (genome-fixed windows, stride {tiling.stride})"
    llr = f"Site log-likelihood ratio log P(alt) - log P(ref) by {label}"
    if "llr" in opts.methods:
        fields += [
            vcf.InfoField(keys["llr"], "A", "Float", f"{llr}: mean of both strands (one if the other has no context)"),
            vcf.InfoField(keys["llr_fwd"], "A", "Float", f"{llr}: forward strand, left context {span}"),
            vcf.InfoField(keys["llr_rev"], "A", "Float", f"{llr}: reverse-complement strand, right context {span}"),
        ]
    centred = f"{window.length} bp window centred on the variant, mean of both strands, by {label}"
    if "delta-ll" in opts.methods:
        text = f"Window log-likelihood with ALT minus with REF (delta-ll), {centred}"
        fields.append(vcf.InfoField(keys["dll"], "A", "Float", text))
    if "embedding" in opts.methods:
        fields += [
            vcf.InfoField(keys["emb_cos"], "A", "Float", f"Cosine distance of REF and ALT mean embeddings, {centred}"),
            vcf.InfoField(keys["emb_l2"], "A", "Float", f"L2 distance of REF and ALT mean embeddings, {centred}"),
        ]
    reasons = "|".join(_ALL_REASONS)
    fields.append(vcf.InfoField(keys["skip"], "1", "String", f"Why genomelm could not score this record ({reasons})"))
    return fields


_ALL_REASONS = (
    CONTIG_MISSING,
    OUT_OF_RANGE,
    REF_MISMATCH,
    vcf.SYMBOLIC,
    vcf.BREAKEND,
    vcf.SPANNING_DELETION,
    vcf.NO_ALT,
    vcf.UNSUPPORTED,
    NOT_SNV,
    N_IN_CONTEXT,
    TOO_LONG,
    NO_CONTEXT,
)


def _score_columns(opts: ScoreVariantsOptions) -> list[str]:
    """Short names of the per-allele values, in the order of the TSV columns."""
    columns = []
    if "llr" in opts.methods:
        columns += ["llr_fwd", "llr_rev", "llr"]
    if "delta-ll" in opts.methods:
        columns.append("dll")
    if "embedding" in opts.methods:
        columns += ["emb_cos", "emb_l2"]
    return columns


# --------------------------------------------------------------------------- the command


def run(opts: ScoreVariantsOptions) -> ScoreVariantsSummary:
    _check_options(opts)
    set_threads(opts.threads)
    device = select_device(opts.device)
    regions = _regions(opts.regions)
    started = time.perf_counter()
    summary = ScoreVariantsSummary(opts.output)
    with ExitStack() as stack:
        fasta = stack.enter_context(_open_fasta(opts.fasta))
        reader = stack.enter_context(vcf.VariantReader(opts.input))
        model = load_inference_model(opts.model, device, opts.conv_backend, opts.trust_checkpoint)
        tiling, window = llr_tiling(opts, model.l_max), centred_window(opts, model.l_max)
        scorer = _Scorer(opts, model, Reference(fasta), device, tiling, window)
        rescoring = _prepare_header(reader, opts, model_label(opts.model, model), tiling, window)
        writer = stack.enter_context(vcf.VariantWriter(opts.output, reader, index=opts.index))
        tsv = stack.enter_context(_tsv_writer(opts))
        clear = list(scorer.keys.values()) if rescoring else []
        _score_all(scorer, reader.records(regions), writer, tsv, summary, clear)
    summary.forward_passes = scorer.passes
    summary.seconds = time.perf_counter() - started
    _report(summary)
    return summary


def _check_options(opts: ScoreVariantsOptions) -> None:
    methods = list(dict.fromkeys(opts.methods or ["llr"]))  # de-duplicated, order kept
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {unknown[0]!r}")
    opts.methods = methods
    if opts.on_ref_mismatch not in MISMATCH_POLICIES:
        raise UsageError(f"--on-ref-mismatch must be skip or error, got {opts.on_ref_mismatch!r}")
    if opts.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {opts.batch_size}")
    if not 0 <= opts.max_n_frac <= 1:
        raise UsageError(f"--max-n-frac must be between 0 and 1, got {opts.max_n_frac}")
    vcf.check_info_prefix(opts.info_prefix)
    _check_paths(opts)


def _check_paths(opts: ScoreVariantsOptions) -> None:
    vcf.output_format(opts.output)
    if opts.index and vcf.output_format(opts.output) == "vcf":
        raise UsageError("--index needs a bgzipped VCF (.vcf.gz) or BCF (.bcf) output")
    refuse_overwriting_inputs({"--output": opts.output, "--tsv": opts.tsv}, [opts.input, opts.fasta, opts.model])
    if opts.tsv is not None and (opts.tsv == "-" or _same_file(opts.tsv, opts.output)):
        raise UsageError("--tsv needs a file path of its own (not '-' nor the VCF output)")
    vcf.check_writable(opts.output)
    if opts.tsv is not None:
        vcf.check_writable(opts.tsv, "--tsv")


def model_window(l_max: int) -> int:
    """Tokens per pass used by default: the largest power of two <= l_max (a faster FFT size;
    e.g. 32768 for the 32k models, whose l_max is 32770)."""
    return 1 << (l_max.bit_length() - 1)


def llr_tiling(opts: ScoreVariantsOptions, l_max: int) -> LlrTiling:
    """--context / --stride with defaults filling the model window; a pass longer than l_max -> UsageError."""
    full = model_window(l_max)
    context, stride = opts.context, opts.stride
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


def centred_window(opts: ScoreVariantsOptions, l_max: int) -> CentredWindow:
    """--window, by default half the model window (room for insertions: an ALT window is the REF
    window with ALT in place of REF) capped at 4096; an ALT window longer than l_max is 'too_long'."""
    length = opts.window if opts.window is not None else min(model_window(l_max) // 2, DEFAULT_WINDOW_CAP)
    if length < 2:
        raise UsageError(f"--window must be >= 2, got {length}")
    if length > l_max:
        raise UsageError(f"--window {length} is longer than the model allows ({l_max})")
    return CentredWindow(length)


def _regions(specs: list[str] | None):
    if not specs:
        return None
    return [region for spec in specs for region in parse_regions(spec)]


def _open_fasta(path: str) -> FastaSource:
    fasta = FastaSource(path)
    if not fasta.indexed:
        fasta.close()
        raise InputError(
            f"{path}: score-variants needs random access to the reference, and this FASTA cannot be indexed "
            "(plain gzip, or lines of unequal length): decompress it, or recompress it with `bgzip`"
        )
    return fasta


def _prepare_header(reader, opts, label: str, tiling: LlrTiling, window: CentredWindow) -> bool:
    rescoring = reader.add_info(info_fields(opts, label, tiling, window))
    settings = (
        f"model={label};methods={','.join(opts.methods)};context={tiling.context};stride={tiling.stride};"
        f"window={window.length};precision={opts.precision};strands=both"
    )
    reader.add_meta("genomelm_scoreVariantsVersion", __version__)
    reader.add_meta("genomelm_scoreVariantsSettings", settings)
    return rescoring


def _tsv_writer(opts: ScoreVariantsOptions):
    if opts.tsv is None:
        return nullcontext(None)
    names = info_keys("")
    columns = ["chrom", "pos", "id", "ref", "alt"] + [names[c].lower() for c in _score_columns(opts)] + ["skip"]
    return vcf.TsvWriter(opts.tsv, columns)


def _chunks(records: Iterator, stride: int, min_blocks: int) -> Iterator[list]:
    """Records in lists that end at llr block boundaries (so a block's pass is not run twice for
    sorted input) once they span ``min_blocks`` blocks, and never hold more than CHUNK_MAX_RECORDS."""
    chunk: list = []
    blocks: set = set()
    for record in records:
        block = (record.chrom, record.start // stride)
        if chunk and (len(chunk) >= CHUNK_MAX_RECORDS or (len(blocks) >= min_blocks and block not in blocks)):
            yield chunk
            chunk, blocks = [], set()
        chunk.append(record)
        blocks.add(block)
    if chunk:
        yield chunk


def _score_all(scorer: _Scorer, records, writer, tsv, summary: ScoreVariantsSummary, clear: list[str]) -> None:
    columns = _score_columns(scorer.opts)
    with progress("variant") as bar:
        task = bar.add_task("score-variants", total=None)
        for chunk in _chunks(records, scorer.tiling.stride, scorer.opts.batch_size):
            for site in scorer.score(chunk):
                _finish(scorer, site, summary, clear)
                writer.write(site.record)
                if tsv is not None:
                    _tsv_rows(tsv, site, scorer.keys, columns)
            bar.advance(task, len(chunk))


def _finish(scorer: _Scorer, site: _Site, summary: ScoreVariantsSummary, clear: list[str]) -> None:
    """Count the site, decide its SKIP reason, and write its values into the record's INFO."""
    summary.records += 1
    scored = [any(v[a] is not None for v in site.values.values()) for a in range(len(site.alts))]
    unscored = [_allele_reason(site, a) for a in range(len(site.alts)) if not scored[a]]
    skip = None
    if not any(scored):
        skip = site.reason or (unscored[0] if unscored else vcf.NO_ALT)
        summary.skipped[skip] += 1
        if scorer.opts.strict:
            record = site.record
            raise InputError(f"{record.chrom}:{record.pos}: not scored ({skip}); --strict makes this an error")
    else:
        summary.scored += 1
        summary.alleles_scored += sum(scored)
        summary.alleles_unscored.update(unscored)
    values = {scorer.keys["skip"]: skip}
    values.update({key: tuple(v) for key, v in site.values.items()})
    summary.replaced += vcf.set_info(site.record, values, clear, prefix=scorer.opts.info_prefix)


def _allele_reason(site: _Site, a: int) -> str:
    if site.reason is not None:
        return site.reason
    if site.kinds[a] not in _SCORABLE:
        return site.kinds[a]
    return site.why[a] or NOT_SNV


def _tsv_rows(tsv, site: _Site, keys: dict[str, str], columns: list[str]) -> None:
    record = site.record
    skip = record.info.get(keys["skip"])
    alts = site.alts or ["."]
    for a, alt in enumerate(alts):
        values = [site.values.get(keys[c], [None] * len(alts))[a] for c in columns]
        reason = skip or (None if any(v is not None for v in values) else _allele_reason(site, a))
        tsv.row([record.chrom, record.pos, record.id or ".", record.ref, alt, *values, reason])


def _report(summary: ScoreVariantsSummary) -> None:
    skipped = ", ".join(f"{reason} {n}" for reason, n in summary.skipped.most_common()) or "none"
    log.info(
        "scored %d of %d records (%d alleles) with %d forward passes in %.1f s (%.0f variants/s); skipped: %s -> %s",
        summary.scored,
        summary.records,
        summary.alleles_scored,
        summary.forward_passes,
        summary.seconds,
        summary.variants_per_second,
        skipped,
        summary.output,
    )
    if summary.replaced:
        log.info("replaced %d old INFO value(s) with the prefix of the new ones", summary.replaced)
    if summary.alleles_unscored:
        other = ", ".join(f"{reason} {n}" for reason, n in summary.alleles_unscored.most_common())
        log.info("ALT alleles without a value in scored records: %s", other)
