"""Pretraining data: train/validation split of a genome, random training windows, fixed validation windows.

Coordinates: every ``Interval`` is 0-based half-open [start, end) on its contig (BED style). Region text
typed by people (``X:65,000,001-70,000,000``) is 1-based inclusive and converted by formats.fasta.

The training intervals are read once into memory as uint8 token ids (one byte per base: about 3.1 GB for
a whole human genome, 70 MB for the default model's 70 Mb), so that sampling a batch is a few numpy
operations. Windows follow the official HyenaDNA data: ``seq_len`` bases (soft-masked bases uppercased,
optionally reverse-complemented) followed by [SEP]; inputs are the bases, targets the next token.
Pure numpy: the training loop turns the arrays into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genomelm.errors import InputError, UsageError
from genomelm.formats.fasta import FastaSource, Region, parse_regions, read_bed, resolve_contig
from genomelm.log import get_logger
from genomelm.tokenizer import N_ID, SEP_ID, CharTokenizer, reverse_complement_ids

log = get_logger(__name__)

_LOAD_CHUNK = 1 << 22  # bases per read while loading intervals
_COUNT_CHUNK = 1 << 23  # window starts per pass while counting usable windows
_MAX_REDRAWS = 200  # rounds of re-drawing windows with too many N before giving up
TRAIN_LABELS = ("train", "training")
VAL_LABELS = ("valid", "val", "validation")
TEST_LABELS = ("test",)


@dataclass(frozen=True)
class Interval:
    """[start, end) on ``contig``, 0-based half-open."""

    contig: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:  # 1-based inclusive, as people type regions
        return f"{self.contig}:{self.start + 1:,}-{self.end:,}"


@dataclass
class Split:
    """Training and validation intervals (0-based half-open), disjoint."""

    train: list[Interval]
    val: list[Interval]

    @property
    def train_bases(self) -> int:
        return sum(i.length for i in self.train)

    @property
    def val_bases(self) -> int:
        return sum(i.length for i in self.val)


# --------------------------------------------------------------------------- the split


def plan_split(
    lengths: dict[str, int],
    train_regions: str | None = None,
    val_regions: list[str] | None = None,
    val_contigs: list[str] | None = None,
    val_fraction: float | None = None,
) -> Split:
    """Training and validation intervals of a genome whose contigs have ``lengths``.

    Training: the BED ``train_regions`` (if its 4th column holds split labels train/valid/test, only the
    'train' rows; the 'valid' rows become the validation set unless another is given), else every contig.
    Validation: at most one of ``val_regions`` (BED paths or 1-based regions), ``val_contigs``, or
    ``val_fraction`` (the last fraction of every training interval). Validation is always removed from
    training, so overlapping specifications never leak held-out bases into training.
    """
    chosen = [x for x in (val_regions, val_contigs, val_fraction) if x]
    if len(chosen) > 1:
        raise UsageError("give at most one of --val-regions, --val-contigs and --val-fraction")
    train, labelled_val = _training_intervals(lengths, train_regions)
    if val_regions:
        val = [_interval(r, lengths) for spec in val_regions for r in parse_regions(spec)]
    elif val_contigs:
        val = [_interval(Region(c, 0, None), lengths) for c in val_contigs]
    elif val_fraction:
        val = _tails(train, val_fraction)
    else:
        val = labelled_val
    val = _merge(val)
    return Split(train=_subtract(_merge(train), val), val=val)


def _training_intervals(lengths: dict[str, int], bed: str | None) -> tuple[list[Interval], list[Interval]]:
    """(train, labelled validation) from a BED with an optional split column, or every contig."""
    if bed is None:
        return [Interval(name, 0, n) for name, n in lengths.items() if n > 0], []
    regions = read_bed(bed)
    labels = {(r.name or "").lower() for r in regions}
    if not labels & set(TRAIN_LABELS + VAL_LABELS + TEST_LABELS):
        return [_interval(r, lengths) for r in regions], []
    train = [_interval(r, lengths) for r in regions if (r.name or "").lower() in TRAIN_LABELS]
    val = [_interval(r, lengths) for r in regions if (r.name or "").lower() in VAL_LABELS]
    return train, val


def _interval(region: Region, lengths: dict[str, int]) -> Interval:
    """A Region (0-based half-open) checked against the genome, contig names aliased (chr1 = 1, chrM = MT)."""
    name = resolve_contig(region.contig, lengths)
    if name is None:
        shown = ", ".join(list(lengths)[:5]) + (", ..." if len(lengths) > 5 else "")
        raise InputError(f"contig {region.contig!r} is not in the FASTA (contigs: {shown})")
    end = lengths[name] if region.end is None else region.end
    if end > lengths[name]:
        raise InputError(f"region {region} runs past the end of contig {name} (length {lengths[name]:,})")
    return Interval(name, region.start, end)


def _tails(intervals: list[Interval], fraction: float) -> list[Interval]:
    """The last ``fraction`` of each interval (contiguous, so neighbouring windows do not leak)."""
    if not 0 < fraction < 1:
        raise UsageError(f"--val-fraction must be between 0 and 1, got {fraction}")
    tails = []
    for i in intervals:
        size = int(round(i.length * fraction))
        if size > 0:
            tails.append(Interval(i.contig, i.end - size, i.end))
    return tails


def _merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted per contig (first-seen contig order), overlapping or touching intervals merged."""
    order = {c: k for k, c in enumerate(dict.fromkeys(i.contig for i in intervals))}
    merged: list[Interval] = []
    for i in sorted((i for i in intervals if i.length > 0), key=lambda i: (order[i.contig], i.start)):
        if merged and merged[-1].contig == i.contig and i.start <= merged[-1].end:
            merged[-1] = Interval(i.contig, merged[-1].start, max(merged[-1].end, i.end))
        else:
            merged.append(i)
    return merged


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    """``intervals`` minus ``holes`` (both merged)."""
    out = []
    for i in intervals:
        pieces = [i]
        for h in (h for h in holes if h.contig == i.contig):
            pieces = [p for q in pieces for p in _cut(q, h)]
        out.extend(pieces)
    return out


def _cut(piece: Interval, hole: Interval) -> list[Interval]:
    if hole.end <= piece.start or hole.start >= piece.end:
        return [piece]
    left = Interval(piece.contig, piece.start, hole.start)
    right = Interval(piece.contig, hole.end, piece.end)
    return [p for p in (left, right) if p.length > 0]


# --------------------------------------------------------------------------- loading


def load_intervals(fasta: FastaSource, intervals: list[Interval]) -> list[np.ndarray]:
    """Token ids (uint8) of each interval; soft-masked bases come out as their uppercase ids."""
    tokenizer = CharTokenizer()
    arrays = []
    for interval in intervals:
        region = Region(interval.contig, interval.start, interval.end)
        pieces = [
            tokenizer.encode(w.sequence, record=w.contig, offset=w.start).astype(np.uint8)
            for w in fasta.windows(_LOAD_CHUNK, _LOAD_CHUNK, [region])
        ]
        arrays.append(np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8))
    return arrays


def _usable_starts(tokens: np.ndarray, length: int, max_n: int) -> int:
    """How many windows of ``length`` in ``tokens`` hold at most ``max_n`` N (chunked: bounded memory)."""
    count = 0
    for first in range(0, max(0, len(tokens) - length + 1), _COUNT_CHUNK):
        last = min(first + _COUNT_CHUNK, len(tokens) - length + 1)  # window starts [first, last)
        is_n = tokens[first : last + length - 1] == N_ID
        cumulative = np.concatenate([[0], np.cumsum(is_n, dtype=np.int64)])
        per_window = cumulative[length:] - cumulative[:-length]  # (last - first,)
        count += int(np.count_nonzero(per_window <= max_n))
    return count


def max_n_count(length: int, max_n_frac: float) -> int:
    """The most N a window of ``length`` may hold under ``--max-n-frac``."""
    return int(np.floor(max_n_frac * length + 1e-9))


# --------------------------------------------------------------------------- training windows


class WindowSampler:
    """Uniformly random training windows over the training intervals, reproducible from its state.

    Each rank of a multi-GPU run has its own stream (seeded by seed and rank). ``state()`` and
    ``set_state()`` save and restore the stream exactly (it is part of the training checkpoint).
    """

    def __init__(self, arrays: list[np.ndarray], seed: int, rank: int = 0, max_n_frac: float = 0.1, rc_aug=False):
        self.arrays = [a for a in arrays if len(a)]
        self.max_n_frac = max_n_frac
        self.rc_aug = rc_aug
        self._lengths = np.array([len(a) for a in self.arrays], dtype=np.int64)
        self._tokens = np.concatenate(self.arrays) if self.arrays else np.zeros(0, dtype=np.uint8)
        self._offsets = np.concatenate([[0], np.cumsum(self._lengths)[:-1]]).astype(np.int64)
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank])))

    @property
    def bases(self) -> int:
        return int(self._lengths.sum())

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def usable_windows(self, length: int) -> int:
        """Windows of ``length`` that pass the N filter (0 means training cannot start)."""
        max_n = max_n_count(length, self.max_n_frac)
        return sum(_usable_starts(a, length, max_n) for a in self.arrays)

    def sample(self, count: int, length: int) -> np.ndarray:
        """(count, length + 1) int64: ``length`` bases then [SEP]; input = [:, :-1], target = [:, 1:]."""
        starts = self._draw_starts(count, length)
        index = starts[:, None] + np.arange(length)[None, :]  # (count, length)
        bases = self._tokens[index].astype(np.int64)
        if self.rc_aug:
            flip = self.rng.random(count) < 0.5
            bases[flip] = reverse_complement_ids(bases[flip])
        return np.concatenate([bases, np.full((count, 1), SEP_ID, dtype=np.int64)], axis=1)

    def _draw_starts(self, count: int, length: int) -> np.ndarray:
        """Positions in the concatenated tokens of ``count`` windows inside one interval and N-filtered."""
        per_interval = np.maximum(self._lengths - length + 1, 0)  # window starts in each interval
        total = int(per_interval.sum())
        if total == 0:
            raise InputError(f"no training interval is at least {length:,} bases long")
        bounds = np.cumsum(per_interval)
        max_n = max_n_count(length, self.max_n_frac)
        starts = np.zeros(count, dtype=np.int64)
        todo = np.arange(count)
        for _ in range(_MAX_REDRAWS):
            pick = self.rng.integers(0, total, size=len(todo))
            which = np.searchsorted(bounds, pick, side="right")
            starts[todo] = self._offsets[which] + pick - (bounds[which] - per_interval[which])
            todo = todo[self._n_counts(starts[todo], length) > max_n]
            if len(todo) == 0:
                return starts
        raise InputError(f"could not draw windows of {length:,} bases with at most {max_n} N: raise --max-n-frac")

    def _n_counts(self, starts: np.ndarray, length: int) -> np.ndarray:
        index = starts[:, None] + np.arange(length)[None, :]
        return np.count_nonzero(self._tokens[index] == N_ID, axis=1)


# --------------------------------------------------------------------------- validation windows


def validation_windows(arrays: list[np.ndarray], length: int, max_n_frac: float, limit: int | None) -> np.ndarray:
    """Fixed held-out windows, (n, length + 1) uint8 (bases then [SEP]): non-overlapping tiles of
    ``length`` over the validation intervals, N-filtered, then at most ``limit`` evenly spaced ones."""
    max_n = max_n_count(length, max_n_frac)
    rows = []
    for tokens in arrays:
        for start in range(0, len(tokens) - length + 1, length):
            window = tokens[start : start + length]
            if np.count_nonzero(window == N_ID) <= max_n:
                rows.append(window)
    if limit and len(rows) > limit:
        keep = np.linspace(0, len(rows) - 1, limit).round().astype(int)
        rows = [rows[k] for k in keep]
    if not rows:
        return np.zeros((0, length + 1), dtype=np.uint8)
    windows = np.stack(rows)
    return np.concatenate([windows, np.full((len(rows), 1), SEP_ID, dtype=np.uint8)], axis=1)


def check_training_lengths(split: Split, seq_len: int) -> None:
    """A clear error when no training interval can hold one window (e.g. a genome shorter than seq_len)."""
    if not split.train:
        raise InputError("no training sequence left (the validation regions cover all of it)")
    longest = max(i.length for i in split.train)
    if longest < seq_len:
        raise InputError(f"--seq-len {seq_len:,} is longer than every training interval (longest: {longest:,} bp)")


def split_record(split: Split) -> dict:
    return {"train": [str(i) for i in split.train], "val": [str(i) for i in split.val]}
