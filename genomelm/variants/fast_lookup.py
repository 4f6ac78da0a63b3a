"""The batched path of `score-variants --precomputed`: SNV records looked up as numpy arrays.

The general engine (VariantScorer) plans, looks up and calibrates one record at a time; at tens of
thousands of records per second that per-record Python is the cost, not the lookup. Here a batch
of records becomes arrays (positions, REF and ALT codes, one entry per ALT allele), checked,
looked up and calibrated with a few numpy calls per contig. Every record this path does not fully
understand is handed back to the engine, so the values, their order and every SKIP reason are
those of the engine, byte for byte:

- records that are not plain SNVs (REF one base A/C/G/T, every ALT another such base), on contigs
  the FASTA lacks, out of range, whose REF is not the reference base (ref_is_n, ref_mismatch);
- records whose ALT alleles do not all share one outcome (some scored and some not, a strand with
  a value for one ALT and not another, a non-finite value): the engine sorts those out allele by allele.

Records come as the columns of the line htslib writes for them (``str(record).split("\\t", 8)``):
reading CHROM, POS, REF and ALT there costs less than pysam's attribute access, and that line is
what the caller splices the INFO text into. The INFO text of the values is built a group of
records at a time (same ALT count, same scores present) from one %-template.

``lookup_lines(scorer, fields, keys)`` -> ``LookedUpBatch``: per record, None (the engine's) or
the INFO text to add, its SKIP reason and ALT count.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from genomelm.formats import vcf
from genomelm.tokenizer import A_ID
from genomelm.variants import calibration
from genomelm.variants.planner import N_IN_CONTEXT, NO_CONTEXT, NOT_IN_PRECOMPUTED
from genomelm.variants.reference import TILE, Reference

_CODE = {"A": 0, "C": 1, "G": 2, "T": 3, "a": 0, "c": 1, "g": 2, "t": 3}


def _alt_table() -> dict[str, tuple[int, ...]]:
    """ALT columns of one to three single bases (either case) -> their codes: one dict lookup per record
    for the common plain SNVs (longer lists go through ``_alt_codes``)."""
    return {
        ",".join(bases): tuple(_CODE[b] for b in bases)
        for n in (1, 2, 3)
        for bases in itertools.product(_CODE, repeat=n)
    }


_ALT_CODES = _alt_table()


def _alt_codes(alt: str) -> tuple[int, ...] | None:
    """Codes of an ALT column of single bases; None when any allele is something else."""
    codes = tuple(_CODE.get(a, -1) for a in alt.split(","))
    return None if -1 in codes else codes


class LookedUpBatch:
    """The outcome of a batch, per record (index in the batch): ``info[i]`` is None for a record the
    engine must score, else the INFO text to add ('KEY=v,v;...', or '<prefix>SKIP=reason'), with
    ``skip[i]`` its SKIP reason (None: scored) and ``alleles[i]`` its ALT count."""

    def __init__(self, size: int):
        self.info: list[str | None] = [None] * size
        self.skip: list[str | None] = [None] * size
        self.alleles: list[int] = [0] * size
        self._outcomes: list[tuple[np.ndarray, _Outcome]] = []  # (batch index per record, outcome)

    @property
    def records(self) -> list[int]:
        """Indices of the records this path took (an outcome of its own), in order."""
        return [i for i, info in enumerate(self.info) if info is not None]

    def first_skipped(self) -> int | None:
        """Index of the first record this path skipped (a SKIP reason), None when there is none."""
        return next((i for i, skip in enumerate(self.skip) if skip is not None), None)

    def values(self, i: int) -> dict[str, tuple[float, ...]]:
        """Record ``i``'s values by score name (one per ALT, in ALT order); {} for a skipped record."""
        for members, outcome in self._outcomes:
            r = int(np.searchsorted(members, i))
            if r < len(members) and members[r] == i:
                return outcome.values(r)
        return {}


@dataclass
class _Snvs:
    """The plain-SNV records of a batch on one contig; ``pos``/``ref``: per record, ``alt``: per ALT."""

    members: np.ndarray  # (R,) index in the batch, increasing
    pos: np.ndarray  # (R,) 0-based
    ref: np.ndarray  # (R,) REF codes 0..3
    alt: np.ndarray  # (K,) ALT codes, record after record
    counts: np.ndarray  # (R,) ALT alleles per record


def lookup_lines(scorer, fields: list[list[str]], keys: dict[str, str]) -> LookedUpBatch:
    """The outcome of each record of a batch. ``fields``: per record (in order) the columns of its VCF
    line (CHROM, POS, ID, REF, ALT, ...); ``scorer``: a VariantScorer with ``precomputed`` (and
    ``calibration`` when asked for); ``keys``: score name (and 'skip') -> INFO key."""
    batch = LookedUpBatch(len(fields))
    for contig, snvs in _plain_snvs(fields, scorer.planner.mapper).items():
        _lookup_contig(scorer, contig, snvs, batch, keys)
    return batch


def _plain_snvs(fields: list[list[str]], mapper) -> dict[str, _Snvs]:
    """Plain-SNV records by FASTA contig (the one Python loop over records)."""
    contig_of = {name: mapper(name) for name in {f[0] for f in fields}}
    found: dict[str, list] = {}
    code_of, table = _CODE.get, _ALT_CODES
    for i, f in enumerate(fields):
        code = code_of(f[3])
        if code is None:
            continue
        codes = table[f[4]] if f[4] in table else _alt_codes(f[4])
        contig = contig_of[f[0]]
        if codes is not None and contig is not None and code not in codes:
            found.setdefault(contig, []).append((i, f[1], code, codes))
    return {contig: _snvs(rows) for contig, rows in found.items()}


def _snvs(rows: list[tuple[int, str, int, tuple[int, ...]]]) -> _Snvs:
    members, pos, ref, codes = zip(*rows)
    alt = np.fromiter(itertools.chain.from_iterable(codes), dtype=np.int64)
    return _Snvs(
        np.array(members),
        np.array(pos).astype(np.int64) - 1,
        np.array(ref),
        alt,
        np.fromiter(map(len, codes), np.int64),
    )


def _lookup_contig(scorer, contig: str, snvs: _Snvs, batch: LookedUpBatch, keys: dict[str, str]) -> None:
    reference: Reference = scorer.reference
    length = reference.length(contig)
    snvs = _subset(snvs, (snvs.pos >= 0) & (snvs.pos < length))
    ids = bases_at(reference, contig, np.stack([snvs.pos - 1, snvs.pos, snvs.pos + 1]), length)  # (3, R)
    matches = ids[1] == A_ID + snvs.ref  # the others (ref_is_n, ref_mismatch) are the engine's
    snvs, ids = _subset(snvs, matches), ids[:, matches]
    if not len(snvs.members):
        return
    reasons = _context_reasons(scorer, contig, snvs.pos, length)  # (R,) object: None, no_context, n_in_context
    outcome = _Outcome(scorer, contig, snvs, length, ids)
    outcome.fill(batch, snvs.members, reasons, keys)


def _subset(snvs: _Snvs, keep: np.ndarray) -> _Snvs:
    alleles = np.repeat(keep, snvs.counts)
    return _Snvs(snvs.members[keep], snvs.pos[keep], snvs.ref[keep], snvs.alt[alleles], snvs.counts[keep])


def bases_at(reference: Reference, contig: str, positions: np.ndarray, length: int) -> np.ndarray:
    """Token ids at 0-based ``positions`` (any shape) of ``contig``; -1 outside [0, length). One
    reference read per 16 kb tile the positions touch."""
    flat = positions.ravel()
    inside = (flat >= 0) & (flat < length)
    tiles, inverse = np.unique(np.where(inside, flat, 0) // TILE, return_inverse=True)
    chunks = [reference.ids(contig, t * TILE, min((t + 1) * TILE, length)) for t in tiles.tolist()]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])])[:-1]
    joined = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
    index = offsets[inverse] + np.where(inside, flat, 0) - tiles[inverse] * TILE
    return np.where(inside, joined[index] if len(joined) else -1, -1).reshape(positions.shape)


def _context_reasons(scorer, contig: str, pos: np.ndarray, length: int) -> np.ndarray:
    """The engine's context rule, once per llr block: no_context, n_in_context or None per position
    ((R,) object array). The N rule is checked block by block only where a tile of the context holds an N."""
    tiling = scorer.tiling
    blocks, inverse = np.unique(pos // tiling.stride, return_inverse=True)
    start = blocks * tiling.stride  # (B,) each as tiling.context_span
    left, right = np.maximum(0, start - tiling.context), np.minimum(length, start + tiling.stride + tiling.context)
    reasons = np.where(right - left <= 1, NO_CONTEXT, None)  # (B,) object
    some = np.flatnonzero(right - left > 1)
    maybe = some[scorer.reference.spans_with_n(contig, left[some], right[some])]
    for b, lo, hi in zip(maybe.tolist(), left[maybe].tolist(), right[maybe].tolist()):
        if scorer.planner.n_heavy(contig, lo, hi, 1):
            reasons[b] = N_IN_CONTEXT
    return reasons[inverse]


class _Outcome:
    """Looked-up values of a contig's SNVs (per ALT allele), and each record's outcome from them."""

    def __init__(self, scorer, contig: str, snvs: _Snvs, length: int, ids: np.ndarray):
        self.counts = snvs.counts
        self.starts = np.cumsum(snvs.counts) - snvs.counts  # (R,) first ALT of each record
        pos, ref = np.repeat(snvs.pos, snvs.counts), np.repeat(snvs.ref, snvs.counts)  # (K,)
        forward, reverse = scorer.precomputed.strands(contig, pos, ref, snvs.alt, length - 1)
        mean = np.where(np.isnan(forward), reverse, np.where(np.isnan(reverse), forward, (forward + reverse) / 2))
        self.scores = {"llr_fwd": forward, "llr_rev": reverse, "llr": mean}  # the engine's key order
        if scorer.calibration is not None:
            contexts = _contexts(ids, snvs.pos, length)  # (R,)
            self.scores.update(_ranks(scorer.calibration, mean, np.repeat(contexts, snvs.counts)))
        self.present = np.stack([self._per_record(np.isfinite(v)) for v in self.scores.values()])  # (names, R)

    def _per_record(self, flags: np.ndarray) -> np.ndarray:
        """(R,) bool: ``flags`` (K,) true for every ALT of the record."""
        return np.logical_and.reduceat(flags, self.starts)

    def _uniform(self) -> np.ndarray:
        """(R,) bool: every score is NaN for all ALTs of the record or finite for all (else: engine)."""
        absent = np.stack([self._per_record(np.isnan(v)) for v in self.scores.values()])
        return (self.present | absent).all(axis=0)

    def fill(self, batch: LookedUpBatch, members: np.ndarray, reasons: np.ndarray, keys: dict[str, str]) -> None:
        """Each record's outcome into ``batch``: a context reason, else the engine's (not uniform), else
        not_in_precomputed (no llr), else its values."""
        llr = list(self.scores).index("llr")
        engine = (reasons == None) & ~self._uniform()  # noqa: E711 (elementwise on an object array)
        reasons = np.where((reasons == None) & ~self.present[llr], NOT_IN_PRECOMPUTED, reasons)  # noqa: E711
        reasons[engine] = None
        skipped = np.flatnonzero(reasons != None)  # noqa: E711
        scored = np.flatnonzero((reasons == None) & ~engine)  # noqa: E711
        for r, i, reason in zip(skipped.tolist(), members[skipped].tolist(), reasons[skipped].tolist()):
            batch.info[i], batch.skip[i], batch.alleles[i] = f"{keys['skip']}={reason}", reason, int(self.counts[r])
        for i, info, count in zip(members[scored].tolist(), self._infos(scored, keys), self.counts[scored].tolist()):
            batch.info[i], batch.alleles[i] = info, count
        batch._outcomes.append((members, self))

    def _infos(self, records: np.ndarray, keys: dict[str, str]) -> list[str]:
        """The INFO text of ``records`` (indices, each with an llr): 'KEY=v,v;KEY=...' over the scores
        present, in the engine's key order, the numbers as htslib writes them. One %-template per group
        of records with the same ALT count and the same scores present (a handful of groups)."""
        names = list(self.scores)
        values = np.nan_to_num(np.concatenate(list(self.scores.values())))  # NaN: never written, any text
        text = np.array(vcf.format_floats(values.tolist()), dtype=object).reshape(len(names), -1)  # (names, K)
        present = (self.present[:, records] << np.arange(len(names))[:, None]).sum(axis=0)  # (G,) bit per score
        groups = self.counts[records] << len(names) | present  # (G,) ALT count and scores present
        out = np.empty(len(records), dtype=object)
        for code in np.unique(groups).tolist():
            chosen = groups == code
            shown = [k for k in range(len(names)) if code >> k & 1]
            count = code >> len(names)
            template = ";".join(keys[names[k]].replace("%", "%%") + "=" + ",".join(["%s"] * count) for k in shown)
            alleles = self.starts[records[chosen]] + np.arange(count)[:, None]  # (count, G): K index per ALT
            columns = [text[k][a].tolist() for k in shown for a in alleles]  # in the template's order
            out[chosen] = [template % row for row in zip(*columns)]
        return out.tolist()

    def values(self, r: int) -> dict[str, tuple[float, ...]]:
        """Record ``r``'s values by score name (those finite for its ALTs), one per ALT."""
        rows = slice(int(self.starts[r]), int(self.starts[r] + self.counts[r]))
        return {name: tuple(v[rows].tolist()) for name, v in self.scores.items() if np.isfinite(v[rows]).all()}


def _contexts(ids: np.ndarray, pos: np.ndarray, length: int) -> np.ndarray:
    """Trinucleotide context (calibration.CONTEXTS index) per position; -1 at a contig end or next to
    a base that is not A/C/G/T (as the engine's)."""
    code = ids - A_ID  # (3, R)
    ok = ((code >= 0) & (code < 4)).all(axis=0) & (pos > 0) & (pos + 1 < length)
    return np.where(ok, 16 * code[0] + 4 * code[1] + code[2], -1)


def _ranks(table: calibration.CalibrationTable, llr: np.ndarray, contexts: np.ndarray) -> dict[str, np.ndarray]:
    """The calibration scores per ALT (NaN where the engine writes none), in the engine's key order."""
    fraction = table.rank_fraction(llr)
    in_context = table.rank_fraction(llr, contexts)
    in_context = np.where(contexts >= 0, in_context, np.nan)
    return {
        "llr_pct": fraction,
        "llr_phred": np.where(np.isfinite(fraction), table.phred(fraction), np.nan),
        "llr_pct_ctx": in_context,
        "llr_phred_ctx": np.where(np.isfinite(in_context), table.phred(in_context, contexts), np.nan),
    }
