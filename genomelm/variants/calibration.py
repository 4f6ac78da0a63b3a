"""Calibration of llr: where a score ranks among all possible SNVs of the genome (DESIGN.md §6).

``score-genome`` counts the llr (mean of both strands) of every scored SNV, 3 per reference base,
in fine bins: genome-wide and per trinucleotide context of the reference base (the base before, the
reference base, the base after, on the forward strand: 64 contexts). From those counts:

- ``rank_fraction(llr)``: the fraction of all possible SNVs of this genome with a lower llr (a
  value between 0 and 1; linear inside a bin, so the resolution is ``BIN_WIDTH``);
- PHRED = -10 log10(rank fraction), as CADD scales its ranks: 10 = the lowest 10 %, 20 = the lowest
  1 %, 30 = the lowest 0.1 %. High PHRED = among the most damaging SNVs the model sees in this genome.

Pure numpy (no torch): the track-writer processes import it.
"""

from __future__ import annotations

import numpy as np

from genomelm.formats.genome_store import BASES

LLR_LOW, LLR_HIGH, BIN_WIDTH = -40.0, 40.0, 0.01
N_BINS = int(round((LLR_HIGH - LLR_LOW) / BIN_WIDTH)) + 2  # + one bin below LLR_LOW and one above LLR_HIGH
N_CONTEXTS = 64
ALL = N_CONTEXTS  # the row of the genome-wide counts
CONTEXTS = tuple(a + b + c for a in BASES for b in BASES for c in BASES)
_A_ID = 7  # token id of A; C, G, T follow


def bin_of(llr: np.ndarray) -> np.ndarray:
    """Bin index of each llr: 0 below LLR_LOW, N_BINS - 1 at or above LLR_HIGH. In float32, the
    precision of the stored scores (and 5x faster than float64 over a genome's 9 billion SNVs)."""
    scaled = (np.asarray(llr, dtype=np.float32) - np.float32(LLR_LOW)) * np.float32(1 / BIN_WIDTH)
    return np.floor(np.clip(scaled, -1, N_BINS - 2)).astype(np.int32) + 1


def context_index(ref_ids: np.ndarray) -> np.ndarray:
    """Trinucleotide context (0..63, CONTEXTS order) of positions 1..n-2 of ``ref_ids`` (token ids,
    so the first and last entries are the flanking bases); -1 where one of the 3 bases is not A/C/G/T."""
    code = np.asarray(ref_ids, dtype=np.int64) - _A_ID
    ok = (code >= 0) & (code < 4)
    index = 16 * code[:-2] + 4 * code[1:-1] + code[2:]
    return np.where(ok[:-2] & ok[1:-1] & ok[2:], index, -1)


class CalibrationCounter:
    """Counts of llr per bin: row c < 64 for context c, row 64 genome-wide."""

    def __init__(self):
        self.counts = np.zeros((N_CONTEXTS + 1, N_BINS), dtype=np.int64)

    def add(self, mean_llr: np.ndarray, ref_ids: np.ndarray) -> None:
        """``mean_llr`` (n, 4): llr of each base at n positions (0 or NaN at the reference base);
        ``ref_ids`` (n + 2,): token ids of those positions with one flanking base on each side."""
        code = ref_ids[1:-1].astype(np.int32) - _A_ID
        keep = (np.arange(4, dtype=np.int32)[None, :] != code[:, None]) & np.isfinite(mean_llr)  # (n, 4)
        contexts = context_index(ref_ids).astype(np.int32)
        rows = np.where(contexts >= 0, contexts, N_CONTEXTS) * np.int32(N_BINS)  # unknown context: ALL only
        flat = np.broadcast_to(rows[:, None], keep.shape)[keep] + bin_of(mean_llr[keep])
        counts = np.bincount(flat, minlength=(N_CONTEXTS + 1) * N_BINS).reshape(N_CONTEXTS + 1, N_BINS)
        self.counts[:N_CONTEXTS] += counts[:N_CONTEXTS]
        self.counts[ALL] += counts.sum(axis=0)


class CalibrationTable:
    """Rank fractions and PHRED from counts written by a CalibrationCounter."""

    def __init__(self, counts: np.ndarray):
        if counts.shape != (N_CONTEXTS + 1, N_BINS):
            raise ValueError(f"calibration counts of shape {counts.shape}, expected {(N_CONTEXTS + 1, N_BINS)}")
        self.counts = counts
        self.totals = counts.sum(axis=1)  # (65,)
        self.below = np.cumsum(counts, axis=1) - counts  # (65, N_BINS): counts in lower bins

    def rank_fraction(self, llr: np.ndarray, contexts: np.ndarray | None = None) -> np.ndarray:
        """Fraction of the genome's SNVs (of the same context, or all where ``contexts`` is None or
        -1) with a lower llr; NaN where llr is NaN or the row has no counts."""
        llr = np.asarray(llr, dtype=np.float64)
        rows = np.full(llr.shape, ALL) if contexts is None else np.where(contexts >= 0, contexts, ALL)
        bins = bin_of(np.nan_to_num(llr))
        inside = np.clip((llr - (LLR_LOW + (bins - 1) * BIN_WIDTH)) / BIN_WIDTH, 0.0, 1.0)
        inside = np.where((bins == 0) | (bins == N_BINS - 1), 0.5, inside)  # unbounded end bins: their middle
        lower = self.below[rows, bins] + self.counts[rows, bins] * inside
        total = self.totals[rows].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isfinite(llr) & (total > 0), lower / total, np.nan)

    def phred(self, fraction: np.ndarray, contexts: np.ndarray | None = None) -> np.ndarray:
        """-10 log10(rank fraction), the fraction floored at one SNV of its row."""
        fraction = np.asarray(fraction, dtype=np.float64)
        rows = np.full(fraction.shape, ALL) if contexts is None else np.where(contexts >= 0, contexts, ALL)
        floor = 1.0 / np.maximum(self.totals[rows], 1)
        with np.errstate(invalid="ignore"):
            return -10.0 * np.log10(np.maximum(fraction, floor))
