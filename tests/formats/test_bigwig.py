"""The bigWig writer (formats.bigwig behind formats.tracks.BigWigWriter), checked by reading its
files back with pyBigWig (libBigWig): values, contigs, header summary, zoom levels and trees."""

import numpy as np
import pyBigWig
import pytest

from genomelm.errors import InputError
from genomelm.formats import bigwig
from genomelm.formats.tracks import BigWigWriter

CONTIGS = [("chrB", 30_000), ("chrA", 12_345), ("chr10", 5_000), ("z", 10)]  # not in name order


def random_tracks(contigs, seed=0, gap_fraction=0.02) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = {}
    for name, length in contigs:
        track = rng.standard_normal(length).astype(np.float32)
        track[rng.random(length) < gap_fraction] = np.nan
        track[length // 4 : length // 3] = np.nan  # a long gap
        values[name] = track
    return values


def write(path, contigs, values, zoom_levels=0, threads=1, chunk=1_000) -> bytes:
    with BigWigWriter(path, contigs, zoom_levels, threads) as writer:
        for name, length in contigs:
            for start in range(0, length, chunk):
                writer.add(name, start, values[name][start : start + chunk])
    return path.read_bytes()


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny sections, trees and zoom blocks: a small file exercises trees of several levels."""
    monkeypatch.setattr(bigwig, "SECTION_BASES", 64)
    monkeypatch.setattr(bigwig, "TREE_BLOCK", 3)
    monkeypatch.setattr(bigwig, "ZOOM_BLOCK", 5)


def test_values_contigs_and_summary_read_back(tmp_path):
    values = random_tracks(CONTIGS)
    write(tmp_path / "t.bw", CONTIGS, values)
    with pyBigWig.open(str(tmp_path / "t.bw")) as bw:
        assert list(bw.chroms().items()) == CONTIGS  # ids in the genome's order
        for name, length in CONTIGS:
            np.testing.assert_array_equal(bw.values(name, 0, length, numpy=True), values[name])
        np.testing.assert_array_equal(bw.values("chrA", 100, 170, numpy=True), values["chrA"][100:170])
        every = np.concatenate(list(values.values())).astype(np.float64)
        every = every[np.isfinite(every)]
        header = bw.header()
        assert header["nBasesCovered"] == every.size
        assert header["nLevels"] == 0


def test_bytes_do_not_depend_on_chunking_or_threads(tmp_path):
    values = random_tracks(CONTIGS, seed=1)
    one = write(tmp_path / "a.bw", CONTIGS, values, zoom_levels=3, threads=1, chunk=777)
    many = write(tmp_path / "b.bw", CONTIGS, values, zoom_levels=3, threads=4, chunk=50_000)
    assert one == many
    assert not list(tmp_path.glob("*.tmp"))  # the zoom levels' temporary files are gone


def test_zoom_levels_summarise_aligned_bins(tmp_path):
    values = random_tracks(CONTIGS, seed=2)
    write(tmp_path / "t.bw", CONTIGS, values, zoom_levels=4)
    with pyBigWig.open(str(tmp_path / "t.bw")) as bw:
        assert bw.header()["nLevels"] == 4
        for name, length in CONTIGS[:3]:
            # libBigWig reads the level of at most half the query's width: bins of 4096 here
            for start, end in [(0, length), (0, 8192), (4096, 12288)]:
                expected = values[name][start:end]
                if end > length or np.isnan(expected).all():
                    continue
                # a summary over whole zoom bins: what a browser draws from the zoom levels
                assert bw.stats(name, start, end, type="max")[0] == pytest.approx(np.nanmax(expected), rel=1e-6)
                assert bw.stats(name, start, end, type="min")[0] == pytest.approx(np.nanmin(expected), rel=1e-6)
                assert bw.stats(name, start, end)[0] == pytest.approx(np.nanmean(expected), rel=1e-4, abs=1e-6)


def test_trees_of_several_levels(tmp_path, small_blocks):
    rng = np.random.default_rng(3)
    contigs = [(f"c{i}", int(rng.integers(1, 900))) for i in range(40)]  # B+ tree of 4 levels
    values = random_tracks(contigs, seed=3, gap_fraction=0.05)
    write(tmp_path / "t.bw", contigs, values, zoom_levels=3)
    with pyBigWig.open(str(tmp_path / "t.bw")) as bw:
        assert dict(bw.chroms()) == dict(contigs)
        for name, length in contigs:
            np.testing.assert_array_equal(bw.values(name, 0, length, numpy=True), values[name])
            middle = slice(length // 2, min(length, length // 2 + 100))  # found through the R-tree
            np.testing.assert_array_equal(bw.values(name, middle.start, middle.stop, numpy=True), values[name][middle])
            if np.isfinite(values[name]).any():
                assert bw.stats(name, 0, length, type="max")[0] == pytest.approx(np.nanmax(values[name]), rel=1e-6)


def test_a_track_without_values(tmp_path):
    with BigWigWriter(tmp_path / "t.bw", CONTIGS, zoom_levels=2) as writer:
        writer.add("chrA", 0, np.full(100, np.nan))
    with pyBigWig.open(str(tmp_path / "t.bw")) as bw:
        assert dict(bw.chroms()) == dict(CONTIGS)
        assert np.isnan(bw.values("chrA", 0, 100, numpy=True)).all()
        assert bw.header()["nBasesCovered"] == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_an_error_leaves_the_file_unfinished(tmp_path):
    with pytest.raises(RuntimeError), BigWigWriter(tmp_path / "t.bw", CONTIGS, zoom_levels=1) as writer:
        writer.add("chrA", 0, np.ones(100))
        raise RuntimeError("stop")
    assert (tmp_path / "t.bw").read_bytes()[:4] == bytes(4)  # no header: not a bigWig that looks complete
    assert not list(tmp_path.glob("*.tmp"))


def test_unwritable_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot create bigWig file"):
        BigWigWriter(tmp_path / "missing" / "t.bw", CONTIGS)


def test_contigs_a_bigwig_header_cannot_hold():
    from genomelm.errors import UsageError
    from genomelm.formats.tracks import check_track_contigs

    check_track_contigs([("chr1", (1 << 32) - 1)])
    with pytest.raises(UsageError, match="below 2\\^32"):
        check_track_contigs([("chr1", 1 << 32)])
    with pytest.raises(UsageError, match="without spaces"):
        check_track_contigs([("chr 1", 10)])


def find_contig(data: bytes, name: str) -> tuple[int, int] | None:
    """(id, length) of ``name`` found as the UCSC tools find it: a search down the chromosome B+ tree (which
    needs the keys sorted), not a walk over every leaf as libBigWig does."""
    chrom_tree = int.from_bytes(data[8:16], "little")
    _magic, _block, key_size, _value_size = np.frombuffer(data, "<u4", 4, chrom_tree)
    key = name.encode().ljust(int(key_size), b"\0")
    node = chrom_tree + 32
    while True:
        is_leaf, count = data[node], int.from_bytes(data[node + 2 : node + 4], "little")
        items = node + 4
        if is_leaf:
            for i in range(count):
                item = items + i * (key_size + 8)
                if data[item : item + key_size] == key:
                    return tuple(int(v) for v in np.frombuffer(data, "<u4", 2, item + key_size))
            return None
        chosen = 0
        for i in range(count):  # the last child whose first key is <= the name
            if data[items + i * (key_size + 8) : items + i * (key_size + 8) + key_size] <= key:
                chosen = i
        child = items + chosen * (key_size + 8) + key_size
        node = int.from_bytes(data[child : child + 8], "little")


@pytest.mark.parametrize("block", [3, 256])
def test_contigs_are_found_by_searching_the_tree(tmp_path, monkeypatch, block):
    monkeypatch.setattr(bigwig, "TREE_BLOCK", block)
    rng = np.random.default_rng(4)
    contigs = [(f"chr{i}", int(rng.integers(1, 100))) for i in rng.permutation(50)]  # ids not in name order
    data = write(tmp_path / "t.bw", contigs, random_tracks(contigs, seed=4))
    for index, (name, length) in enumerate(contigs):
        assert find_contig(data, name) == (index, length)
    assert find_contig(data, "chrUn") is None
