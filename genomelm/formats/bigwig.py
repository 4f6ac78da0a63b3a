"""The bigWig file format, written: fixed-step float32 sections compressed on worker threads.

Why our own writer: libBigWig (through pyBigWig) compresses every block with zlib on the calling
thread, and score-genome's per-base tracks are 4 bytes a base of nearly incompressible floats: one
libBigWig file is written at ~3.5 Mbp/s on the H200 host's cores, below what the model scores. Here
the blocks are compressed by a pool of threads (zlib releases the GIL) and written in order. Reading
stays with pyBigWig (formats/tracks.TrackReader), which is also what the tests check files with.

Layout (the UCSC bigWig format, version 4, all little-endian; Kent et al. 2010, supplement)::

    header (64 bytes) | zoom headers (24 bytes each) | total summary (40) | chromosome B+ tree
    | section count (u64) | data sections (zlib) | R-tree over the sections
    | per zoom level: record count (u32), zoom blocks (zlib), R-tree over the blocks | magic

Chromosome ids follow the order given (the genome's order, which is the order values arrive in);
the B+ tree holds the names sorted, as readers that search it (the UCSC tools) need.

The bytes depend on the values alone, not on how they arrived or on the thread count: sections are
cut at multiples of ``SECTION_BASES`` and at gaps, and every sum is taken in one fixed order.
"""

from __future__ import annotations

import collections
import os
import struct
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

MAGIC = 0x888FFC26
CHROM_TREE_MAGIC = 0x78CA8C91
INDEX_MAGIC = 0x2468ACE0
VERSION = 4
SECTION_BASES = 4096  # values per data section (one zlib block), cut at multiples of this position
TREE_BLOCK = 256  # items per node of the B+ tree and the R-trees (as the UCSC tools)
ZOOM_BLOCK = 512  # zoom records per zlib block
FIRST_REDUCTION = 64  # bases per record of the finest zoom level; a divisor of SECTION_BASES
ZOOM_STEP = 4  # each zoom level summarises 4 times more bases than the one below it
MAX_ZOOM_LEVELS = 10
# zlib level: 1 compresses an llr track 1.8x faster than the default 6 (0.090 vs 0.158 s/Mbp on one thread), to
# files 2.4 % larger (benchmarks/bigwig_writer.py --store, chrX llr_A values, development CPU, 2026-12-02)
COMPRESSION = 1
_FIXED_STEP = 3  # section type

_HEADER = struct.Struct("<IHHQQQHHQQIQ")  # 64 bytes
_ZOOM_HEADER = struct.Struct("<IIQQ")
_SUMMARY = struct.Struct("<Qdddd")
_SECTION = struct.Struct("<IIIIIBBH")  # chrom id, start, end, step, span, type, reserved, item count
_TREE_HEADER = struct.Struct("<IIIIQQ")  # B+ tree: magic, block size, key size, value size, items, reserved
_INDEX_HEADER = struct.Struct("<IIQIIIIQII")  # R-tree: magic, block size, items, bounds, end of data, per slot
_NODE = struct.Struct("<BBH")  # is leaf, reserved, item count

# one row per indexed block: its (chrom, base) bounds, where it is and how long
_BLOCK = np.dtype(
    [("start_chrom", "<u4"), ("start", "<u4"), ("end_chrom", "<u4"), ("end", "<u4"), ("offset", "<u8"), ("size", "<u8")]
)  # a zoom block may span contigs
_ZOOM_RECORD = np.dtype(
    [("chrom", "<u4"), ("start", "<u4"), ("end", "<u4"), ("count", "<u4")]
    + [(name, "<f4") for name in ("min", "max", "sum", "sumsq")]
)


def zoom_reductions(levels: int) -> list[int]:
    """Bases per record of each zoom level, finest first."""
    return [FIRST_REDUCTION * ZOOM_STEP**level for level in range(levels)]


class BigWigFileWriter:
    """One bigWig file of per-base values, written in genome order::

        writer = BigWigFileWriter(path, [("chr1", 248956422), ...], zoom_levels=0, threads=2)
        writer.add_run(0, 10_000, values)  # chrom id (index in contigs), start, finite float32 values
        writer.close()

    Runs must come in (chrom id, position) order and must not overlap.
    """

    def __init__(self, path: str, contigs: list[tuple[str, int]], zoom_levels: int = 0, threads: int = 1):
        if not 0 <= zoom_levels <= MAX_ZOOM_LEVELS:
            raise ValueError(f"zoom levels must be 0-{MAX_ZOOM_LEVELS}, got {zoom_levels}")
        self.path = path
        self.contigs = [(name, int(length)) for name, length in contigs]
        self._file = open(path, "w+b")
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads))
        self._max_in_flight = 2 * max(1, threads)
        self._in_flight: collections.deque[Future] = collections.deque()
        self._zooms = [_ZoomLevel(path, level, size) for level, size in enumerate(zoom_reductions(zoom_levels))]
        self._pending = _PendingSection()
        self._batch: list[tuple[int, int, np.ndarray]] = []
        self._blocks: list[tuple[int, int, int, int, int, int]] = []
        self._summary = _Summary()
        self._largest_block = 0
        self._reserve_front()

    # ------------------------------------------------------------------ values in

    def add_run(self, chrom: int, start: int, values: np.ndarray) -> None:
        """Finite float32 values of positions [start, start + len(values)) of contig ``chrom``."""
        if not self._pending.continues(chrom, start):
            self._queue(self._pending.take())
        while values.size:
            room = SECTION_BASES - start % SECTION_BASES  # to the next section boundary
            head, values = values[:room], values[room:]
            self._pending.append(chrom, start, head)
            start += head.size
            if self._pending.length and (self._pending.end % SECTION_BASES) == 0:
                self._queue(self._pending.take())

    def _queue(self, section: tuple[int, int, np.ndarray] | None) -> None:
        if section is None:
            return
        self._batch.append(section)
        if len(self._batch) >= 16:  # one thread task per 64 kb: per-task overhead stays small
            self._submit_batch()

    def _submit_batch(self) -> None:
        if not self._batch:
            return
        self._in_flight.append(self._pool.submit(_pack_sections, self._batch, FIRST_REDUCTION if self._zooms else 0))
        self._batch = []
        while len(self._in_flight) > self._max_in_flight:
            self._write_packed(self._in_flight.popleft().result())

    def _write_packed(self, packed: list[_PackedSection]) -> None:
        for section in packed:
            offset = self._file.tell()
            self._file.write(section.compressed)
            self._blocks.append(
                (section.chrom, section.start, section.chrom, section.end, offset, len(section.compressed))
            )
            self._largest_block = max(self._largest_block, section.raw_size)
            self._summary.add(section.stats)
            if self._zooms:
                self._add_zoom_records(section.zoom)

    def _add_zoom_records(self, records: np.ndarray) -> None:
        for zoom in self._zooms:
            records = zoom.add(records)  # each level gets the records of the level below, merged

    # ------------------------------------------------------------------ file layout

    def _reserve_front(self) -> None:
        """Header, zoom headers and total summary are filled in at close; the chromosome tree now."""
        self._file.write(bytes(_HEADER.size + _ZOOM_HEADER.size * len(self._zooms) + _SUMMARY.size))
        self._chrom_tree_offset = self._file.tell()
        _write_chrom_tree(self._file, self.contigs)
        self._data_offset = self._file.tell()
        self._file.write(bytes(8))  # the section count, known at close

    def close(self) -> None:
        """Write the remaining sections, the indexes and the zoom levels; then the header."""
        if self._file is None:
            return
        self._queue(self._pending.take())
        self._submit_batch()
        while self._in_flight:
            self._write_packed(self._in_flight.popleft().result())
        self._pool.shutdown()
        blocks = np.array(self._blocks, dtype=_BLOCK)
        index_offset = self._file.tell()
        _write_rtree(self._file, blocks, index_offset, items_per_slot=1)
        zoom_headers = self._write_zooms() if self._blocks else []
        self._largest_block = max([self._largest_block, *(zoom.largest_block for zoom in self._zooms)])
        self._file.write(struct.pack("<I", MAGIC))
        self._write_front(len(blocks), index_offset, zoom_headers)
        self._file.close()
        self._file = None
        for zoom in self._zooms:  # a file without values has no zoom levels: their temporary files go
            zoom.discard()

    def _write_zooms(self) -> list[bytes]:
        records = np.empty(0, dtype=_WIDE_RECORD)
        for zoom in self._zooms:  # the last, still open bins of each level complete the next level
            records = zoom.finish(records)
        return [zoom.write(self._file) for zoom in self._zooms]

    def _write_front(self, sections: int, index_offset: int, zoom_headers: list[bytes]) -> None:
        summary_offset = _HEADER.size + _ZOOM_HEADER.size * len(zoom_headers)
        self._file.seek(0)
        self._file.write(
            _HEADER.pack(
                MAGIC, VERSION, len(zoom_headers), self._chrom_tree_offset, self._data_offset, index_offset,
                0, 0, 0, summary_offset, self._largest_block, 0,
            )
        )  # fmt: skip
        self._file.write(b"".join(zoom_headers))
        self._file.write(self._summary.packed())
        self._file.seek(self._data_offset)
        self._file.write(struct.pack("<Q", sections))

    def abort(self) -> None:
        """Stop without finishing the file (it is left incomplete, for the caller to discard)."""
        if self._file is not None:
            self._pool.shutdown(cancel_futures=True)
            self._file.close()
            self._file = None
        for zoom in self._zooms:
            zoom.discard()


class _PendingSection:
    """Values of the section being gathered (it ends at a multiple of SECTION_BASES or at a gap)."""

    def __init__(self):
        self.chrom, self.start, self.length, self.parts = -1, 0, 0, []

    @property
    def end(self) -> int:
        return self.start + self.length

    def continues(self, chrom: int, start: int) -> bool:
        return not self.length or (chrom == self.chrom and start == self.end)

    def append(self, chrom: int, start: int, values: np.ndarray) -> None:
        if not self.length:
            self.chrom, self.start = chrom, start
        self.parts.append(values)
        self.length += values.size

    def take(self) -> tuple[int, int, np.ndarray] | None:
        if not self.length:
            return None
        section = (self.chrom, self.start, np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0])
        self.__init__()
        return section


# --------------------------------------------------------------------------- worker threads


class _PackedSection:
    """A data section ready to write: its compressed bytes, statistics and finest zoom records."""

    __slots__ = ("chrom", "start", "end", "compressed", "raw_size", "stats", "zoom")

    def __init__(self, chrom: int, start: int, values: np.ndarray, reduction: int):
        self.chrom, self.start, self.end = chrom, start, start + values.size
        raw = _SECTION.pack(chrom, start, self.end, 1, 1, _FIXED_STEP, 0, values.size) + values.astype("<f4").tobytes()
        self.compressed = zlib.compress(raw, COMPRESSION)
        self.raw_size = len(raw)
        wide = values.astype(np.float64)
        # numpy's pairwise sums: the same bits for the same values, whatever the memory alignment
        sums = float(wide.sum()), float(np.square(wide).sum())
        self.stats = (values.size, float(wide.min()), float(wide.max()), *sums)
        self.zoom = _bin_records(chrom, start, wide, reduction) if reduction else None


def _pack_sections(sections: list[tuple[int, int, np.ndarray]], reduction: int) -> list[_PackedSection]:
    return [_PackedSection(chrom, start, values, reduction) for chrom, start, values in sections]


def _bin_records(chrom: int, start: int, values: np.ndarray, reduction: int) -> np.ndarray:
    """Zoom records (float64 statistics) of consecutive values, one per ``reduction``-aligned bin."""
    positions = start + np.arange(values.size)
    cuts = np.flatnonzero(np.diff(positions // reduction)) + 1
    firsts = np.concatenate([[0], cuts])
    lasts = np.concatenate([cuts, [values.size]]) - 1
    records = np.empty(len(firsts), dtype=_WIDE_RECORD)
    records["chrom"] = chrom
    records["start"] = positions[firsts]
    records["end"] = positions[lasts] + 1
    records["count"] = lasts - firsts + 1
    records["min"] = np.minimum.reduceat(values, firsts)
    records["max"] = np.maximum.reduceat(values, firsts)
    records["sum"] = np.add.reduceat(values, firsts)
    records["sumsq"] = np.add.reduceat(values * values, firsts)
    return records


# zoom records while they are merged: float64 statistics, stored as float32 when written
_WIDE_RECORD = np.dtype(
    [("chrom", "<u4"), ("start", "<u8"), ("end", "<u8"), ("count", "<u8")]
    + [(name, "<f8") for name in ("min", "max", "sum", "sumsq")]
)


class _Summary:
    """Count, min, max, sum and sum of squares of every value, added section by section."""

    def __init__(self):
        self.count, self.min, self.max, self.sum, self.sumsq = 0, np.inf, -np.inf, 0.0, 0.0

    def add(self, stats: tuple) -> None:
        count, low, high, total, squares = stats
        self.count += count
        self.min, self.max = min(self.min, low), max(self.max, high)
        self.sum += total
        self.sumsq += squares

    def packed(self) -> bytes:
        if not self.count:
            return _SUMMARY.pack(0, 0.0, 0.0, 0.0, 0.0)
        return _SUMMARY.pack(self.count, self.min, self.max, self.sum, self.sumsq)


# --------------------------------------------------------------------------- zoom levels


class _ZoomLevel:
    """The records of one zoom level, compressed into a temporary file as they complete."""

    def __init__(self, path: str, level: int, reduction: int):
        self.reduction = reduction
        self._temp_path = f"{path}.zoom{level}.tmp"
        self._temp = open(self._temp_path, "w+b")
        self._pending = np.empty(0, dtype=_WIDE_RECORD)  # the last bin, which may still grow
        self._ready: list[np.ndarray] = []
        self._ready_count = 0
        self._records = 0
        self._blocks: list[tuple[int, int, int, int, int, int]] = []
        self.largest_block = 0

    def add(self, finer: np.ndarray) -> np.ndarray:
        """Merge the records of the level below into this level's bins; returns the completed ones
        (they feed the next level)."""
        merged = _merge_bins(np.concatenate([self._pending, finer]), self.reduction)
        completed, self._pending = merged[:-1], merged[-1:]
        self._keep(completed)
        return completed

    def _keep(self, records: np.ndarray) -> None:
        if records.size:
            self._ready.append(records)
            self._ready_count += records.size
        while self._ready_count >= ZOOM_BLOCK:
            self._write_block(ZOOM_BLOCK)

    def _write_block(self, count: int) -> None:
        ready = np.concatenate(self._ready)
        block, rest = ready[:count], ready[count:]
        self._ready, self._ready_count = ([rest] if rest.size else []), rest.size
        raw = _narrow(block).tobytes()
        compressed = zlib.compress(raw, COMPRESSION)
        first, last = block[0], block[-1]
        bounds = (int(first["chrom"]), int(first["start"]), int(last["chrom"]), int(last["end"]))
        self._blocks.append((*bounds, self._temp.tell(), len(compressed)))
        self._temp.write(compressed)
        self._records += block.size
        self.largest_block = max(self.largest_block, len(raw))

    def finish(self, finer: np.ndarray) -> np.ndarray:
        """The last records of the level below merged in, every bin closed; returns all of them."""
        merged = _merge_bins(np.concatenate([self._pending, finer]), self.reduction)
        self._pending = merged[:0]
        self._keep(merged)
        return merged

    def write(self, file) -> bytes:
        """Append this level's records and index to ``file``; returns its zoom header."""
        if self._ready_count:
            self._write_block(self._ready_count)
        data_offset = file.tell()
        file.write(struct.pack("<I", self._records))
        self._temp.seek(0)
        while chunk := self._temp.read(1 << 24):
            file.write(chunk)
        blocks = np.array(self._blocks, dtype=_BLOCK)
        blocks["offset"] += data_offset + 4
        index_offset = file.tell()
        _write_rtree(file, blocks, index_offset, items_per_slot=ZOOM_BLOCK)
        self.discard()
        return _ZOOM_HEADER.pack(self.reduction, 0, data_offset, index_offset)

    def discard(self) -> None:
        if not self._temp.closed:
            self._temp.close()
        if os.path.exists(self._temp_path):
            os.unlink(self._temp_path)


def _merge_bins(records: np.ndarray, reduction: int) -> np.ndarray:
    """Records of the same contig and ``reduction``-aligned bin merged into one (inputs sorted)."""
    if records.size <= 1:
        return records
    keys = records["start"] // reduction
    firsts = np.flatnonzero(
        np.concatenate([[True], (np.diff(keys) != 0) | (np.diff(records["chrom"].astype(np.int64)) != 0)])
    )
    lasts = np.concatenate([firsts[1:], [records.size]]) - 1
    merged = np.empty(len(firsts), dtype=_WIDE_RECORD)
    merged["chrom"] = records["chrom"][firsts]
    merged["start"] = records["start"][firsts]
    merged["end"] = records["end"][lasts]
    merged["count"] = np.add.reduceat(records["count"], firsts)
    merged["min"] = np.minimum.reduceat(records["min"], firsts)
    merged["max"] = np.maximum.reduceat(records["max"], firsts)
    merged["sum"] = np.add.reduceat(records["sum"], firsts)
    merged["sumsq"] = np.add.reduceat(records["sumsq"], firsts)
    return merged


def _narrow(records: np.ndarray) -> np.ndarray:
    """The on-disk zoom records (32 bytes each: float32 statistics)."""
    out = np.empty(records.size, dtype=_ZOOM_RECORD)
    for name in ("chrom", "start", "end", "count", "min", "max", "sum", "sumsq"):
        out[name] = records[name]
    return out


# --------------------------------------------------------------------------- trees


def _write_chrom_tree(file, contigs: list[tuple[str, int]]) -> None:
    """The B+ tree from contig name to (id, length), keys sorted by their bytes."""
    names = [name.encode() for name, _ in contigs]
    key_size = max(len(name) for name in names)
    block = min(TREE_BLOCK, len(contigs))
    order = sorted(range(len(contigs)), key=lambda i: names[i])
    keys = [names[i].ljust(key_size, b"\0") for i in order]
    leaves = [struct.pack("<II", i, contigs[i][1]) for i in order]
    file.write(_TREE_HEADER.pack(CHROM_TREE_MAGIC, block, key_size, 8, len(contigs), 0))
    levels = _tree_levels(len(keys), block)  # item counts, leaves first
    node_size = _NODE.size + block * (key_size + 8)
    starts = _level_starts(file.tell(), [-(-count // block) for count in levels], [node_size] * len(levels))
    for depth in reversed(range(len(levels))):  # root first
        for node in range(-(-levels[depth] // block)):
            first = node * block
            if depth == 0:
                items = [keys[i] + leaves[i] for i in range(first, min(first + block, len(keys)))]
            else:
                span = block**depth  # leaf items under one item of this level
                children = range(first, min(first + block, levels[depth]))
                below = starts[depth - 1]
                items = [keys[child * span] + struct.pack("<Q", below + child * node_size) for child in children]
            file.write(_NODE.pack(depth == 0, 0, len(items)) + b"".join(items))
            file.write(bytes(node_size - _NODE.size - sum(len(item) for item in items)))


def _write_rtree(file, blocks: np.ndarray, index_offset: int, items_per_slot: int) -> None:
    """The R-tree from (chrom, base) ranges to blocks (one leaf item per block), root first."""
    count = len(blocks)
    first, last = (blocks[0], blocks[-1]) if count else (np.zeros(1, _BLOCK)[0],) * 2
    bounds = (first["start_chrom"], first["start"], last["end_chrom"], last["end"])
    file.write(_INDEX_HEADER.pack(INDEX_MAGIC, TREE_BLOCK, count, *map(int, bounds), index_offset, items_per_slot, 0))
    levels = _tree_levels(count, TREE_BLOCK)
    leaf_size, branch_size = _NODE.size + TREE_BLOCK * 32, _NODE.size + TREE_BLOCK * 24
    sizes = [leaf_size] + [branch_size] * (len(levels) - 1)
    starts = _level_starts(file.tell(), [max(1, -(-n // TREE_BLOCK)) for n in levels], sizes)
    for depth in reversed(range(len(levels))):
        items = _rtree_items(blocks, depth, starts, sizes)
        for node in range(max(1, -(-levels[depth] // TREE_BLOCK))):
            part = items[node * TREE_BLOCK : (node + 1) * TREE_BLOCK]
            file.write(_NODE.pack(depth == 0, 0, len(part)) + part.tobytes())
            file.write(bytes(sizes[depth] - _NODE.size - part.nbytes))


def _rtree_items(blocks: np.ndarray, depth: int, starts: list[int], sizes: list[int]) -> np.ndarray:
    """The items of one R-tree level: leaves point at blocks, branches at nodes of the level below."""
    span = TREE_BLOCK**depth  # blocks under one item of this level
    firsts = np.arange(0, len(blocks), span)
    lasts = np.minimum(firsts + span, len(blocks)) - 1
    fields = [("start_chrom", "<u4"), ("start", "<u4"), ("end_chrom", "<u4"), ("end", "<u4"), ("offset", "<u8")]
    items = np.empty(len(firsts), dtype=np.dtype(fields + ([("size", "<u8")] if depth == 0 else [])))
    items["start_chrom"], items["start"] = blocks["start_chrom"][firsts], blocks["start"][firsts]
    items["end_chrom"], items["end"] = blocks["end_chrom"][lasts], blocks["end"][lasts]
    if depth == 0:
        items["offset"], items["size"] = blocks["offset"], blocks["size"]
    else:
        items["offset"] = starts[depth - 1] + np.arange(len(firsts)) * sizes[depth - 1]
    return items


def _tree_levels(items: int, block: int) -> list[int]:
    """Item counts of each level of a tree over ``items`` leaves, leaves first (one root node on top)."""
    levels = [items]
    while levels[-1] > block:
        levels.append(-(-levels[-1] // block))
    return levels


def _level_starts(offset: int, nodes: list[int], sizes: list[int]) -> list[int]:
    """File offset of each level's first node (levels leaves first, written root first)."""
    starts = [0] * len(nodes)
    for depth in reversed(range(len(nodes))):
        starts[depth] = offset
        offset += nodes[depth] * sizes[depth]
    return starts
