"""BGZF (blocked gzip, what `bgzip` writes) from Python, compressed as the text comes.

The bytes are those of htslib's ``bgzf_write`` at its default level (``pysam.tabix_compress``,
`bgzip`): 65,280 bytes of input per block, raw deflate at zlib's default level, the BC extra field,
CRC32 and size, then the 28-byte end-of-file block (tested byte for byte). Writing them here instead
of staging plain text for ``tabix_compress`` saves a second pass over the file, and lets the
compression run on worker threads (zlib releases the GIL) while the caller formats the next records.
Write errors are ordinary OSErrors of a Python file (a full disk: one clean message upstream).

No torch here (layer rule).
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

BLOCK_INPUT = 0xFF00  # bytes of input per block (htslib's BGZF_BLOCK_SIZE)
# gzip member header with the BC extra field; BSIZE (block size - 1) follows as 2 bytes.
_HEADER = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
EOF_BLOCK = _HEADER + b"\x1b\x00\x03\x00" + bytes(8)  # an empty block: htslib's end-of-file marker
_IN_FLIGHT = 48  # blocks queued per worker: 3 MB of input, more than a batch of records writes at once


def compress_block(data: bytes) -> bytes:
    """One BGZF block holding ``data`` (at most BLOCK_INPUT bytes)."""
    body = zlib.compress(data, zlib.Z_DEFAULT_COMPRESSION, -15)  # raw deflate, as htslib; one GIL release
    return _HEADER + struct.pack("<H", len(body) + 25) + body + struct.pack("<II", zlib.crc32(data), len(data))


class BgzfWriter:
    """Bytes -> BGZF blocks on ``handle`` (a binary file), in order; ``workers`` > 0 compresses on that
    many threads. ``close()`` writes the last block and the end-of-file marker (the handle stays open)."""

    def __init__(self, handle: BinaryIO, workers: int = 0):
        self._handle = handle
        self._buffer = bytearray()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bgzf") if workers > 0 else None
        self._queue: deque[Future] = deque()
        self._limit = _IN_FLIGHT * max(workers, 1)

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < BLOCK_INPUT:
            return
        full = len(self._buffer) - len(self._buffer) % BLOCK_INPUT
        view = memoryview(self._buffer)
        try:
            for start in range(0, full, BLOCK_INPUT):
                self._block(bytes(view[start : start + BLOCK_INPUT]))
        finally:
            view.release()  # a bytearray cannot be resized while a view holds it
        del self._buffer[:full]

    def _block(self, data: bytes) -> None:
        if self._pool is None:
            self._handle.write(compress_block(data))
            return
        self._queue.append(self._pool.submit(compress_block, data))
        while len(self._queue) >= self._limit or (self._queue and self._queue[0].done()):
            self._handle.write(self._queue.popleft().result())

    def close(self) -> None:
        """Write what is buffered and the end-of-file block; stop the workers."""
        try:
            if self._buffer:
                self._block(bytes(self._buffer))
                self._buffer.clear()
            while self._queue:
                self._handle.write(self._queue.popleft().result())
            self._handle.write(EOF_BLOCK)
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the workers without writing anything more (the caller discards the file)."""
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
