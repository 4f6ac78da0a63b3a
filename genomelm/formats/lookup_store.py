"""Lookup arrays of a score-genome store: the llr of every SNV, directly indexed by position.

``lookup/<i>.npy`` holds contig ``i`` of the manifest's ``genome.track_contigs`` (7 digits, so any
contig name works): a float32 array of 6 columns, one row per position the run covered. Columns
0-2: the llr (mean of both strands) of the 3 alternative bases, in A, C, G, T order without the
reference base; columns 3-5: their forward-strand llr. NaN = no value (an N, outside --regions, no
context). The values are the float32 ones of the bigWig tracks, bit for bit.

Which positions a file covers: the whole contig (row = 0-based position), unless the manifest's
``genome.lookup_spans`` names the contig with sorted [start, end) spans, whose positions are the rows
one span after the other. A run over --regions covers its segments' spans only, so scoring a 2 kb
region of a 155 Mb chromosome writes 2 kb of rows, not 3.7 GB of NaN (format version 2 always
covered whole contigs).

Readers map the files (``np.load(mmap_mode='r')``): a query reads one 24-byte row, where a bigWig
read decodes every value of a compressed block. 24 bytes per covered base, uncompressed.

Writers append rows in genome order (``LookupWriter``): the bytes depend on the values alone, so a
resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import bisect
import functools
import os

import numpy as np

from genomelm.errors import FormatError, InputError

LOOKUP_DIR = "lookup"
COLUMNS = 6  # 3 alternative bases x (mean, forward)
_DTYPE = np.dtype("<f4")
_FILL_ROWS = 1 << 20  # NaN rows written at a time for gaps (bounded memory)
# ALT_BASES[r]: the alternative bases (0..3 = A, C, G, T) of reference base r, in column order.
ALT_BASES = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]], dtype=np.int64)


def lookup_file(directory: str, index: int) -> str:
    """The array of the ``index``-th track contig of a store."""
    return os.path.join(directory, LOOKUP_DIR, f"{index:07d}.npy")


def alt_column(ref_code: np.ndarray, alt_code: np.ndarray) -> np.ndarray:
    """Column (0..2) of the mean llr of ALT base ``alt_code`` at a position whose REF is ``ref_code``
    (codes 0..3 = A, C, G, T; ALT != REF); the forward llr is 3 columns further."""
    return alt_code - (alt_code > ref_code)


def lookup_rows(ref_code: np.ndarray, mean: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(n, 6) float32 rows from per-base (n, 4) mean and forward llr; ``ref_code`` (n,) in 0..3, any
    other value (N) giving a row of NaN.

    Column j (0..2) is the j-th alternative of the reference base r in A, C, G, T order (ALT_BASES[r]):
    base j while j < r, base j + 1 once r is passed. One select per column instead of masks and gathers,
    which made the lookup writer the slowest process of a score-genome run: with the strand mean, 0.244 ->
    0.082 s/Mbp (benchmarks/writer_compute.py, 2-core development CPU, 2026-12-02)."""
    rows = np.empty((len(ref_code), COLUMNS), dtype=_DTYPE)
    skipped = ref_code[:, None] <= np.arange(3)  # (n, 3): the reference base lies at or before column j
    for offset, values in ((0, np.asarray(mean, _DTYPE)), (3, np.asarray(forward, _DTYPE))):
        for j in range(3):
            np.copyto(rows[:, offset + j], np.where(skipped[:, j], values[:, j + 1], values[:, j]))
    rows[(ref_code < 0) | (ref_code > 3)] = np.nan
    return rows


def _write_array(handle, rows: np.ndarray) -> None:
    """Write (n, 6) rows as float32 in C order straight from the array's memory (no bytes copy)."""
    handle.write(memoryview(np.ascontiguousarray(rows, dtype=_DTYPE)).cast("B"))


@functools.cache
def _nan_rows() -> np.ndarray:
    """_FILL_ROWS rows of NaN, made once per process (gaps and contigs without scores are filled with them)."""
    rows = np.full((_FILL_ROWS, COLUMNS), np.nan, dtype=_DTYPE)
    rows.flags.writeable = False
    return rows


Span = tuple[int, int]  # [start, end) of 0-based positions


def covered_rows(spans: list[Span]) -> int:
    return sum(end - start for start, end in spans)


class LookupWriter:
    """The lookup arrays of ``contigs`` ((name, length), the track contigs in order), written in order::

        with LookupWriter(directory, contigs, spans) as writer:
            writer.add("chr1", start, rows)   # (n, 6) rows of positions [start, start + n), 0-based

    ``spans``: per contig (in order), the sorted [start, end) spans the file covers; None = whole
    contigs. Covered positions never added are NaN. ``close()`` completes every file.
    """

    def __init__(self, directory: str, contigs: list[tuple[str, int]], spans: list[list[Span]] | None = None):
        self.directory, self.contigs = directory, contigs
        self.spans = spans if spans is not None else [[(0, length)] for _, length in contigs]
        if len(self.spans) != len(contigs):
            raise ValueError(f"{len(self.spans)} span lists for {len(contigs)} contigs")
        # span starts per contig: add() and _fill() find their spans by bisection (a BED of 20,000
        # genes makes 20,000 spans and as many segments on one contig: a scan per segment is quadratic)
        self._starts = [[start for start, _ in contig_spans] for contig_spans in self.spans]
        os.makedirs(os.path.join(directory, LOOKUP_DIR), exist_ok=True)
        self._index = -1  # contig being written
        self._handle = None
        self._cursor = 0  # next position of that contig

    def add(self, contig: str, start: int, rows: np.ndarray) -> None:
        while self._index < 0 or self.contigs[self._index][0] != contig:
            self._next_contig()
        span = self._span_at(start)
        if span < 0 or start + len(rows) > self.spans[self._index][span][1]:
            raise ValueError(f"lookup rows {contig}:{start}-{start + len(rows)} lie outside the covered spans")
        self._fill(start)
        _write_array(self._handle, rows)
        self._cursor = start + len(rows)

    def _next_contig(self) -> None:
        if self._handle is not None:
            self._fill(self.contigs[self._index][1])
            self._handle.close()
        self._index += 1
        if self._index >= len(self.contigs):
            raise ValueError("lookup rows added out of genome order")
        self._handle = open(lookup_file(self.directory, self._index), "wb")
        shape = (covered_rows(self.spans[self._index]), COLUMNS)
        np.lib.format.write_array_header_1_0(
            self._handle, {"descr": _DTYPE.str, "fortran_order": False, "shape": shape}
        )
        self._cursor = 0

    def _fill(self, end: int) -> None:
        """NaN rows for the covered positions from the cursor up to ``end`` (exclusive)."""
        if end < self._cursor:
            raise ValueError("lookup rows added out of genome order")
        spans = self.spans[self._index]
        for span_start, span_end in spans[max(0, self._span_at(self._cursor)) :]:
            if span_start >= end:
                break
            low, high = max(self._cursor, span_start), min(end, span_end)
            for first in range(low, high, _FILL_ROWS):
                _write_array(self._handle, _nan_rows()[: min(_FILL_ROWS, high - first)])
        self._cursor = end

    def _span_at(self, position: int) -> int:
        """Index of the current contig's last span starting at or before ``position`` (-1: none)."""
        return bisect.bisect_right(self._starts[self._index], position) - 1

    def close(self) -> None:
        while self._index < len(self.contigs) - 1:
            self._next_contig()
        if self._handle is not None:
            self._fill(self.contigs[self._index][1])
            self._handle.close()
            self._handle = None

    def __enter__(self) -> LookupWriter:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.close()
        elif self._handle is not None:
            self._handle.close()


class LookupArray:
    """One contig's lookup rows by position, whatever spans its file covers."""

    def __init__(self, rows: np.ndarray, spans: list[Span] | None):
        self.rows = rows
        self._whole = spans is None
        if not self._whole:
            bounds = np.array(spans, dtype=np.int64).reshape(-1, 2)
            self._starts, self._ends = bounds[:, 0], bounds[:, 1]
            self._offsets = np.concatenate([[0], np.cumsum(self._ends - self._starts)[:-1]]).astype(np.int64)

    def take(self, pos: np.ndarray) -> np.ndarray:
        """(K, 6) float32 rows of 0-based positions ``pos`` (K,); NaN rows where the file covers none."""
        if self._whole:
            return self.rows[pos]
        pos = np.asarray(pos, dtype=np.int64)
        span = np.searchsorted(self._starts, pos, side="right") - 1
        inside = (span >= 0) & (pos < self._ends[np.maximum(span, 0)])
        out = np.full((len(pos), COLUMNS), np.nan, dtype=_DTYPE)
        hit = span[inside]
        out[inside] = self.rows[self._offsets[hit] + pos[inside] - self._starts[hit]]
        return out


def open_lookup(directory: str, index: int, length: int, spans: list[Span] | None = None) -> LookupArray:
    """The lookup rows of the ``index``-th track contig (``length`` bases; ``spans``: those its file
    covers, None = all), memory-mapped read-only."""
    path = lookup_file(directory, index)
    try:
        array = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise InputError(f"lookup array not found: {path} (an incomplete score-genome store)") from None
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable lookup array ({exc})") from None
    rows = length if spans is None else covered_rows(spans)
    if array.shape != (rows, COLUMNS) or array.dtype != _DTYPE:
        raise FormatError(f"{path}: lookup array of shape {array.shape} {array.dtype}, expected ({rows}, 6) float32")
    return LookupArray(array, spans)
