"""formats.bgzf: the bytes of bgzip (pysam.tabix_compress), whatever the chunks written and the threads."""

import gzip
import random

import pysam
import pytest

from genomelm.formats.bgzf import BLOCK_INPUT, EOF_BLOCK, BgzfWriter


def _text(size: int, seed: int = 0) -> bytes:
    """VCF-like lines (compressible) with a byte that is not UTF-8 in them."""
    rng = random.Random(seed)
    lines = (
        f"chr1\t{i}\t.\t{rng.choice('ACGT')}\t{rng.choice('ACGT')}\t.\t.\tX={rng.random():.5f}\xe9\n"
        for i in range(size)
    )
    return "".join(lines).encode("latin-1")[:size]


def _bgzip(tmp_path, data: bytes) -> bytes:
    plain, packed = tmp_path / "in.txt", tmp_path / "ref.gz"
    plain.write_bytes(data)
    pysam.tabix_compress(str(plain), str(packed), force=True)
    return packed.read_bytes()


def _written(tmp_path, data: bytes, chunks: list[int], workers: int) -> bytes:
    path = tmp_path / f"ours-{workers}.gz"
    with open(path, "wb") as handle:
        writer = BgzfWriter(handle, workers)
        start = 0
        for size in chunks:
            writer.write(data[start : start + size])
            start += size
        writer.write(data[start:])
        writer.close()
    return path.read_bytes()


@pytest.mark.parametrize("size", [0, 10, BLOCK_INPUT, 3 * BLOCK_INPUT, 5 * BLOCK_INPUT + 1234])
@pytest.mark.parametrize("workers", [0, 2])
def test_bytes_are_bgzips_for_any_chunks_and_threads(tmp_path, size, workers):
    data = _text(size)
    rng = random.Random(size)
    chunks = [rng.choice([1, 100, BLOCK_INPUT - 1, BLOCK_INPUT, 2 * BLOCK_INPUT + 7]) for _ in range(8)]
    ours = _written(tmp_path, data, chunks, workers)
    assert ours == _bgzip(tmp_path, data)
    assert ours.endswith(EOF_BLOCK) and gzip.decompress(ours) == data


def test_abort_writes_nothing_more(tmp_path):
    path = tmp_path / "a.gz"
    with open(path, "wb") as handle:
        writer = BgzfWriter(handle, workers=1)
        writer.write(_text(3 * BLOCK_INPUT + 5))
        writer.abort()
    assert not path.read_bytes().endswith(EOF_BLOCK)
