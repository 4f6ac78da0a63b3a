"""bigWig tracks (through pyBigWig, a binding of libBigWig): per-base float values, one file per track.

Coordinates are 0-based half-open, as in the bigWig format itself. A position without a value is
simply not written (a gap); readers return NaN there.

Writing is streamed in genome order (the contig order of the header) with bounded memory: values
are buffered only up to the next multiple of ``FLUSH_BASES`` and handed to libBigWig at those fixed
positions and at gaps, so the file's bytes depend on the values alone, not on how they arrived
(an interrupted and resumed run writes the same file as an uninterrupted one).
"""

from __future__ import annotations

import os

import numpy as np

from genomelm.errors import FormatError, InputError, UsageError

FLUSH_BASES = 1 << 16  # values are handed to libBigWig in runs cut at multiples of this position
MAX_CONTIGS = 50_000  # pyBigWig finds a contig by a linear search per call: many more become quadratic
MAX_NAME_BYTES = 255  # UCSC tools keep contig names in fixed 255-byte buffers


def _pybigwig():
    try:
        import pyBigWig
    except ImportError:  # a declared dependency; an environment without it gets an install hint
        raise UsageError("bigWig tracks need pyBigWig: pip install pyBigWig") from None
    return pyBigWig


def check_track_contigs(contigs: list[tuple[str, int]]) -> None:
    """UsageError when a bigWig header cannot hold these (name, length) contigs well."""
    if not contigs:
        raise UsageError("nothing to score: no contig with sequence in the requested regions")
    if len(contigs) > MAX_CONTIGS:
        raise UsageError(
            f"{len(contigs):,} contigs to score: bigWig writing slows down quadratically beyond "
            f"{MAX_CONTIGS:,}; score the larger contigs with --regions (a BED file), or several runs"
        )
    for name, _ in contigs:
        if len(name.encode()) > MAX_NAME_BYTES or any(c.isspace() for c in name):
            raise UsageError(f"contig name {name[:40]!r}...: bigWig needs names without spaces, <= 255 bytes")


def finite_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs of consecutive finite values in a 1-D array."""
    finite = np.isfinite(values).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], finite, [0]])))  # alternating run starts / ends
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


class BigWigWriter:
    """One bigWig file, values added in genome order::

        with BigWigWriter("llr_A.bw", [("chr1", 248956422), ...]) as writer:
            writer.add("chr1", 0, values)   # float array, NaN = no value at that position

    ``zoom_levels`` summary levels are built by libBigWig when the file is closed (a second pass
    over the data: browsers need them for wide views; 0 skips them).
    """

    def __init__(self, path: str | os.PathLike, contigs: list[tuple[str, int]], zoom_levels: int = 0):
        self.path = os.fspath(path)
        self._file = _pybigwig().open(self.path, "w")
        if self._file is None:
            raise InputError(f"cannot create bigWig file {self.path}")
        if self._file.addHeader([(name, int(length)) for name, length in contigs], maxZooms=zoom_levels) is not None:
            raise FormatError(f"{self.path}: libBigWig refused the header")
        self._contig: str | None = None
        self._start = 0  # first position of the pending run
        self._pending: list[np.ndarray] = []
        self._pending_length = 0

    def add(self, contig: str, start: int, values: np.ndarray) -> None:
        """Values of positions [start, start + len(values)) of ``contig`` (0-based); NaN = no value."""
        values = np.asarray(values, dtype=np.float32)
        for lo, hi in finite_runs(values):
            self._extend(contig, start + lo, values[lo:hi])

    def _extend(self, contig: str, start: int, run: np.ndarray) -> None:
        if contig != self._contig or start != self._start + self._pending_length:
            self._flush()
            self._contig, self._start = contig, start
        while run.size:
            room = FLUSH_BASES - (self._start + self._pending_length) % FLUSH_BASES
            self._pending.append(run[:room])
            self._pending_length += min(room, run.size)
            run = run[room:]
            if self._pending_length and (self._start + self._pending_length) % FLUSH_BASES == 0:
                self._flush()

    def _flush(self) -> None:
        if self._pending_length:
            values = np.concatenate(self._pending).astype(np.float64)
            self._file.addEntries(self._contig, self._start, values=values, span=1, step=1)
        self._start += self._pending_length
        self._pending, self._pending_length = [], 0

    def close(self) -> None:
        if self._file is not None:
            self._flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> BigWigWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class TrackReader:
    """Random access to the values of one bigWig file (NaN where there is none)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise InputError(f"bigWig track not found: {self.path}")
        self._file = _pybigwig().open(self.path)
        if self._file is None or not self._file.isBigWig():
            raise FormatError(f"{self.path}: not a bigWig file")
        self.contigs: dict[str, int] = dict(self._file.chroms())

    def values(self, contig: str, start: int, end: int) -> np.ndarray:
        """float32 values of [start, end) (0-based half-open), NaN where none; contig not in the file -> all NaN."""
        if end <= start or contig not in self.contigs:
            return np.full(max(end - start, 0), np.nan, dtype=np.float32)
        return np.asarray(self._file.values(contig, start, end, numpy=True), dtype=np.float32)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TrackReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
