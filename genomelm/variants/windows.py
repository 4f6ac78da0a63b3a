"""Centred windows for delta-ll and embedding distance, with equal numbers of scored tokens.

A REF window of ``length`` bases is centred on the REF allele (clipped to the contig). On each
strand the model reads the window in its own direction: the flank before the variant (upstream)
is the same in the REF and the ALT sequence, so its log-likelihood terms cancel and are left out;
the scored tokens are the allele plus the flank after it (downstream). An indel changes the
allele's length by ``delta = len(ALT) - len(REF)``, so the ALT sequence's downstream flank is
``delta`` bases shorter (insertion) or longer (deletion, more reference read) than the REF's: both
sequences then score the same number of tokens, and a sum of log-likelihoods measures the variant,
not its length (DESIGN.md §6; evo2#206). On the forward strand the downstream flank is the right
one, on the reverse-complement strand the left one, so the ALT window differs per strand for
indels; for SNVs and MNVs (delta 0) both strands read the one centred window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genomelm.errors import UsageError
from genomelm.model.lm import mean_over_lengths
from genomelm.runtime import autocast, batched, pad_right
from genomelm.tokenizer import PAD_ID, reverse_complement_ids
from genomelm.variants.llr import model_window
from genomelm.variants.planner import BASE_ID
from genomelm.variants.reference import Reference

DEFAULT_WINDOW_CAP = 4096  # window when none is given: min(model window / 2, this)


@dataclass(frozen=True)
class CentredWindow:
    """A window of ``length`` bases centred on a variant's REF allele, clipped to the contig."""

    length: int

    def flanks(self, start: int, ref_length: int, contig_length: int) -> tuple[int, int]:
        """[left flank start, right flank end), 0-based half-open, around REF at [start, start + ref_length)."""
        left = (self.length - ref_length) // 2
        right = self.length - ref_length - left
        return max(0, start - left), min(contig_length, start + ref_length + right)


def centred_window(length: int | None, l_max: int) -> CentredWindow:
    """``length`` (--window), by default half the model window capped at 4096; checked against l_max."""
    length = length if length is not None else min(model_window(l_max) // 2, DEFAULT_WINDOW_CAP)
    if length < 2:
        raise UsageError(f"--window must be >= 2, got {length}")
    if length > l_max:
        raise UsageError(f"--window {length} is longer than the model allows ({l_max})")
    return CentredWindow(length)


@dataclass(frozen=True)
class WindowSeq:
    """Reference [left, right) of ``contig`` with REF [start, end) replaced by ``allele``, read on
    ``strand`` (0 forward, 1 reverse complement); 0-based half-open. Hashable: equal windows are run once."""

    contig: str
    left: int
    start: int
    end: int
    right: int
    allele: str
    strand: int

    @property
    def upstream(self) -> int:
        """Bases read before the allele on this strand (shared by REF and ALT: not scored)."""
        return self.start - self.left if self.strand == 0 else self.right - self.end

    @property
    def scored(self) -> int:
        """Tokens whose log-likelihood is summed: from the allele to the end (the first token has none)."""
        length = self.right - self.left - (self.end - self.start) + len(self.allele)
        return length - max(self.upstream, 1)

    def ids(self, reference: Reference) -> np.ndarray:
        """(L,) int64 token ids in reading order."""
        left_ids = reference.ids(self.contig, self.left, self.start)
        right_ids = reference.ids(self.contig, self.end, self.right)
        ids = np.concatenate([left_ids, [BASE_ID[b] for b in self.allele], right_ids]).astype(np.int64)
        return reverse_complement_ids(ids) if self.strand else ids


@dataclass(frozen=True)
class AlleleWindows:
    """The four sequences of one ALT allele: REF and ALT on each strand, equal scored tokens per strand."""

    ref_forward: WindowSeq
    ref_reverse: WindowSeq
    alt_forward: WindowSeq
    alt_reverse: WindowSeq

    def all(self) -> tuple[WindowSeq, ...]:
        return self.ref_forward, self.ref_reverse, self.alt_forward, self.alt_reverse

    @property
    def span(self) -> tuple[int, int]:
        """Reference bases any of the four reads, [left, right) 0-based half-open."""
        return min(w.left for w in self.all()), max(w.right for w in self.all())


def allele_windows(
    window: CentredWindow, contig: str, contig_length: int, start: int, ref: str, alt: str, l_max: int
) -> AlleleWindows | None:
    """The equal-length windows of ALT ``alt`` at 0-based ``start``; None when the allele needs more
    downstream flank than the window, the contig or the model (``l_max``) allows ('too_long')."""
    end, delta = start + len(ref), len(alt) - len(ref)
    left, right = window.flanks(start, len(ref), contig_length)
    forward = _downstream(right - end, delta, contig_length - end)  # REF's right flank on the forward strand
    reverse = _downstream(start - left, delta, start)  # REF's left flank on the reverse strand
    if forward is None or reverse is None:
        return None
    if max(start - left + len(ref) + forward, right - end + len(ref) + reverse) > l_max:
        return None
    return AlleleWindows(
        ref_forward=WindowSeq(contig, left, start, end, end + forward, ref, 0),
        ref_reverse=WindowSeq(contig, start - reverse, start, end, right, ref, 1),
        alt_forward=WindowSeq(contig, left, start, end, end + forward - delta, alt, 0),
        alt_reverse=WindowSeq(contig, start - reverse + delta, start, end, right, alt, 1),
    )


def _downstream(flank: int, delta: int, available: int) -> int | None:
    """Bases of REF's downstream flank such that ALT's (this minus ``delta``) fits the contig:
    ``flank``, widened to ``delta`` for an insertion longer than it, trimmed where a deletion would
    read past the contig end; None when no such length exists."""
    length = min(max(flank, delta), available - max(0, -delta))
    return length if length >= max(0, delta) else None


@dataclass
class SeqStats:
    """What one model pass says about a window: summed log-likelihood of its scored tokens, how many
    there are, and its mean final-layer embedding (D,)."""

    log_likelihood: float
    scored: int
    embedding: np.ndarray


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def window_stats(
    model, reference: Reference, windows: list[WindowSeq], device, precision: str, batch_size: int
) -> list[SeqStats]:
    """SeqStats of each window, longest first in batches of ``batch_size`` (right padding is
    invisible to a causal model)."""
    out: list = [None] * len(windows)
    ids = [w.ids(reference) for w in windows]
    order = sorted(range(len(windows)), key=lambda j: -len(ids[j]))
    for batch in batched(order, batch_size):
        tokens, lengths = pad_right([ids[j] for j in batch], PAD_ID, device)  # (B, L), (B,)
        token_logp, hidden = _forward(model, tokens, device, precision)  # (B, L-1), (B, L, D)
        t = torch.arange(1, tokens.shape[1], device=device)[None]  # (1, L-1) target positions
        first = torch.tensor([max(windows[j].upstream, 1) for j in batch])[:, None].to(device, non_blocking=True)
        ll = (token_logp * ((t >= first) & (t < lengths[:, None]))).sum(1)  # (B,)
        mean = mean_over_lengths(hidden, lengths)  # (B, D)
        ll_host, mean_host = ll.cpu().numpy(), mean.cpu().numpy()  # one copy each per batch, not one per window
        for b, j in enumerate(batch):
            out[j] = SeqStats(float(ll_host[b]), windows[j].scored, mean_host[b].astype(np.float64))
    return out


def _forward(model, tokens: torch.Tensor, device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P of each token given those before, (B, L-1); fp32 final hidden states, (B, L, D))."""
    with autocast(device, precision):
        hidden = model.hidden_states(tokens)  # (B, L, D)
    hidden = hidden.float()
    logp = torch.log_softmax(model.lm_head(hidden[:, :-1]), dim=-1)  # (B, L-1, V): predicts tokens 1..L-1
    return logp.gather(-1, tokens[:, 1:, None])[..., 0], hidden


@torch.no_grad()
def token_log_probs(model, ids: list[np.ndarray], device, precision: str = "fp32", batch_size: int = 8):
    """Per-token log P(token t | tokens before t) of each id array, (L,) float64 with NaN at t = 0."""
    out: list = [None] * len(ids)
    order = sorted(range(len(ids)), key=lambda j: -len(ids[j]))
    for batch in batched(order, batch_size):
        tokens, _ = pad_right([ids[j] for j in batch], PAD_ID, device)  # (B, L)
        token_logp, _ = _forward(model, tokens, device, precision)  # (B, L-1)
        values = token_logp.cpu().numpy().astype(np.float64)
        for b, j in enumerate(batch):  # lengths from the host: reading the device's costs a sync per row
            out[j] = np.concatenate([[np.nan], values[b, : len(ids[j]) - 1]])
    return out
