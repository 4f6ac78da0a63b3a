"""Write safetensors files of unknown final row count with bounded memory.

Rows are appended per tensor to spool files next to the output as they arrive; ``close()`` writes
the safetensors header (now that every shape is known), copies the spools behind it into a
temporary file in the output's directory and renames that onto the output. A run that fails or
is aborted leaves no output (house rule 8). Peak disk use is about twice the final file size.

Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes
of UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
padded with spaces so that 8 + N is a multiple of 8, then the tensors back to back, little-endian,
C order. Offsets are relative to the start of the data buffer.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import weakref
from typing import BinaryIO

import numpy as np

from genomelm.errors import InputError, UsageError
from genomelm.formats import atomic

# safetensors dtype code -> numpy storage dtype (little-endian). BF16 has no numpy dtype: its
# rows are passed as 16-bit integer bit patterns (e.g. torch's tensor.view(torch.int16)).
_STORAGE = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
_CODE_OF = {np.dtype(storage): code for code, storage in _STORAGE.items() if code != "BF16"}
_COPY_BUFFER = 16 << 20  # bytes per read when copying spools into the output


def _dtype_code(dtype: np.dtype | str | type) -> str:
    """A safetensors dtype code from a code ('F32', 'BF16') or anything numpy accepts as a dtype."""
    if isinstance(dtype, str) and dtype.upper() in _STORAGE:
        return dtype.upper()
    try:
        return _CODE_OF[np.dtype(dtype).newbyteorder("<")]
    except (KeyError, TypeError):
        raise ValueError(f"dtype {dtype!r} cannot be stored in safetensors") from None


class _Spool:
    """One tensor's rows so far, in a temporary file."""

    def __init__(self, path: str, trailing: tuple[int, ...], code: str):
        """Create the spool at ``path``, which the caller registered for removal beforehand."""
        self.trailing, self.code, self.rows, self.path = trailing, code, 0, path
        self.storage = np.dtype(_STORAGE[code])
        self.handle: BinaryIO = os.fdopen(_create_exclusive(path), "wb")

    @property
    def nbytes(self) -> int:
        return self.rows * int(np.prod(self.trailing, dtype=np.int64)) * self.storage.itemsize

    def accepts(self, rows: np.ndarray) -> bool:
        """Same trailing shape and the same element type (BF16: any 16-bit integer bit pattern)."""
        if rows.shape[1:] != self.trailing:
            return False
        if self.code == "BF16":
            return rows.dtype.kind in "iu" and rows.dtype.itemsize == 2
        return rows.dtype.newbyteorder("<") == self.storage.newbyteorder("<")

    def append(self, rows: np.ndarray) -> None:
        # Little-endian, C order: the on-disk layout safetensors requires. The view only renames
        # the type (int16 -> uint16 for BF16 bit patterns); accepts() checked the sizes match.
        little = rows.astype(rows.dtype.newbyteorder("<"), copy=False)
        np.ascontiguousarray(little).view(self.storage).tofile(self.handle)
        self.rows += rows.shape[0]


def _create_exclusive(path: str) -> int:
    # os.open with 0o666 lets the umask decide the final permissions (mkstemp would force 0600).
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def _remove_files(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class EmbeddingWriter:
    """Streams named tensors (rows appended along the first axis) into one safetensors file.

    with EmbeddingWriter("out.safetensors", {"model": "tiny-1k"}) as writer:
        writer.declare("coords", (4,), np.int64)      # written even if no row ever comes
        for batch in batches:
            writer.add("embeddings", batch_embeddings)  # (B, D) float32
            writer.add("coords", batch_coords)          # (B, 4) int64
    """

    def __init__(self, path: str | os.PathLike, metadata: dict[str, str] | None = None):
        self.path = os.fspath(path)
        if self.path == "-":
            raise UsageError("embeddings are binary (safetensors): give an output file, not '-'")
        self._metadata: dict[str, str] = {}
        for key, value in (metadata or {}).items():
            self.set_metadata(key, value)
        self._spools: dict[str, _Spool] = {}
        self._temps: list[str] = []  # every temporary path we created, removed on abort / collection
        self._finalizer = weakref.finalize(self, _remove_files, self._temps)
        self._bytes: int | None = None
        self._closed = False
        self._partial = self._create_partial()

    def _create_partial(self) -> str:
        """Create the temporary output now, so an unusable output path fails before any work."""
        atomic.check_output_file(self.path)
        partial = atomic.temporary_sibling(self.path, ".partial")
        try:
            self._create_temporary(partial, lambda path: os.close(_create_exclusive(path)))
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror}") from None
        return partial

    def _create_temporary(self, path: str, create):
        """Run ``create(path)`` with ``path`` registered for removal before it exists: a signal
        (SIGTERM, Ctrl-C) arriving during or right after the creation still finds it to remove."""
        self._temps.append(path)
        try:
            return create(path)
        except OSError:
            self._temps.remove(path)  # not created (by us): never delete a file someone else owns
            raise

    def set_metadata(self, key: str, value: str) -> None:
        """Add a ``__metadata__`` entry; safetensors allows string keys and values only."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must be str -> str, got {key!r}: {type(value).__name__}")
        self._metadata[key] = value

    def declare(self, name: str, trailing_shape: tuple[int, ...], dtype: np.dtype | str | type) -> None:
        """Fix a tensor's shape after the first axis and its dtype (numpy dtype or code such as 'BF16').

        A declared tensor is written even if it never receives a row (shape [0, *trailing_shape]).
        Declaring again with the same shape and dtype is a no-op; with different ones, ValueError.
        """
        self._check_open()
        trailing, code = tuple(int(n) for n in trailing_shape), _dtype_code(dtype)
        if any(n < 0 for n in trailing):
            raise ValueError(f"tensor {name!r}: negative dimension in {trailing}")
        spool = self._spools.get(name)
        if spool is not None:
            if (spool.trailing, spool.code) != (trailing, code):
                raise ValueError(f"tensor {name!r} was declared {spool.code} {spool.trailing}, not {code} {trailing}")
            return
        _check_name(name)
        path = atomic.temporary_sibling(self.path, f".{len(self._spools)}.spool")
        with atomic.write_errors(self.path):
            self._spools[name] = self._create_temporary(path, lambda path: _Spool(path, trailing, code))

    def add(self, name: str, rows: np.ndarray) -> None:
        """Append ``rows`` (first axis = rows) to tensor ``name``; trailing shape and dtype must not change."""
        self._check_open()
        rows = np.asarray(rows)
        if rows.ndim == 0:
            raise ValueError(f"tensor {name!r}: rows need at least one dimension")
        if name not in self._spools:
            self.declare(name, rows.shape[1:], rows.dtype)
        spool = self._spools[name]
        if not spool.accepts(rows):
            raise ValueError(
                f"tensor {name!r} is {spool.code} with rows of shape {spool.trailing}; "
                f"got {rows.dtype} rows of shape {rows.shape[1:]}"
            )
        with atomic.write_errors(self.path):
            spool.append(rows)

    def close(self) -> int:
        """Write the file (assemble, fsync, atomic rename) and return its size in bytes.

        Calling it again returns the same size; on any failure nothing is left behind.
        """
        if self._bytes is not None:
            return self._bytes
        self._check_open()
        try:
            with atomic.write_errors(self.path):
                size = self._assemble()
            atomic.publish(self._partial, self.path)
        except BaseException:
            self.abort()
            raise
        self._release()
        self._bytes = size
        return size

    def abort(self) -> None:
        """Discard everything written so far; the output is not created (an older one is left as it was)."""
        if self._bytes is None:
            self._release()

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"EmbeddingWriter for {self.path} is already closed")

    def _release(self) -> None:
        """Close the spool handles and delete every temporary file."""
        for spool in self._spools.values():
            spool.handle.close()
        self._closed = True
        self._finalizer()

    def _ordered(self) -> list[tuple[str, _Spool]]:
        # Widest element first: every tensor then starts at a multiple of its own element size
        # (the data buffer starts at a multiple of 8), which zero-copy loaders appreciate.
        return sorted(self._spools.items(), key=lambda item: -item[1].storage.itemsize)

    def _header(self) -> bytes:
        """The JSON header, space-padded so that the data buffer starts at a multiple of 8."""
        entries: dict[str, object] = {"__metadata__": self._metadata} if self._metadata else {}
        offset = 0
        for name, spool in self._ordered():
            shape = [spool.rows, *spool.trailing]
            entries[name] = {"dtype": spool.code, "shape": shape, "data_offsets": [offset, offset + spool.nbytes]}
            offset += spool.nbytes
        header = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return header + b" " * (-len(header) % 8)

    def _assemble(self) -> int:
        header = self._header()
        with open(self._partial, "wb") as out:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            for name, spool in self._ordered():
                self._copy_spool(name, spool, out)
            out.flush()
            os.fsync(out.fileno())
            return out.tell()

    @staticmethod
    def _copy_spool(name: str, spool: _Spool, out: BinaryIO) -> None:
        spool.handle.close()
        if os.path.getsize(spool.path) != spool.nbytes:  # a short write would shift every later tensor
            raise OSError(f"spool file for tensor {name!r} has the wrong size (disk full?)")
        with open(spool.path, "rb") as source:
            shutil.copyfileobj(source, out, _COPY_BUFFER)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise ValueError(f"invalid tensor name {name!r}")
