"""The score methods: one table entry per method (its scores, their INFO keys, Number and
description, and the function that computes them). Adding a method is one entry plus its function.

Two kinds of function: a ``site`` method scores a list of planned Sites itself (llr runs its own
tiled passes); a ``window`` method maps the four equal-length windows of one ALT allele
(windows.AlleleWindows -> SeqStats of REF/ALT on each strand) to its values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genomelm.errors import UsageError
from genomelm.variants.windows import SeqStats


@dataclass(frozen=True)
class Score:
    """One value per ALT allele: ``name`` (API key and TSV column), INFO key ``<prefix><suffix>``."""

    name: str
    suffix: str
    description: str  # str.format template: {llr} {span} {centred} (see describe())
    number: str = "A"
    type: str = "Float"


@dataclass(frozen=True)
class Method:
    name: str  # as given to --method
    scores: tuple[Score, ...]  # in INFO header order
    columns: tuple[str, ...]  # score names in TSV column order
    kind: str  # 'site' or 'window'
    compute: Callable


@dataclass
class WindowStats:
    """SeqStats of one ALT allele's four windows."""

    ref_forward: SeqStats
    ref_reverse: SeqStats
    alt_forward: SeqStats
    alt_reverse: SeqStats


def delta_ll(stats: WindowStats) -> dict[str, float]:
    """DLL: ALT minus REF log-likelihood over the same number of scored tokens, mean of both strands;
    DLL_MEAN: the same per scored token (each strand divided by its count), mean of both strands."""
    forward = stats.alt_forward.log_likelihood - stats.ref_forward.log_likelihood
    reverse = stats.alt_reverse.log_likelihood - stats.ref_reverse.log_likelihood
    per_base = [d / n for d, n in ((forward, stats.ref_forward.scored), (reverse, stats.ref_reverse.scored)) if n > 0]
    return {"dll": (forward + reverse) / 2, "dll_mean": float(np.mean(per_base)) if per_base else float("nan")}


def embedding_distance(stats: WindowStats) -> dict[str, float]:
    """Cosine and L2 distance of the REF and ALT mean embeddings, each the mean of both strands."""
    ref = (stats.ref_forward.embedding + stats.ref_reverse.embedding) / 2  # (D,)
    alt = (stats.alt_forward.embedding + stats.alt_reverse.embedding) / 2  # (D,)
    if not (np.isfinite(ref).all() and np.isfinite(alt).all()):
        return {"emb_cos": float("nan"), "emb_l2": float("nan")}
    norms = np.linalg.norm(ref) * np.linalg.norm(alt)
    return {"emb_cos": 1.0 - float(ref @ alt) / norms if norms > 0 else 0.0, "emb_l2": float(np.linalg.norm(ref - alt))}


def _score_llr(engine, sites) -> None:
    engine.score_llr(sites)  # the tiled passes live in the engine (they need the reference and tiling)


def _calibrate(engine, sites) -> None:
    from genomelm.variants.precomputed import calibrate_sites  # numpy + pyBigWig, only when asked for

    calibrate_sites(engine, sites)


_LLR = "Site log-likelihood ratio log P(alt) - log P(ref) by {model}"
_WINDOWS = "{window} bp window centred on the variant, mean of both strands, by {model}"
_EQUAL = "REF and ALT score the same number of bases (indels: the flank after the variant trimmed or extended)"

METHODS: dict[str, Method] = {
    "llr": Method(
        "llr",
        (
            Score("llr", "LLR", _LLR + ": mean of both strands (one if the other has no context)"),
            Score("llr_fwd", "LLR_FWD", _LLR + ": forward strand, left context {span}"),
            Score("llr_rev", "LLR_REV", _LLR + ": reverse-complement strand, right context {span}"),
        ),
        ("llr_fwd", "llr_rev", "llr"),
        "site",
        _score_llr,
    ),
    "delta-ll": Method(
        "delta-ll",
        (
            Score("dll", "DLL", f"Window log-likelihood with ALT minus with REF (delta-ll; {_EQUAL}), {_WINDOWS}"),
            Score("dll_mean", "DLL_MEAN", "delta-ll per scored base (each strand divided by its count), " + _WINDOWS),
        ),
        ("dll", "dll_mean"),
        "window",
        delta_ll,
    ),
    "embedding": Method(
        "embedding",
        (
            Score("emb_cos", "EMB_COS", "Cosine distance of REF and ALT mean embeddings, " + _WINDOWS),
            Score("emb_l2", "EMB_L2", "L2 distance of REF and ALT mean embeddings, " + _WINDOWS),
        ),
        ("emb_cos", "emb_l2"),
        "window",
        embedding_distance,
    ),
}


_RANK = "llr ({model}) ranked among all possible SNVs of {genome}"
_CALIBRATION = Method(
    "calibration",
    (
        Score("llr_pct", "LLR_PCT", "Fraction (0-1) of the SNVs with a lower llr: " + _RANK),
        Score("llr_phred", "LLR_PHRED", "PHRED-scaled rank, -10 log10(LLR_PCT): " + _RANK),
        Score(
            "llr_pct_ctx", "LLR_PCT_CTX", "Fraction (0-1) of the SNVs with a lower llr, same trinucleotide: " + _RANK
        ),
        Score("llr_phred_ctx", "LLR_PHRED_CTX", "PHRED-scaled rank within the trinucleotide context: " + _RANK),
    ),
    ("llr_pct", "llr_phred", "llr_pct_ctx", "llr_phred_ctx"),
    "site",
    _calibrate,
)
CALIBRATION = "calibration"  # a method added by --calibration (after llr), not asked for with --method
METHODS[CALIBRATION] = _CALIBRATION


def check_methods(names) -> list[str]:
    """``names`` de-duplicated in order (default llr); UsageError naming the first unknown one."""
    methods = list(dict.fromkeys(names or ["llr"]))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {unknown[0]!r}")
    return methods


def score_columns(methods: list[str]) -> list[str]:
    """Score names of ``methods`` in TSV column order."""
    return [name for m in methods for name in METHODS[m].columns]
