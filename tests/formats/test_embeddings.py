"""Streaming safetensors writer: round trips through the safetensors library, layout, atomicity."""

from __future__ import annotations

import gc
import json
import os
import struct

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from genomelm.errors import InputError, UsageError
from genomelm.formats.embeddings import EmbeddingWriter


def read_header(path) -> tuple[int, dict]:
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return size, json.loads(handle.read(size))


def assert_reads_back(path, expected: dict[str, np.ndarray], metadata: dict[str, str] | None) -> None:
    loaded = load_file(str(path))
    assert loaded.keys() == expected.keys()
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    with safe_open(str(path), framework="np") as handle:
        assert handle.metadata() == metadata
        for name, array in expected.items():
            np.testing.assert_array_equal(handle.get_tensor(name), array)


def batches(array: np.ndarray, sizes: list[int]):
    start = 0
    for size in sizes:
        yield array[start : start + size]
        start += size
    assert start == len(array)


@pytest.mark.parametrize("rows", [0, 1, 4099])
def test_round_trip_mixed_dtypes(tmp_path, rows):
    rng = np.random.default_rng(rows)
    expected = {
        "embeddings": rng.standard_normal((rows, 16)).astype(np.float32),
        "coords": rng.integers(-(2**40), 2**40, (rows, 4)).astype(np.int64),
        "strand": rng.integers(-128, 128, rows).astype(np.int8),
    }
    path = tmp_path / "out.safetensors"
    metadata = {"model": "tiny-1k", "contigs": json.dumps(["chr1", "chr2"]), "note": "ünïcode"}
    sizes = [rows] if rows < 2 else [1, 0, 1000, 7, rows - 1008]
    with EmbeddingWriter(path, metadata={"model": "tiny-1k"}) as writer:
        writer.declare("embeddings", (16,), np.float32)
        writer.declare("coords", (4,), "I64")
        writer.declare("strand", (), np.int8)
        for name, array in expected.items():
            for batch in batches(array, sizes):
                writer.add(name, batch)
        writer.set_metadata("contigs", metadata["contigs"])
        writer.set_metadata("note", metadata["note"])
    assert_reads_back(path, expected, metadata)
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors"]


def test_layout_follows_the_format(tmp_path):
    path = tmp_path / "out.safetensors"
    writer = EmbeddingWriter(path)
    writer.add("b", np.arange(3, dtype=np.int8))
    writer.add("a", np.ones((3, 2), dtype=np.float32))
    writer.add("c", np.arange(3, dtype=np.int64))
    size = writer.close()
    assert size == os.path.getsize(path)
    header_len, header = read_header(path)
    assert (8 + header_len) % 8 == 0 and "__metadata__" not in header
    spans = sorted((entry["data_offsets"], name) for name, entry in header.items())
    assert [name for _, name in spans] == ["c", "a", "b"]  # widest first: each tensor aligned to its size
    assert spans[0][0][0] == 0 and spans[-1][0][1] == size - 8 - header_len
    assert all(left[0][1] == right[0][0] for left, right in zip(spans, spans[1:]))  # no gaps


def test_other_dtypes_and_big_endian_input(tmp_path):
    expected = {
        "f16": np.arange(6, dtype=np.float16).reshape(3, 2),
        "f64": np.linspace(0, 1, 3),
        "u8": np.arange(3, dtype=np.uint8),
        "i32": np.arange(9, dtype=np.int32).reshape(3, 3),
        "flag": np.array([True, False, True]),
    }
    path = tmp_path / "x.safetensors"
    with EmbeddingWriter(path) as writer:
        for name, array in expected.items():
            writer.add(name, array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array)
    assert_reads_back(path, expected, None)


def test_bf16_from_bit_patterns(tmp_path):
    bits = np.array([[0x3F80, 0xC000]], dtype=np.uint16)  # bf16 1.0, -2.0
    path = tmp_path / "bf.safetensors"
    with EmbeddingWriter(path) as writer:
        writer.declare("h", (2,), "BF16")
        writer.add("h", bits)
        writer.add("h", bits.view(np.int16))
    header_len, header = read_header(path)
    assert header["h"] == {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}
    with open(path, "rb") as handle:
        handle.seek(8 + header_len)
        assert np.frombuffer(handle.read(), "<u2").tolist() == [0x3F80, 0xC000] * 2


def test_mismatched_rows_are_rejected(tmp_path):
    writer = EmbeddingWriter(tmp_path / "x.safetensors")
    writer.add("e", np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        writer.add("e", np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="float64"):
        writer.add("e", np.zeros((2, 4), np.float64))
    with pytest.raises(ValueError, match="declared"):
        writer.declare("e", (4,), "F16")
    writer.declare("e", (4,), np.float32)  # the same declaration again is fine
    with pytest.raises(ValueError):
        writer.add("s", np.float32(1.0))
    with pytest.raises(ValueError):
        writer.add("__metadata__", np.zeros(1))
    with pytest.raises(ValueError, match="cannot be stored"):
        writer.declare("o", (), object)
    with pytest.raises(TypeError):
        writer.set_metadata("k", 3)
    writer.abort()


def test_add_after_close_fails_and_close_is_idempotent(tmp_path):
    writer = EmbeddingWriter(tmp_path / "x.safetensors")
    writer.add("e", np.zeros((1, 2), np.float32))
    size = writer.close()
    assert writer.close() == size
    with pytest.raises(ValueError, match="closed"):
        writer.add("e", np.zeros((1, 2), np.float32))


def test_exception_leaves_no_output_and_no_temporaries(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(RuntimeError):
        with EmbeddingWriter(path) as writer:
            writer.add("e", np.zeros((10, 2), np.float32))
            raise RuntimeError("model crashed")
    assert os.listdir(tmp_path) == []


def test_abort_keeps_an_older_output_untouched(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"previous run")
    writer = EmbeddingWriter(path)
    writer.add("e", np.zeros((10, 2), np.float32))
    writer.abort()
    writer.abort()
    assert path.read_bytes() == b"previous run" and os.listdir(tmp_path) == ["x.safetensors"]


def test_failure_while_assembling_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    writer = EmbeddingWriter(path)
    writer.add("e", np.zeros((10, 2), np.float32))

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(InputError, match="cannot write .*x.safetensors: no space left"):
        writer.close()
    assert os.listdir(tmp_path) == []


def test_forgotten_writer_removes_its_temporaries(tmp_path):
    writer = EmbeddingWriter(tmp_path / "x.safetensors")
    writer.add("e", np.zeros((10, 2), np.float32))
    assert len(os.listdir(tmp_path)) == 2  # the partial output and one spool
    del writer
    gc.collect()
    assert os.listdir(tmp_path) == []


def test_signal_while_a_spool_is_created_leaves_nothing(tmp_path, monkeypatch):
    # SIGTERM / Ctrl-C arrive as exceptions at any bytecode: here right after the spool file exists.
    writer = EmbeddingWriter(tmp_path / "x.safetensors")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer.declare("e", (2,), np.float32)
    assert len(os.listdir(tmp_path)) == 2  # the partial output and the new spool
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_output_permissions_follow_the_umask(tmp_path):
    path = tmp_path / "x.safetensors"
    old = os.umask(0o022)
    try:
        with EmbeddingWriter(path) as writer:
            writer.add("e", np.zeros((1, 1), np.float32))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "output, error", [("-", UsageError), ("missing-dir/x.safetensors", InputError), (".", InputError)]
)
def test_unusable_output_fails_before_writing(tmp_path, monkeypatch, output, error):
    # '-' is a usage error; a path that cannot be written is exit 1, as for every file output (formats.atomic)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error):
        EmbeddingWriter(output)
