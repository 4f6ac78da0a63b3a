"""The variant scorer: planned records -> scores of every requested method, chunk by chunk."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from genomelm.formats import vcf
from genomelm.runtime import GPU_BATCH_SIZE, Staging, default_batch_size
from genomelm.variants.llr import LlrTiling, SnvQuery, llr_tiling, start_llr_shared
from genomelm.variants.methods import METHODS, WindowStats, check_methods
from genomelm.variants.planner import (
    N_IN_CONTEXT,
    NO_CONTEXT,
    NON_FINITE,
    NOT_IN_PRECOMPUTED,
    NOT_SNV,
    SCORABLE,
    TOO_LONG,
    Planner,
    Site,
)
from genomelm.variants.reference import Reference
from genomelm.variants.windows import AlleleWindows, CentredWindow, allele_windows, centred_window, window_stats

CHUNK_MAX_RECORDS = 65536  # records held at once (bounds memory whatever the VCF size)
WINDOW_SITES_PER_SLICE = 256  # window methods build their sequences for this many sites at a time
# Chunks whose passes are queued on the device while the host finishes (and the caller writes) an older
# one; 2 leaves the device work of two chunks to cover a chunk whose host work runs long (new FASTA tiles,
# the writer's flushes). The scores do not depend on it (the chunks and their batches are the same).
# H200, chrX 70 Mb, bf16, one run each (benchmarks/variant_pipeline.py, 2026-12-02): 1 -> 23.5 s, 2 -> 19.4 s,
# 3 -> 19.4 s end to end, but runs of one setting vary by as much (19.1-23.5 s): no clear gain over 1.
CHUNKS_IN_FLIGHT = 2


@dataclass
class ScoringSettings:
    """What the scores depend on besides model and reference (the --options of score-variants)."""

    methods: tuple[str, ...] | list[str] = ("llr",)
    context: int | None = None  # llr: least context (bases) on each strand; default half the model window
    stride: int | None = None  # llr: length of the blocks scored by one pass; default the rest of the window
    window: int | None = None  # delta-ll / embedding: centred REF window; default min(model window / 2, 4096)
    max_n_frac: float = 0.05  # skip a variant whose context has more N than this
    on_ref_mismatch: str = "skip"  # or 'error'
    batch_size: int | None = None  # sequences per model call; default runtime.default_batch_size
    precision: str = "fp32"


class VariantScorer:
    """Model + reference + settings; ``score(records)`` -> Sites holding per-ALT values by score name.

    ``precomputed`` (a PrecomputedScores): llr values are looked up in a score-genome store, and
    ``model`` may be None (llr is then the only method). ``calibration`` (a CalibrationTable): the
    'calibration' method ranks the llr values in it. ``in_flight``: chunks queued on the device while
    ``score_all`` finishes an older one (default CHUNKS_IN_FLIGHT; 0 = one chunk at a time).
    """

    def __init__(
        self,
        model,
        reference: Reference,
        settings: ScoringSettings,
        device: torch.device,
        source="",
        precomputed=None,
        calibration=None,
        in_flight: int | None = None,
    ):
        self.model, self.reference, self.settings, self.device = model, reference, settings, device
        self.precomputed, self.calibration = precomputed, calibration
        self.methods = check_methods(settings.methods)
        if precomputed is not None:
            self.tiling: LlrTiling = precomputed.tiling
        else:
            self.tiling = llr_tiling(settings.context, settings.stride, model.l_max)
        self.window: CentredWindow | None = None if model is None else centred_window(settings.window, model.l_max)
        if settings.batch_size is None:
            self.settings = settings = replace(settings, batch_size=self._default_batch_size())
        self.planner = Planner(reference, settings.max_n_frac, settings.on_ref_mismatch, source)
        self.passes = 0  # sequences run through the model so far
        self.in_flight = CHUNKS_IN_FLIGHT if in_flight is None else in_flight
        # Reused host buffers (start_llr): one per chunk in flight, plus one for the chunk being prepared.
        self._stages = [Staging(device.type == "cuda") for _ in range(self.in_flight + 1)]
        self._chunks_started = 0
        self._context_memo: tuple = (None, None)  # ((contig, block), reason) of the last llr context checked

    def _default_batch_size(self) -> int:
        """runtime.default_batch_size for the longest sequence this scorer runs through its model (llr passes,
        centred windows); without a model (values looked up), GPU_BATCH_SIZE."""
        if self.model is None:
            return GPU_BATCH_SIZE
        lengths = [self.tiling.pass_length] if "llr" in self.methods else []
        if any(METHODS[m].kind == "window" for m in self.methods):
            lengths.append(self.window.length)
        return default_batch_size(self.device, max(lengths, default=1))

    def score_all(self, records: Iterable) -> Iterator[tuple[list, list[Site]]]:
        """(chunk of records, their Sites) for every chunk of ``records``, in order. ``in_flight`` chunks
        ahead: chunk i's passes are queued on the device before chunk i - in_flight is finished and
        handed back (the caller writes it while the device runs the chunks after it)."""
        pending: deque = deque()  # (chunk, finish) of the chunks started and not yet handed back
        for chunk in chunks(records, self.tiling.stride, self.settings.batch_size):
            try:
                pending.append((chunk, self.start(chunk)))
            except Exception:  # an error of chunk i is raised after the chunks before it, as unpipelined
                yield from _finish_all(pending)
                raise
            if len(pending) > self.in_flight:
                chunk, finish = pending.popleft()
                yield chunk, finish()
        yield from _finish_all(pending)

    def score(self, records: list) -> list[Site]:
        return self.start(records)()

    def start(self, records: list) -> Callable[[], list[Site]]:
        """Plan ``records`` and queue their llr passes; the returned function finishes every method."""
        sites = [self.planner.plan(r) for r in records]
        live = [s for s in sites if s.reason is None]
        llr = self.start_llr(live) if "llr" in self.methods else None

        def finish() -> list[Site]:
            if llr is not None:
                llr()
            self._finish_methods(live)
            return sites

        return finish

    def _finish_methods(self, live: list[Site]) -> None:
        """Every method but llr (calibration ranks llr values: it comes after them)."""
        for name in self.methods:
            if METHODS[name].kind == "site" and name != "llr":
                METHODS[name].compute(self, live)
        window_methods = [METHODS[m] for m in self.methods if METHODS[m].kind == "window"]
        if window_methods:
            # A slice of sites at a time: the windows of a whole chunk (up to CHUNK_MAX_RECORDS) could
            # need gigabytes of ids, a slice needs a few megabytes.
            for start in range(0, len(live), WINDOW_SITES_PER_SLICE):
                self._window_slice(live[start : start + WINDOW_SITES_PER_SLICE], window_methods)

    # -- llr

    def score_llr(self, sites: list[Site]) -> None:
        self.start_llr(sites)()

    def start_llr(self, sites: list[Site]) -> Callable[[], None]:
        """Queue the llr passes of ``sites``; the returned function waits and sets their values."""
        queries, owners = [], []
        for site in sites:
            snvs = [a for a, kind in enumerate(site.kinds) if kind == vcf.SNV]
            for a, kind in enumerate(site.kinds):
                if kind in (vcf.MNV, vcf.INDEL):
                    site.fail(a, NOT_SNV)
            if snvs and self._llr_context_ok(site, snvs):
                queries.append(SnvQuery(site.contig, site.start, site.ref, [site.alts[a].upper() for a in snvs]))
                owners.append((site, snvs))
        wait = self._start_llr_results(queries)
        return lambda: self._set_llr(owners, *wait())

    def _set_llr(self, owners: list, results: list, passes: int) -> None:
        self.passes += passes
        for (site, snvs), result in zip(owners, results):
            # Python floats (tolist) rather than numpy scalars: the same values, a third of the host time.
            columns = (result.forward.tolist(), result.reverse.tolist(), result.mean.tolist())
            for a, fwd, rev, mean, bad in zip(snvs, *columns, result.non_finite.tolist()):
                if bad:  # never a score from a strand whose values are NaN/inf
                    site.fail(a, NON_FINITE)
                    continue
                if math.isnan(mean):  # context checked above: only a store without this position
                    site.fail(a, NOT_IN_PRECOMPUTED)
                    continue
                for name, value in (("llr_fwd", fwd), ("llr_rev", rev), ("llr", mean)):
                    if not math.isnan(value):  # NaN: that strand has no context
                        site.set(name, a, value)

    def _start_llr_results(self, queries: list[SnvQuery]) -> Callable[[], tuple[list, int]]:
        """Queued: (LlrResult per query, forward passes run), computed or looked up in the store."""
        if self.precomputed is not None:
            results = self.precomputed.llr(self.reference, queries)
            return lambda: (results, 0)
        s = self.settings
        # Round robin: the slot of chunk i was last used by chunk i - in_flight - 1, waited for by now.
        self._chunks_started += 1
        stage = self._stages[self._chunks_started % len(self._stages)]
        return start_llr_shared(
            self.model, self.reference, queries, self.tiling, self.device, s.precision, s.batch_size, stage
        )

    def _llr_context_ok(self, site: Site, alleles: list[int]) -> bool:
        reason = self._llr_context_reason(site.contig, self.tiling.block(site.start))
        for a in alleles:
            if reason:
                site.fail(a, reason)
        return reason is None

    def _llr_context_reason(self, contig: str, block: int) -> str | None:
        """no_context / n_in_context / None for the llr context of ``block``: the same for every site of
        the block, so worked out once per block (sorted input: consecutive sites share it)."""
        if self._context_memo[0] != (contig, block):
            left, right = self.tiling.context_span(block * self.tiling.stride, self.reference.length(contig))
            reason = None
            if right - left <= 1:
                reason = NO_CONTEXT
            elif self.planner.n_heavy(contig, left, right, 1):
                reason = N_IN_CONTEXT
            self._context_memo = ((contig, block), reason)
        return self._context_memo[1]

    # -- window methods (delta-ll, embedding)

    def _window_slice(self, sites: list[Site], methods) -> None:
        wanted = [(site, a, w) for site in sites for a, w in self._allele_windows(site)]
        unique = list(dict.fromkeys(seq for *_, w in wanted for seq in w.all()))  # REF windows shared by ALTs
        s = self.settings
        stats = window_stats(self.model, self.reference, unique, self.device, s.precision, s.batch_size)
        self.passes += len(unique)
        by_window = dict(zip(unique, stats))
        for site, a, windows in wanted:
            allele_stats = WindowStats(*(by_window[w] for w in windows.all()))
            for method in methods:
                for name, value in method.compute(allele_stats).items():
                    site.set(name, a, value)

    def _allele_windows(self, site: Site) -> list[tuple[int, AlleleWindows]]:
        length = self.reference.length(site.contig)
        left, right = self.window.flanks(site.start, len(site.ref), length)
        out = []
        for a, kind in enumerate(site.kinds):
            if kind not in SCORABLE:
                continue
            alt = site.alts[a].upper()
            windows = allele_windows(self.window, site.contig, length, site.start, site.ref, alt, self.model.l_max)
            if len(site.ref) > self.window.length or windows is None:
                site.fail(a, TOO_LONG)
            elif right - left == len(site.ref):  # the contig is the REF allele: no flank at all
                site.fail(a, NO_CONTEXT)
            elif self.planner.n_heavy(site.contig, *windows.span, len(site.ref)):
                site.fail(a, N_IN_CONTEXT)
            else:
                out.append((a, windows))
        return out


def _finish_all(pending: deque) -> Iterator[tuple[list, list[Site]]]:
    """Finish and hand back every started chunk, oldest first."""
    while pending:
        chunk, finish = pending.popleft()
        yield chunk, finish()


def chunks(records: Iterable, stride: int, min_blocks: int) -> Iterator[list]:
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
