"""The columns of a block of VCF record lines, found at once with numpy instead of a split per line.

A batch of records as htslib writes them (``str(record)``: CHROM, POS, ID, REF, ALT, QUAL, FILTER,
INFO, then FORMAT and the samples when the file has samples; tab-separated; each line ending in one
newline), joined and encoded, is one bytes buffer. ``RecordLines`` finds the byte span of each line's
first eight columns with a few numpy calls over that buffer, and reads a column of every line at once
(its first byte, its bytes padded to a width, its value as a decimal number, whether it holds a string).

Every offset is a byte offset into the buffer, 0-based; spans are half-open. A line whose tab count is
not that of a well-formed line of its file (a tab inside a value, which only a BCF input can carry) is
not ``ok``: its columns are empty, and a caller hands such a record to the code that does not read its
line. No torch here (layer rule).
"""

from __future__ import annotations

import numpy as np

TAB, NEWLINE = 9, 10
_MAX_DIGITS = 18  # a longer number does not fit int64 for sure: read as not a number
_COLUMNS = 8  # CHROM .. INFO


def tabs_per_line(samples: int) -> int:
    """The tabs of a well-formed record line of a file with ``samples`` samples (htslib writes FORMAT
    and every sample column, as '.' when the record has none, as soon as the file has a sample)."""
    return _COLUMNS - 1 + (1 + samples if samples else 0)


class RecordLines:
    """The first eight columns of each line of ``data`` (lines ending at ``ends``, each with ``tabs`` tabs
    when well formed; ``whole``: false for a line known to be broken): column ``j`` of line ``r`` is
    ``data[begin[r, j]:end[r, j]]``. Build with ``of``."""

    def __init__(self, data: bytes, ends: np.ndarray, tabs: int, whole: np.ndarray | None = None):
        self.data = data  # the lines, encoded
        ends = ends.astype(np.int64)
        self.array = np.frombuffer(data, np.uint8)
        self.line_end = ends  # (R,) the newline of each line
        self.line_start = np.concatenate([[0], ends + 1])[:-1].astype(np.int64)  # (R,)
        at = np.flatnonzero(self.array == TAB)
        first = np.searchsorted(at, self.line_start)  # (R,) index in ``at`` of each line's first tab
        self.ok = np.diff(np.append(first, len(at))) == tabs  # (R,)
        if whole is not None:
            self.ok &= whole
        self.begin = np.repeat(self.line_start[:, None], _COLUMNS, axis=1)  # (R, 8); not ok: empty columns
        self.end = self.begin.copy()
        rows = np.flatnonzero(self.ok)
        inner = at[first[rows, None] + np.arange(_COLUMNS - 1)]  # (ok, 7): the tabs ending CHROM .. FILTER
        last = at[first[rows] + _COLUMNS - 1] if tabs >= _COLUMNS else ends[rows]  # INFO's end
        self.end[rows] = np.column_stack([inner, last])
        self.begin[rows, 1:] = inner + 1

    @classmethod
    def of(cls, lines: list[str], tabs: int) -> RecordLines:
        """``lines`` (each ending in its one newline, as ``str(record)``), joined and encoded as written
        (UTF-8, surrogates back to the bytes they stand for). A line that holds another newline (a value
        of a BCF record can) is not ``ok``."""
        data = "".join(lines).encode("utf-8", "surrogateescape")
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == NEWLINE)
        if len(ends) == len(lines):
            return cls(data, ends, tabs)
        sizes = [len(line.encode("utf-8", "surrogateescape")) for line in lines]  # rare: find each line's end
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        whole = np.diff(np.searchsorted(ends, bounds)) == 1  # (R,) one newline: its own
        return cls(data, bounds[1:] - 1, tabs, whole)

    def __len__(self) -> int:
        return len(self.line_end)

    def width(self, j: int) -> np.ndarray:
        """(R,) bytes in column ``j``."""
        return self.end[:, j] - self.begin[:, j]

    def padded(self, j: int, width: int) -> np.ndarray:
        """(R, width) uint8: the first ``width`` bytes of column ``j``, 0 past its end."""
        index = self.begin[:, j, None] + np.arange(width)  # (R, width)
        inside = index < self.end[:, j, None]
        return np.where(inside, self.array[np.minimum(index, max(len(self.array) - 1, 0))], 0).astype(np.uint8)

    def unsigned(self, j: int) -> np.ndarray:
        """(R,) int64: column ``j`` read as a decimal number of digits only; -1 where it is not one (empty,
        another character, more than 18 digits)."""
        width = self.width(j)
        digits = np.clip(width.max(initial=0), 1, _MAX_DIGITS)
        index = self.end[:, j, None] - digits + np.arange(digits)  # (R, digits): right-aligned
        used = np.arange(digits) >= digits - width[:, None]
        value = self.array[np.clip(index, 0, max(len(self.array) - 1, 0))].astype(np.int64) - ord("0")
        good = ((value >= 0) & (value <= 9) | ~used).all(axis=1) & (width > 0) & (width <= _MAX_DIGITS)
        number = (np.where(used, value, 0) * 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)).sum(axis=1)
        return np.where(good, number, -1)

    def runs(self, j: int) -> tuple[np.ndarray, list[str]]:
        """Lines where column ``j`` differs from the line before (the first line included), and that
        column's text there (decoded as the records were: UTF-8, other bytes as surrogates)."""
        width = self.width(j)
        text = self.padded(j, int(width.max(initial=0)))
        change = np.ones(len(self), dtype=bool)
        change[1:] = (width[1:] != width[:-1]) | (text[1:] != text[:-1]).any(axis=1)
        starts = np.flatnonzero(change)
        spans = zip(self.begin[starts, j].tolist(), self.end[starts, j].tolist())
        return starts, [self.data[b:e].decode("utf-8", "surrogateescape") for b, e in spans]

    def holds(self, j: int, needle: bytes) -> np.ndarray:
        """(R,) bool: column ``j`` holds ``needle`` (a string without tab or newline)."""
        found, at = [], self.data.find(needle)
        while at >= 0:
            found.append(at)
            at = self.data.find(needle, at + 1)
        out = np.zeros(len(self), dtype=bool)
        if found:
            at = np.array(found)
            rows = np.searchsorted(self.line_start, at, side="right") - 1
            inside = (at >= self.begin[rows, j]) & (at + len(needle) <= self.end[rows, j])
            out[rows[inside]] = True
        return out


def spliced(data: bytes, starts: np.ndarray, ends: np.ndarray, *inserts: list[bytes]) -> bytes:
    """``data`` with each span [starts[n], ends[n]) (sorted, not overlapping) replaced by ``inserts[0][n]
    + inserts[1][n] + ...``: one join over slices, not a copy of the text per edit."""
    bounds = [0, *np.ravel(np.column_stack([starts, ends])).tolist(), len(data)]
    pieces: list[bytes | None] = [None] * ((1 + len(inserts)) * len(starts) + 1)
    pieces[:: 1 + len(inserts)] = [data[a:b] for a, b in zip(bounds[::2], bounds[1::2])]
    for n, insert in enumerate(inserts):
        pieces[1 + n :: 1 + len(inserts)] = insert
    return b"".join(pieces)
