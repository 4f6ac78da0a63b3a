"""SNV scores looked up in a score-genome store instead of computed: no model, CPU only.

``PrecomputedScores(outdir)`` reads the store's lookup arrays (genomelm.formats.lookup_store), one
memory-mapped float32 row per position: the llr of an SNV (mean of both strands) and its forward-strand
llr; its reverse-strand llr follows as 2 * mean - forward (a contig's first base has no forward value:
there the mean is the reverse one; its last base has no reverse value). A query reads its own row and
nothing else.

``load_calibration(outdir)`` gives the store's CalibrationTable (rank fractions, PHRED).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import genome_store as store
from genomelm.formats.lookup_store import LookupArray, alt_column, open_lookup
from genomelm.variants import calibration
from genomelm.variants.llr import LlrResult, LlrTiling, SnvQuery
from genomelm.variants.reference import Reference

_CODE = {"A": 0, "C": 1, "G": 2, "T": 3}


class PrecomputedScores:
    """The lookup arrays of a finished store, one memory map per contig."""

    def __init__(self, outdir: str):
        self.outdir = outdir
        self.manifest = store.read_manifest(outdir)
        settings = self.manifest["settings"]
        self.tiling = LlrTiling(int(settings["context"]), int(settings["stride"]))
        self.max_n_frac = float(settings["max_n_frac"])
        self.label = f"{self.manifest['model']['name']} (precomputed in {os.path.basename(os.path.normpath(outdir))})"
        track_contigs = self.manifest["genome"]["track_contigs"]
        self._contigs = {name: (i, int(length)) for i, (name, length) in enumerate(track_contigs)}
        self._spans = self.manifest["genome"].get("lookup_spans", {})  # contigs covered in part (lookup_store)
        self._arrays: dict[str, LookupArray | None] = {}

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

    def array(self, contig: str) -> LookupArray | None:
        """The lookup rows of ``contig``; None for a contig the store did not score."""
        if contig not in self._arrays:
            index = self._contigs.get(contig)
            spans = self._spans.get(contig)
            self._arrays[contig] = None if index is None else open_lookup(self.outdir, *index, spans)
        return self._arrays[contig]

    def strands(self, contig: str, pos: np.ndarray, ref: np.ndarray, alt: np.ndarray, last: int):
        """Forward and reverse llr (float64, NaN = none) of SNVs at 0-based ``pos`` of ``contig`` with
        base codes ``ref`` -> ``alt`` (0..3 = A, C, G, T; arrays of one length); ``last``: the contig's
        last position (no reverse strand there)."""
        array = self.array(contig)
        if array is None:
            nothing = np.full(len(pos), np.nan)
            return nothing, nothing
        rows = array.take(pos)  # (K, 6) float32: one read per SNV
        column = alt_column(ref, alt)
        picked = np.arange(len(pos))
        mean = rows[picked, column].astype(np.float64)
        forward = rows[picked, column + 3].astype(np.float64)
        return _strands(mean, forward, pos == last)

    def llr(self, reference: Reference, queries: list[SnvQuery]) -> list[LlrResult]:
        """Per-query llr (NaN where the store has no value), in the order of ``queries``."""
        results: list[LlrResult | None] = [None] * len(queries)
        for contig, members in _by_contig(queries).items():
            counts = [len(queries[i].alts) for i in members]
            pos = np.repeat([queries[i].pos for i in members], counts)  # (K,) one per ALT
            ref = np.repeat([_CODE[queries[i].ref.upper()] for i in members], counts)
            alt = np.array([_CODE[a] for i in members for a in queries[i].alts], dtype=np.int64)
            forward, reverse = self.strands(contig, pos, ref, alt, reference.length(contig) - 1)
            ends = np.cumsum(counts)
            for i, end, count in zip(members, ends.tolist(), counts):
                rows = slice(end - count, end)
                results[i] = LlrResult(forward[rows], reverse[rows], np.zeros(count, dtype=bool))
        return results

    def close(self) -> None:
        self._arrays.clear()


@dataclass
class Stores:
    """The score-genome stores of one scoring run: values to look up, a calibration table, or both."""

    precomputed: PrecomputedScores | None = None
    calibration: calibration.CalibrationTable | None = None
    manifest: dict | None = None  # of the store opened last (model identity, for checks and labels)
    path: str | None = None  # the store errors name: the precomputed one when both are given


def open_stores(
    precomputed: str | None, calibrated_by: str | None, lengths: dict[str, int], fasta: str, context=None, stride=None
) -> Stores:
    """Open and check the stores of ``precomputed`` and ``calibrated_by`` (score-genome OUTDIRs) against the
    FASTA's contigs ``lengths`` and the explicit llr tiling settings (``context``/``stride``, None = not given)."""
    stores = Stores()
    if precomputed is not None:
        stores.precomputed = PrecomputedScores(precomputed)
        stores.precomputed.check_settings(context, stride)
        stores.precomputed.check_genome(lengths, fasta)
        stores.manifest, stores.path = stores.precomputed.manifest, precomputed
    if calibrated_by is not None:
        stores.calibration, stores.manifest = load_calibration(calibrated_by)
        check_store_genome(stores.manifest, calibrated_by, lengths, fasta)
        stores.path = stores.path or calibrated_by
    return stores


def check_store_model(stores: Stores, sha256: str, label: str) -> None:
    """UsageError unless the model (its weights' SHA-256) is the one that made the stores' values."""
    if stores.manifest is not None and sha256 != stores.manifest["model"]["sha256"]:
        raise UsageError(
            f"--model {label} is not the model of {stores.path} ({stores.manifest['model']['name']}): "
            "calibration and stored values only mean something for the model that made them"
        )


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
