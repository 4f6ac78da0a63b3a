"""The batched path of `score-variants --precomputed`: SNV records looked up as numpy arrays.

The general engine (VariantScorer) plans, looks up and calibrates one record at a time; at tens of
thousands of records per second that per-record Python is the cost, not the lookup. Here a batch
of records becomes arrays (positions, REF and ALT codes, one entry per ALT allele), checked,
looked up and calibrated with a few numpy calls per contig. Every record this path does not fully
understand is handed back (None) to the engine, so the values, their order and every SKIP reason
are those of the engine, byte for byte:

- records that are not plain SNVs (REF one base A/C/G/T, every ALT another such base), on contigs
  the FASTA lacks, out of range, whose REF is not the reference base (ref_is_n, ref_mismatch);
- records whose ALT alleles do not all share one outcome (some scored and some not, a strand with
  a value for one ALT and not another, a non-finite value): the engine sorts those out allele by allele.

``lookup_records(scorer, records)`` -> per record None (engine) or ``LookedUp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genomelm.formats import vcf
from genomelm.tokenizer import A_ID
from genomelm.variants import calibration
from genomelm.variants.planner import N_IN_CONTEXT, NO_CONTEXT, NOT_IN_PRECOMPUTED
from genomelm.variants.reference import TILE, Reference

_CODE = {"A": 0, "C": 1, "G": 2, "T": 3, "a": 0, "c": 1, "g": 2, "t": 3}


class LookedUp:
    """One record's outcome: its SKIP reason, or its values by score name (one per ALT, in ALT order),
    as the INFO text htslib would write for them (``info``) and as numbers (``values()``)."""

    __slots__ = ("skip", "alleles", "info", "_outcome", "_end")

    def __init__(self, skip: str | None, alleles: int, info: str, outcome: _Outcome | None = None, end: int = 0):
        self.skip, self.alleles, self.info = skip, alleles, info
        self._outcome, self._end = outcome, end

    def values(self) -> dict[str, tuple[float, ...]]:
        if self._outcome is None:
            return {}
        start, end = self._end - self.alleles, self._end
        lists = self._outcome.lists
        return {name: tuple(lists[name][start:end]) for name in lists if lists[name][end - 1] == lists[name][end - 1]}


@dataclass
class _Snvs:
    """The plain-SNV records of a batch on one contig; ``pos``/``ref``: per record, ``alt``: per ALT."""

    members: list[int]  # index in the batch
    pos: np.ndarray  # (R,) 0-based
    ref: np.ndarray  # (R,) REF codes 0..3
    alt: np.ndarray  # (K,) ALT codes, record after record
    counts: np.ndarray  # (R,) ALT alleles per record


def lookup_records(scorer, records: list, keys: dict[str, str]) -> list[LookedUp | None]:
    """Per record of ``records`` (pysam records, in order): its outcome, or None where the engine must
    score it. ``scorer``: a VariantScorer with ``precomputed`` (and ``calibration`` when asked for); ``keys``:
    score name (and 'skip') -> INFO key."""
    out: list[LookedUp | None] = [None] * len(records)
    for contig, snvs in _plain_snvs(records, scorer.planner.mapper).items():
        _lookup_contig(scorer, contig, snvs, out, keys)
    return out


def _plain_snvs(records: list, mapper) -> dict[str, _Snvs]:
    """Plain-SNV records by FASTA contig (the one Python loop over records)."""
    found: dict[str, list] = {}
    code_of = _CODE.get
    for i, record in enumerate(records):
        alleles = record.alleles  # (REF, *ALTs): one call, where .ref and .alts are two
        code = code_of(alleles[0]) if alleles and len(alleles) > 1 else None
        if code is None:
            continue
        codes = [code_of(a, -1) for a in alleles[1:]]  # longer alleles are not keys: -1
        contig = mapper(record.chrom)
        if contig is not None and code not in codes and -1 not in codes:
            found.setdefault(contig, []).append((i, record.start, code, codes))
    return {contig: _snvs(rows) for contig, rows in found.items()}


def _snvs(rows: list[tuple[int, int, int, list[int]]]) -> _Snvs:
    members, pos, ref, codes = zip(*rows)
    alt = np.fromiter((c for alts in codes for c in alts), dtype=np.int64)
    return _Snvs(list(members), np.array(pos), np.array(ref), alt, np.array([len(c) for c in codes]))


def _lookup_contig(scorer, contig: str, snvs: _Snvs, out: list, keys: dict[str, str]) -> None:
    reference: Reference = scorer.reference
    length = reference.length(contig)
    inside = (snvs.pos >= 0) & (snvs.pos < length)
    snvs = _subset(snvs, inside)
    ids = bases_at(reference, contig, np.stack([snvs.pos - 1, snvs.pos, snvs.pos + 1]), length)  # (3, R)
    matches = ids[1] == A_ID + snvs.ref  # the others (ref_is_n, ref_mismatch) are the engine's
    snvs, ids = _subset(snvs, matches), ids[:, matches]
    if not snvs.members:
        return
    reason = _context_reasons(scorer, contig, snvs.pos, length)  # (R,) object: None, no_context, n_in_context
    outcome = _Outcome(scorer, contig, snvs, length, ids)
    infos = outcome.infos(keys)
    for r, i in enumerate(snvs.members):
        out[i] = outcome.record(r, reason[r], infos[r], keys)


def _subset(snvs: _Snvs, keep: np.ndarray) -> _Snvs:
    alleles = np.repeat(keep, snvs.counts)
    members = [m for m, k in zip(snvs.members, keep.tolist()) if k]
    return _Snvs(members, snvs.pos[keep], snvs.ref[keep], snvs.alt[alleles], snvs.counts[keep])


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


def _context_reasons(scorer, contig: str, pos: np.ndarray, length: int) -> list[str | None]:
    """The engine's context rule, once per llr block: no_context, n_in_context or None per position."""
    tiling = scorer.tiling
    blocks, inverse = np.unique(pos // tiling.stride, return_inverse=True)
    reasons = []
    for block in blocks.tolist():
        left, right = tiling.context_span(block * tiling.stride, length)
        if right - left <= 1:
            reasons.append(NO_CONTEXT)
        elif scorer.planner.n_heavy(contig, left, right, 1):
            reasons.append(N_IN_CONTEXT)
        else:
            reasons.append(None)
    return [reasons[b] for b in inverse.tolist()]


class _Outcome:
    """Looked-up values of a contig's SNVs (per ALT allele), and each record's outcome from them."""

    def __init__(self, scorer, contig: str, snvs: _Snvs, length: int, ids: np.ndarray):
        self.counts = snvs.counts.tolist()
        self.ends = np.cumsum(snvs.counts).tolist()
        self.starts = (np.cumsum(snvs.counts) - snvs.counts).astype(np.int64)  # (R,) first ALT of each record
        pos, ref = np.repeat(snvs.pos, snvs.counts), np.repeat(snvs.ref, snvs.counts)  # (K,)
        forward, reverse = scorer.precomputed.strands(contig, pos, ref, snvs.alt, length - 1)
        mean = np.where(np.isnan(forward), reverse, np.where(np.isnan(reverse), forward, (forward + reverse) / 2))
        self.scores = {"llr_fwd": forward, "llr_rev": reverse, "llr": mean}  # the engine's key order
        if scorer.calibration is not None:
            contexts = _contexts(ids, snvs.pos, length)  # (R,)
            self.scores.update(_ranks(scorer.calibration, mean, np.repeat(contexts, snvs.counts)))
        self.present = {n: self._per_record(np.isfinite(v)) for n, v in self.scores.items()}  # (R,) each
        self.uniform = self._uniform().tolist()
        self.lists = {name: values.tolist() for name, values in self.scores.items()}

    def _per_record(self, flags: np.ndarray) -> np.ndarray:
        """(R,) bool: ``flags`` (K,) true for every ALT of the record."""
        return np.logical_and.reduceat(flags, self.starts) if len(self.starts) else np.zeros(0, dtype=bool)

    def _uniform(self) -> np.ndarray:
        """(R,) bool: every score is NaN for all ALTs of the record or finite for all (else: engine)."""
        uniform = np.ones(len(self.counts), dtype=bool)
        for name, values in self.scores.items():
            uniform &= self.present[name] | self._per_record(np.isnan(values))
        return uniform

    def infos(self, keys: dict[str, str]) -> list[str | None]:
        """Per record, the INFO text of its values ('KEY=v,v;KEY=...', in the engine's key order, the
        numbers as htslib writes them); None for a record without values."""
        names = list(self.scores)
        present = np.stack([self.present[n] for n in names])  # (names, R)
        columns = [self._column(keys[n], n) for n in names]
        full = present.all(axis=0)
        infos = [";".join(parts) if ok else None for parts, ok in zip(zip(*columns), full.tolist())]
        for r in np.flatnonzero(~full & present[names.index("llr")]).tolist():
            infos[r] = ";".join(columns[k][r] for k in range(len(names)) if present[k, r])
        return infos

    def _column(self, key: str, name: str) -> list[str]:
        """'KEY=v,v' per record, the numbers formatted by htslib (meaningful where the score is present)."""
        text = vcf.format_floats(np.nan_to_num(self.scores[name]).tolist())  # (K,)
        prefix = key + "="
        return [
            prefix + (text[end - 1] if count == 1 else ",".join(text[end - count : end]))
            for end, count in zip(self.ends, self.counts)
        ]

    def record(self, r: int, reason: str | None, info: str | None, keys: dict[str, str]) -> LookedUp | None:
        count = self.counts[r]
        if reason is None and not self.uniform[r]:
            return None
        if reason is None and info is None:  # no llr (uniform: for no ALT)
            reason = NOT_IN_PRECOMPUTED
        if reason is not None:
            return LookedUp(reason, count, f"{keys['skip']}={reason}")
        return LookedUp(None, count, info, self, self.ends[r])


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
