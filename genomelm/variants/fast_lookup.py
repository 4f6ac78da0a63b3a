"""The batched path of `score-variants --precomputed`: SNV records looked up as numpy arrays.

The general engine (VariantScorer) plans, looks up and calibrates one record at a time; at tens of
thousands of records per second that per-record Python is the cost, not the lookup. Here a batch
of records becomes arrays (positions, REF and ALT codes, one entry per ALT allele), checked,
looked up and calibrated with a few numpy calls per contig. Every record this path does not fully
understand is handed back to the engine, so the values, their order and every SKIP reason are
those of the engine, byte for byte:

- records that are not plain SNVs (REF one base A/C/G/T, every ALT another such base, at most
  MAX_ALTS of them), on contigs the FASTA lacks, out of range, whose REF is not the reference base
  (ref_is_n, ref_mismatch);
- records whose ALT alleles do not all share one outcome (some scored and some not, a strand with
  a value for one ALT and not another, a non-finite value): the engine sorts those out allele by allele.

Records come as the lines htslib writes for them (``str(record)``), a batch joined into one buffer
(formats.vcf_lines.RecordLines): CHROM, POS, REF and ALT of every line are read there with a few
numpy calls (no split per line, no pysam attribute access), and that buffer is what the caller
splices the INFO text into. A line that cannot be read column by column (a tab or a newline inside
a value, which only a BCF input can carry) is the engine's. The INFO text of the values is built a
group of records at a time (same ALT count, same scores present): the values laid out in the order
of the text, formatted by htslib in one call and joined with the keys between them.

``lookup_lines(scorer, lines, keys)`` -> ``LookedUpBatch``: per record, None (the engine's) or
the INFO text to add, its SKIP reason and ALT count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genomelm.formats import vcf
from genomelm.formats.vcf_lines import RecordLines
from genomelm.tokenizer import A_ID
from genomelm.variants import calibration
from genomelm.variants.planner import N_IN_CONTEXT, NO_CONTEXT, NOT_IN_PRECOMPUTED
from genomelm.variants.reference import TILE, Reference

_CODE = np.full(256, -1, dtype=np.int64)  # byte -> base code 0..3 (either case), -1 for any other
for _code, _bases in enumerate(("Aa", "Cc", "Gg", "Tt")):
    _CODE[[ord(b) for b in _bases]] = _code
MAX_ALTS = 8  # ALT alleles of a record this path reads (more: the engine's)


class LookedUpBatch:
    """The outcome of a batch, per record (index in the batch; (R,) arrays): ``info[i]`` is None for a
    record the engine must score, else the INFO text to add (UTF-8 bytes: b'KEY=v,v;...', or
    b'<prefix>SKIP=reason'), with ``skip[i]`` its SKIP reason (None: scored) and ``alleles[i]`` its ALT
    count."""

    def __init__(self, size: int):
        self.info = np.full(size, None, dtype=object)
        self.skip = np.full(size, None, dtype=object)
        self.alleles = np.zeros(size, dtype=np.int64)
        self._outcomes: list[tuple[np.ndarray, _Outcome]] = []  # (batch index per record, outcome)

    @property
    def records(self) -> np.ndarray:
        """Indices of the records this path took (an outcome of its own), in order."""
        return np.flatnonzero(self.info != None)  # noqa: E711 (elementwise on an object array)

    def first_skipped(self) -> int | None:
        """Index of the first record this path skipped (a SKIP reason), None when there is none."""
        skipped = np.flatnonzero(self.skip != None)  # noqa: E711
        return int(skipped[0]) if len(skipped) else None

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


def lookup_lines(scorer, lines: RecordLines, keys: dict[str, str]) -> LookedUpBatch:
    """The outcome of each record of a batch. ``lines``: the records' VCF lines, in order; ``scorer``: a
    VariantScorer with ``precomputed`` (and ``calibration`` when asked for); ``keys``: score name (and
    'skip') -> INFO key."""
    batch = LookedUpBatch(len(lines))
    for contig, snvs in _plain_snvs(lines, scorer.planner.mapper).items():
        _lookup_contig(scorer, contig, snvs, batch, keys)
    return batch


def _plain_snvs(lines: RecordLines, mapper) -> dict[str, _Snvs]:
    """Plain-SNV records by FASTA contig, read from the lines' CHROM, POS, REF and ALT columns at once."""
    ref = np.where(lines.width(3) == 1, _CODE[lines.array[lines.begin[:, 3]]], -1)  # (R,)
    alt, counts = _alt_codes(lines)  # (R, MAX_ALTS), (R,)
    plain = (ref >= 0) & (counts > 0) & ~(alt == ref[:, None]).any(axis=1)  # (R,)
    pos = lines.unsigned(1) - 1  # (R,) 0-based; -2 where POS is not a number (out of range: the engine's)
    starts, chroms = lines.runs(0)  # runs of records on one contig (a sorted VCF: one or two per batch)
    sizes = np.diff(np.append(starts, len(lines)))
    contigs = [mapper(chrom) for chrom in chroms]
    found = {}
    for name in dict.fromkeys(c for c in contigs if c is not None):
        members = np.flatnonzero(np.repeat([c == name for c in contigs], sizes) & plain)
        if len(members):
            alts = alt[members]
            found[name] = _Snvs(members, pos[members], ref[members], alts[alts >= 0], counts[members])
    return found


def _alt_codes(lines: RecordLines) -> tuple[np.ndarray, np.ndarray]:
    """Per record, the codes of its ALT alleles when they are all single bases ((R, MAX_ALTS), -1 past
    the last) and their number (0 when any allele is something else, or there are more than MAX_ALTS)."""
    width = lines.width(4)
    text = lines.padded(4, 2 * MAX_ALTS - 1)  # (R, 2 * MAX_ALTS - 1): base, comma, base, ...
    counts = (width + 1) // 2  # (R,) when they are single bases
    codes = _CODE[text[:, 0::2]]  # (R, MAX_ALTS)
    used = np.arange(MAX_ALTS) < counts[:, None]
    commas = (text[:, 1::2] == ord(",")) | ~used[:, 1:]  # (R, MAX_ALTS - 1)
    single = (width % 2 == 1) & (width < 2 * MAX_ALTS) & ((codes >= 0) | ~used).all(axis=1) & commas.all(axis=1)
    return np.where(used & single[:, None], codes, -1), np.where(single, counts, 0)


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
    """Token ids (int64) at 0-based ``positions`` (any shape) of ``contig``; -1 outside [0, length). One
    reference read per 16 kb tile the positions touch, the tiles joined as they are cached (uint8)."""
    flat = positions.ravel()
    inside = (flat >= 0) & (flat < length)
    tiles, inverse = np.unique(np.where(inside, flat, 0) // TILE, return_inverse=True)
    chunks = [reference.ids_uint8(contig, t * TILE, min((t + 1) * TILE, length)) for t in tiles.tolist()]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])])[:-1]
    joined = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.uint8)
    index = offsets[inverse] + np.where(inside, flat, 0) - tiles[inverse] * TILE
    found = joined[index].astype(np.int64) if len(joined) else np.full(len(flat), -1)
    return np.where(inside, found, -1).reshape(positions.shape)


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
        texts = {reason: f"{keys['skip']}={reason}".encode() for reason in set(reasons[skipped].tolist())}
        batch.info[members[skipped]] = np.array([texts[reason] for reason in reasons[skipped].tolist()], dtype=object)
        batch.skip[members[skipped]] = reasons[skipped]
        batch.info[members[scored]] = self._infos(scored, keys)
        batch.alleles[members[skipped]], batch.alleles[members[scored]] = self.counts[skipped], self.counts[scored]
        batch._outcomes.append((members, self))

    def _infos(self, records: np.ndarray, keys: dict[str, str]) -> np.ndarray:
        """The INFO text of ``records`` (indices, each with an llr): b'KEY=v,v;KEY=...' over the scores
        present, in the engine's key order, the numbers as htslib writes them. A group of records at a
        time (same ALT count, same scores present: a handful of groups), their values laid out in the
        order of the text, formatted by htslib in one go and joined with the keys between them."""
        names = list(self.scores)
        present = (self.present[:, records] << np.arange(len(names))[:, None]).sum(axis=0)  # (G,) bit per score
        groups = self.counts[records] << len(names) | present  # (G,) ALT count and scores present
        layout, values = [], []
        for code in np.unique(groups).tolist():
            chosen = np.flatnonzero(groups == code)
            shown, count = [names[k] for k in range(len(names)) if code >> k & 1], code >> len(names)
            alleles = self.starts[records[chosen]] + np.arange(count)[:, None]  # (count, G): K index per ALT
            values.append(np.stack([self.scores[name][a] for name in shown for a in alleles], axis=1).ravel())
            layout.append((chosen, _leads([keys[name] for name in shown], count)))
        text = vcf.format_floats(np.concatenate(values).tolist()) if values else []
        out, at = np.empty(len(records), dtype=object), 0
        for chosen, leads in layout:
            out[chosen] = joined(text[at : at + len(chosen) * len(leads)], leads)
            at += len(chosen) * len(leads)
        return out

    def values(self, r: int) -> dict[str, tuple[float, ...]]:
        """Record ``r``'s values by score name (those finite for its ALTs), one per ALT."""
        rows = slice(int(self.starts[r]), int(self.starts[r] + self.counts[r]))
        return {name: tuple(v[rows].tolist()) for name, v in self.scores.items() if np.isfinite(v[rows]).all()}


def _leads(keys: list[str], count: int) -> list[str]:
    """What comes before each value in an INFO text of ``keys`` with ``count`` values each: 'KEY=' (';KEY='
    after the first key), then ',' before each further value."""
    return [lead for n, key in enumerate(keys) for lead in [";" * (n > 0) + key + "=", *[","] * (count - 1)]]


def joined(values: list[str], leads: list[str]) -> list[bytes]:
    """``values`` (ASCII), ``len(leads)`` per row, as rows of text: ``leads[0] + values[0] + leads[1] +
    values[1] + ...``. Every row by one join: the pieces are laid out by list slices, not by a call per row."""
    pieces: list[str | None] = [None] * (2 * len(values))
    pieces[0::2] = ["\n" + leads[0], *leads[1:]] * (len(values) // len(leads))
    pieces[1::2] = values
    return "".join(pieces)[1:].encode("ascii").split(b"\n")


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
