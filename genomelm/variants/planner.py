"""Per-record planning: which FASTA contig and span a record names, and every reason a record or
ALT allele is not scored (the SKIP values, in one place).

Records are anything with ``chrom``, ``pos`` (1-based VCF POS), ``start`` (0-based), ``ref``,
``alts`` and ``id``: a pysam record, or ``Variant`` for in-memory input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from genomelm.errors import RefMismatchError
from genomelm.formats import vcf
from genomelm.tokenizer import A_ID, C_ID, G_ID, N_ID, T_ID, CharTokenizer
from genomelm.variants.reference import Reference

# Reasons a record or allele is not scored, besides vcf.allele_kind's (symbolic, breakend, ...).
CONTIG_MISSING, OUT_OF_RANGE, REF_MISMATCH, REF_IS_N = "contig_missing", "out_of_range", "ref_mismatch", "ref_is_n"
N_IN_CONTEXT, NOT_SNV, TOO_LONG, NO_CONTEXT = "n_in_context", "not_snv", "too_long", "no_context"
NON_FINITE = "non_finite"  # the model produced NaN or inf for this allele
NOT_IN_PRECOMPUTED = "not_in_precomputed"  # --precomputed: the store has no value there (outside its regions)

SKIP_REASONS = (
    CONTIG_MISSING,
    OUT_OF_RANGE,
    REF_MISMATCH,
    REF_IS_N,
    vcf.SYMBOLIC,
    vcf.BREAKEND,
    vcf.SPANNING_DELETION,
    vcf.NO_ALT,
    vcf.UNSUPPORTED,
    NOT_SNV,
    N_IN_CONTEXT,
    TOO_LONG,
    NO_CONTEXT,
    NON_FINITE,
    NOT_IN_PRECOMPUTED,
)
SCORABLE = (vcf.SNV, vcf.MNV, vcf.INDEL)
BASE_ID = {"A": A_ID, "C": C_ID, "G": G_ID, "T": T_ID}


@dataclass
class Variant:
    """An in-memory record: ``pos`` is the 1-based VCF POS, ``alts`` the ALT alleles."""

    chrom: str
    pos: int
    ref: str
    alts: tuple[str, ...]
    id: str | None = None

    @property
    def start(self) -> int:
        """0-based start of REF."""
        return self.pos - 1


@dataclass
class Site:
    """One record being scored: FASTA contig, 0-based start, alleles and what each method found."""

    record: object
    contig: str | None = None
    start: int = -1
    ref: str = ""
    alts: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per ALT: snv/mnv/indel or the reason it cannot be scored
    reason: str | None = None  # why the whole record cannot be scored
    values: dict[str, list[float | None]] = field(default_factory=dict)  # score name -> per-ALT values
    why: list[str | None] = field(default_factory=list)  # per ALT: first method-level reason

    def fail(self, allele: int, reason: str) -> None:
        """Note why a method left ``allele`` without a value; 'not_snv' (llr's) yields to any other
        method's reason, which says more about an allele that method could have scored."""
        if self.why[allele] in (None, NOT_SNV):
            self.why[allele] = reason

    def set(self, name: str, allele: int, value: float) -> None:
        """Record a score; a non-finite one is never written: the allele is flagged non_finite."""
        value = float(value)
        if math.isfinite(value):  # math, not numpy: this runs per allele and score (lookups: 50k+/s)
            self.values.setdefault(name, [None] * len(self.alts))[allele] = value
        else:
            self.fail(allele, NON_FINITE)

    def scored(self, allele: int) -> bool:
        return any(v[allele] is not None for v in self.values.values())

    def allele_reason(self, allele: int) -> str:
        """Why ``allele`` has no value (meaningful only when it has none)."""
        if self.reason is not None:
            return self.reason
        if self.kinds[allele] not in SCORABLE:
            return self.kinds[allele]
        return self.why[allele] or NOT_SNV

    def allele_results(self) -> list[tuple[str, dict[str, float], str | None]]:
        """Per ALT allele ('.' for a record without one): (ALT, its scores by name, why it has none)."""
        skip = self.skip_reason()
        out = []
        for a, alt in enumerate(self.alts or ["."]):
            scores = {name: v[a] for name, v in self.values.items() if v[a] is not None}
            out.append((alt, scores, skip or (None if scores else self.allele_reason(a))))
        return out

    def skip_reason(self) -> str | None:
        """The record's SKIP value: None when any allele has a value."""
        unscored = [a for a in range(len(self.alts)) if not self.scored(a)]
        if len(unscored) < len(self.alts):
            return None
        return self.reason or (self.allele_reason(unscored[0]) if unscored else vcf.NO_ALT)


class Planner:
    """Turns records into Sites: contig mapping, range and REF checks, the N-content rule."""

    def __init__(self, reference: Reference, max_n_frac: float = 0.05, on_ref_mismatch: str = "skip", source=""):
        self.reference, self.max_n_frac = reference, max_n_frac
        self.on_ref_mismatch, self.source = on_ref_mismatch, source
        self.mapper = vcf.ContigMapper(reference.lengths)

    def plan(self, record) -> Site:
        alts = list(record.alts or ())
        site = Site(record, ref=(record.ref or "").upper(), alts=alts, why=[None] * len(alts))
        site.kinds = [vcf.allele_kind(site.ref, alt) for alt in alts]
        if not alts:
            site.reason = vcf.NO_ALT
            return site
        site.contig, site.start = self.mapper(record.chrom), record.start
        if site.contig is None:
            site.reason = CONTIG_MISSING
        elif site.start < 0 or site.start + len(site.ref) > self.reference.length(site.contig):
            site.reason = OUT_OF_RANGE
        else:
            site.reason = self._ref_check(site, record)
        return site

    def _ref_check(self, site: Site, record) -> str | None:
        """ref_is_n where the reference has N under REF (an assembly gap), ref_mismatch where it
        has other bases; None when REF matches (or is not comparable: 'unsupported_allele')."""
        if not site.ref or not set(site.ref) <= set(BASE_ID):
            return None
        found = self.reference.ids(site.contig, site.start, site.start + len(site.ref))
        codes = found.tolist()  # a few bases: Python lists beat numpy calls here
        if N_ID in codes:
            return REF_IS_N
        if codes == [BASE_ID[b] for b in site.ref]:
            return None
        if self.on_ref_mismatch == "error":
            raise RefMismatchError(
                f"{record.chrom}:{record.pos}: REF {site.ref} does not match the reference "
                f"({CharTokenizer().decode(found)}) in {self.source} "
                "(--on-ref-mismatch skip passes such records through)"
            )
        return REF_MISMATCH

    def n_heavy(self, contig: str, left: int, right: int, skip: int) -> bool:
        """More N than allowed in [left, right) (0-based half-open), ``skip`` variant bases not counted."""
        bases = right - left - skip
        return bases > 0 and self.reference.n_count(contig, left, right) > self.max_n_frac * bases
