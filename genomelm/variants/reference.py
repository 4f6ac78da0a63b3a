"""Reference access for variant scoring: token ids and N counts of a FASTA by span, from cached tiles."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from genomelm.errors import InputError
from genomelm.formats.fasta import FastaSource
from genomelm.tokenizer import N_ID, CharTokenizer

# Bases per cached reference tile. Small enough that a sparse variant reads little more than its own
# context (a few kb for the tiny models), large enough that a 1M-token pass is a few dozen tiles.
TILE = 1 << 14
_NO_N = np.zeros(TILE + 1, dtype=np.int32)  # the N prefix counts of any tile without N (shared, read-only)
_NO_N.flags.writeable = False


class Reference:
    """Token ids of a FASTA by 0-based half-open span, from cached tiles of 16 kb (4 MB cached).

    Each tile is encoded once (soft-masked lowercase -> the same ids as uppercase, IUPAC -> N) and
    keeps a running count of N, so ``n_count`` is O(tiles), not O(bases).
    """

    def __init__(self, fasta: FastaSource, cache_tiles: int = 256):
        self.fasta = fasta
        self.lengths = fasta.contig_lengths()
        self._cache: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_tiles = cache_tiles
        self._tokenizer = CharTokenizer()

    def length(self, contig: str) -> int:
        return self.lengths[contig]

    def ids(self, contig: str, start: int, end: int) -> np.ndarray:
        """int64 ids of [start, end) on ``contig`` (0-based half-open, inside the contig)."""
        return self.ids_uint8(contig, start, end).astype(np.int64)

    def ids_uint8(self, contig: str, start: int, end: int) -> np.ndarray:
        """``ids`` as uint8, as the tiles hold them (no widening copy: the model's batches are uint8 on the host)."""
        if start // TILE == (end - 1) // TILE and end > start:  # inside one tile: most REF checks
            return self._tile(contig, start // TILE)[0][start % TILE : (end - 1) % TILE + 1]
        parts = [tile[lo:hi] for tile, _, lo, hi in self._pieces(contig, start, end)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)

    def n_count(self, contig: str, start: int, end: int) -> int:
        """Number of N (or IUPAC) bases in [start, end), 0-based half-open."""
        return int(sum(counts[hi] - counts[lo] for _, counts, lo, hi in self._pieces(contig, start, end)))

    def spans_with_n(self, contig: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """(S,) bool: whether span [starts[i], ends[i]) (0-based half-open, non-empty, inside the contig)
        touches a tile holding an N. False means the span has none; True: count them (``n_count``). One
        read per tile the spans cover, where ``n_count`` per span would read each tile once per span."""
        if not len(starts):
            return np.zeros(0, dtype=bool)
        first, last = starts // TILE, (ends - 1) // TILE  # (S,) tiles of each span's ends
        low = int(first.min())
        cover = np.zeros(int(last.max()) - low + 2, dtype=np.int64)  # +1 at a span's first tile, -1 after its last
        np.add.at(cover, first - low, 1)
        np.add.at(cover, last - low + 1, -1)
        holds_n = np.zeros(len(cover), dtype=np.int64)
        for tile in (np.flatnonzero(np.cumsum(cover) > 0) + low).tolist():
            holds_n[tile - low] = self._tile(contig, tile)[1][-1] > 0  # the tile's N count
        before = np.concatenate([[0], np.cumsum(holds_n)])  # tiles with N before each tile
        return before[last - low + 1] > before[first - low]

    def _pieces(self, contig: str, start: int, end: int) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
        """(tile ids, tile N prefix counts, lo, hi) covering [start, end), tile-local lo/hi."""
        for tile_index in range(start // TILE, (end - 1) // TILE + 1 if end > start else start // TILE):
            ids, counts = self._tile(contig, tile_index)
            offset = tile_index * TILE
            yield ids, counts, max(start, offset) - offset, min(end, offset + TILE) - offset

    def _tile(self, contig: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        key = (contig, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        start = index * TILE
        text = self.fasta.fetch(contig, start, min(start + TILE, self.lengths[contig]))
        ids = self._tokenizer.encode_uint8(text, record=contig, offset=start)
        is_n = ids == N_ID
        # (len + 1,) N before each offset; most tiles hold none, and the running sum is most of a tile's cost
        counts = np.concatenate([[0], np.cumsum(is_n, dtype=np.int32)]) if is_n.any() else _NO_N
        self._cache[key] = (ids, counts)
        if len(self._cache) > self._cache_tiles:
            self._cache.popitem(last=False)
        return ids, counts


def open_fasta(path: str, purpose: str = "variant scoring") -> FastaSource:
    """The FASTA at ``path`` with random access, or InputError saying how to get it (bgzip)."""
    fasta = FastaSource(path)
    if not fasta.indexed:
        fasta.close()
        raise InputError(
            f"{path}: {purpose} needs random access to the reference, and this FASTA cannot be indexed "
            "(plain gzip, or lines of unequal length): decompress it, or recompress it with `bgzip`"
        )
    return fasta
