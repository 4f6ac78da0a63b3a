"""SNV scores looked up in a score-genome store instead of computed: no model, CPU only.

``PrecomputedScores(outdir)`` reads the store's tracks: the llr of an SNV is the ``llr_<ALT>`` track
(mean of both strands), its forward-strand llr the ``llr_fwd_<ALT>`` track, and its reverse-strand
llr follows as 2 * mean - forward (a contig's first base has no forward value: there the mean is the
reverse one; its last base has no reverse value). Queries are read a cluster of nearby positions at
a time, one read per track per cluster, which is what makes lookups fast.

``load_calibration(outdir)`` gives the store's CalibrationTable (rank fractions, PHRED).
"""

from __future__ import annotations

import os

import numpy as np

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import genome_store as store
from genomelm.formats.tracks import TrackReader
from genomelm.variants import calibration
from genomelm.variants.llr import LlrResult, LlrTiling, SnvQuery
from genomelm.variants.reference import Reference

CLUSTER_GAP = 4096  # queries closer than this share one read per track
CLUSTER_SPAN = 1 << 20  # ... as long as the read stays under this many positions


class PrecomputedScores:
    """The llr tracks of a finished store, read per cluster of queries."""

    def __init__(self, outdir: str):
        self.outdir = outdir
        self.manifest = store.read_manifest(outdir)
        settings = self.manifest["settings"]
        self.tiling = LlrTiling(int(settings["context"]), int(settings["stride"]))
        self.max_n_frac = float(settings["max_n_frac"])
        self.label = f"{self.manifest['model']['name']} (precomputed in {os.path.basename(os.path.normpath(outdir))})"
        self._readers: dict[str, TrackReader] = {}

    # -- identity checks

    def check_genome(self, lengths: dict[str, int], fasta: str) -> None:
        """InputError unless ``lengths`` (the FASTA's contigs, in order) are the store's genome."""
        check_store_genome(self.manifest, self.outdir, lengths, fasta)

    def check_settings(self, context: int | None, stride: int | None) -> None:
        """UsageError when explicit llr tiling settings differ from the store's (its values would not be
        theirs). --max-n-frac may differ: a stricter one skips more (n_in_context), a looser one finds
        no stored value where the store's was stricter (not_in_precomputed)."""
        given = {"--context": (context, self.tiling.context), "--stride": (stride, self.tiling.stride)}
        for flag, (value, stored) in given.items():
            if value is not None and value != stored:
                raise UsageError(f"{flag} {value}: {self.outdir} was computed with {flag} {stored}")

    # -- lookups

    def llr(self, reference: Reference, queries: list[SnvQuery]) -> list[LlrResult]:
        """Per-query llr (NaN where the store has no value), in the order of ``queries``."""
        results: list[LlrResult | None] = [None] * len(queries)
        for contig, members in _by_contig(queries).items():
            for cluster in _clusters(members, queries):
                self._cluster(reference, contig, cluster, queries, results)
        return results

    def _cluster(self, reference: Reference, contig: str, members: list[int], queries, results) -> None:
        lo, hi = queries[members[0]].pos, queries[members[-1]].pos + 1
        last = reference.length(contig) - 1
        pos = np.array([queries[i].pos for i in members for _ in queries[i].alts])  # (K,) one per ALT
        alts = [a for i in members for a in queries[i].alts]
        mean, forward = np.empty(len(alts)), np.empty(len(alts))
        for base in sorted(set(alts)):
            rows = np.array([a == base for a in alts])
            mean[rows] = self._values(f"llr_{base}", contig, lo, hi)[pos[rows] - lo]
            forward[rows] = self._values(f"llr_fwd_{base}", contig, lo, hi)[pos[rows] - lo]
        forward, reverse = _strands(mean, forward, pos == last)
        no_error = np.zeros(len(alts), dtype=bool)
        start = 0
        for i in members:
            end = start + len(queries[i].alts)
            results[i] = LlrResult(forward[start:end], reverse[start:end], no_error[start:end])
            start = end

    def _values(self, track: str, contig: str, start: int, end: int) -> np.ndarray:
        if track not in self._readers:
            self._readers[track] = TrackReader(store.track_file(self.outdir, track))
        return self._readers[track].values(contig, start, end)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def check_store_genome(manifest: dict, outdir: str, lengths: dict[str, int], fasta: str) -> None:
    """InputError unless the FASTA's contigs (names and lengths) are those the store was made from."""
    expected = {name: length for name, length in manifest["genome"]["contigs"]}
    if expected == lengths:
        return
    for name, length in expected.items():
        if name not in lengths:
            raise InputError(f"{fasta} is not the genome of {outdir}: it has no contig {name}")
        if lengths[name] != length:
            raise InputError(
                f"{fasta} is not the genome of {outdir}: contig {name} has length {lengths[name]:,} "
                f"there and {length:,} in the store"
            )
    extra = next(name for name in lengths if name not in expected)
    raise InputError(f"{fasta} is not the genome of {outdir}: contig {extra} is not in the store")


def _strands(mean: np.ndarray, forward: np.ndarray, last_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and reverse llr from the stored mean and forward values (see the module docstring)."""
    reverse = np.where(last_base, np.nan, np.where(np.isnan(forward), mean, 2.0 * mean - forward))
    missing = np.isnan(mean)
    return np.where(missing, np.nan, forward), np.where(missing, np.nan, reverse)


def _by_contig(queries: list[SnvQuery]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, query in enumerate(queries):
        groups.setdefault(query.contig, []).append(i)
    return groups


def _clusters(members: list[int], queries: list[SnvQuery]) -> list[list[int]]:
    """Query indices grouped by position: gaps under CLUSTER_GAP, spans under CLUSTER_SPAN."""
    ordered = sorted(members, key=lambda i: queries[i].pos)
    clusters: list[list[int]] = []
    for i in ordered:
        pos = queries[i].pos
        if clusters:
            first, previous = queries[clusters[-1][0]].pos, queries[clusters[-1][-1]].pos
            if pos - previous < CLUSTER_GAP and pos - first < CLUSTER_SPAN:
                clusters[-1].append(i)
                continue
        clusters.append([i])
    return clusters


# --------------------------------------------------------------------------- calibration


def load_calibration(outdir: str) -> tuple[calibration.CalibrationTable, dict]:
    """The calibration table of a finished store, and its manifest."""
    manifest = store.read_manifest(outdir)
    path = os.path.join(outdir, manifest.get("calibration", store.CALIBRATION))
    arrays = store.load_arrays(path, "calibration table")
    expected = (calibration.LLR_LOW, calibration.LLR_HIGH, calibration.BIN_WIDTH)
    found = tuple(float(arrays[k]) for k in ("llr_low", "llr_high", "bin_width") if k in arrays)
    if found != expected:
        raise FormatError(f"{path}: calibration bins {found}, this genomelm reads {expected}")
    return calibration.CalibrationTable(arrays["counts"]), manifest


def calibrate_sites(engine, sites) -> None:
    """The 'calibration' method: rank each ALT allele's llr in ``engine.calibration``, genome-wide
    (llr_pct, llr_phred) and within its trinucleotide context (llr_pct_ctx, llr_phred_ctx)."""
    if engine.calibration is None:
        raise UsageError("the calibration scores need --calibration OUTDIR (a score-genome store)")
    table: calibration.CalibrationTable = engine.calibration
    for site in sites:
        llr = site.values.get("llr")
        if llr is None:
            continue
        values = np.array([np.nan if v is None else v for v in llr], dtype=np.float64)  # (n_alts,)
        context = np.full(len(values), _context(engine.reference, site.contig, site.start))
        for suffix, rows in (("", None), ("_ctx", context)):
            if rows is not None and context[0] < 0:
                continue  # a contig end or a non-ACGT neighbour: no trinucleotide to rank within
            fraction = table.rank_fraction(values, rows)
            for a in np.flatnonzero(np.isfinite(values) & np.isfinite(fraction)):
                site.set(f"llr_pct{suffix}", int(a), fraction[a])
                site.set(
                    f"llr_phred{suffix}",
                    int(a),
                    table.phred(fraction[a : a + 1], rows if rows is None else rows[a : a + 1])[0],
                )


def _context(reference: Reference, contig: str, pos: int) -> int:
    """Trinucleotide context index of 0-based ``pos`` (-1 at a contig end or with a non-ACGT base)."""
    length = reference.length(contig)
    if pos == 0 or pos + 1 >= length:
        return -1
    return int(calibration.context_index(reference.ids(contig, pos - 1, pos + 2))[0])
