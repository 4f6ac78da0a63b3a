"""bigWig tracks: per-base float values, one file per track.

Coordinates are 0-based half-open, as in the bigWig format itself. A position without a value is
simply not written (a gap); readers return NaN there.

Writing (formats.bigwig, blocks compressed on threads) is streamed in genome order (the contig
order of the header) with bounded memory; the file's bytes depend on the values alone, not on how
they arrived (an interrupted and resumed run writes the same file as an uninterrupted one).
Reading goes through pyBigWig, a binding of libBigWig.
"""

from __future__ import annotations

import os

import numpy as np

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.bigwig import BigWigFileWriter

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
    for name, length in contigs:
        if length >= 1 << 32:  # bigWig positions are 32-bit
            raise UsageError(f"contig {name} is {length:,} bases long: bigWig holds contigs below 2^32 bases")
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

    ``zoom_levels`` summary levels (formats.bigwig.zoom_reductions) are built as the values arrive
    (browsers need them for wide views; 0 skips them). ``threads`` compress the file's blocks.
    """

    def __init__(self, path: str | os.PathLike, contigs: list[tuple[str, int]], zoom_levels: int = 0, threads: int = 1):
        self.path = os.fspath(path)
        self._ids = {name: i for i, (name, _) in enumerate(contigs)}
        try:
            self._file = BigWigFileWriter(self.path, contigs, zoom_levels, threads)
        except OSError as exc:
            raise InputError(f"cannot create bigWig file {self.path}: {exc.strerror or exc}") from None

    def add(self, contig: str, start: int, values: np.ndarray) -> None:
        """Values of positions [start, start + len(values)) of ``contig`` (0-based); NaN = no value."""
        values = np.asarray(values, dtype=np.float32)
        chrom = self._ids[contig]
        for lo, hi in finite_runs(values):
            self._file.add_run(chrom, start + lo, values[lo:hi])

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        """Leave the file unfinished (a cancelled run: its work directory is discarded)."""
        self._file.abort()

    def __enter__(self) -> BigWigWriter:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


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
