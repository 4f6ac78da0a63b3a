"""FASTA opening (plain / gzip / BGZF), validation, regions and window tiling."""

from __future__ import annotations

import gzip
import logging
import os
import random
from pathlib import Path

import pytest
from Bio import bgzf

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import fasta
from genomelm.formats.fasta import (
    FastaSource,
    Region,
    Window,
    parse_region,
    parse_regions,
    read_bed,
    resolve_contig,
)

COMPRESSIONS = ["plain", "gzip", "bgzf"]


def random_seq(length: int, seed: int, alphabet: str = "ACGTNacgtn") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


def fasta_bytes(records: list[tuple[str, str]], width: int = 60, newline: str = "\n") -> bytes:
    lines = []
    for header, seq in records:
        lines.append(f">{header}")
        lines += [seq[i : i + width] for i in range(0, len(seq), width)]
    return (newline.join(lines) + newline).encode()


def write_bytes(path: Path, data: bytes, compression: str = "plain") -> Path:
    if compression == "gzip":
        path.write_bytes(gzip.compress(data))
    elif compression == "bgzf":
        with bgzf.BgzfWriter(str(path), "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def write_fasta(directory: Path, records, compression: str = "plain", width: int = 60, newline: str = "\n") -> Path:
    name = "genome.fa" if compression == "plain" else "genome.fa.gz"
    return write_bytes(directory / name, fasta_bytes(records, width, newline), compression)


RECORDS = [("chr1 first contig", random_seq(257, 1)), ("chr2", random_seq(64, 2)), ("chrM", random_seq(5, 3))]
SEQS = {header.split()[0]: seq for header, seq in RECORDS}


def windows(source: FastaSource, window: int, stride: int, regions=None) -> list[Window]:
    return list(source.windows(window, stride, regions))


@pytest.fixture
def captured_warnings():
    """Warnings of the fasta module, whatever the package logger's propagation settings."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("genomelm.formats.fasta")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# --------------------------------------------------------------------------- regions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("chr1", Region("chr1", 0, None)),
        ("chr1:100-200", Region("chr1", 99, 200)),
        ("chr1:1-1", Region("chr1", 0, 1)),
        ("1:1,000-2,000", Region("1", 999, 2000)),
        ("chr1:100", Region("chr1", 99, None)),
        ("chr1:100-", Region("chr1", 99, None)),
        ("  chrX:5-6 ", Region("chrX", 4, 6)),
        ("{HLA-A*01:01}:2-3", Region("HLA-A*01:01", 1, 3)),
        ("{HLA-A*01:01}", Region("HLA-A*01:01", 0, None)),
    ],
)
def test_parse_region_converts_1_based_to_0_based(text, expected):
    assert parse_region(text) == expected


@pytest.mark.parametrize("text", ["", ":1-2", "chr1:0-5", "chr1:10-5", "chr1:a-b", "chr1:1-2-3", "{chr1", "{a}b"])
def test_parse_region_rejects_malformed(text):
    with pytest.raises(UsageError):
        parse_region(text)


@pytest.mark.parametrize("text", ["chr1", "chr1:100-200", "chr1:100-", "{HLA-A*01:01}:2-3"])
def test_region_str_round_trips(text):
    assert str(parse_region(text)) == text


def test_region_rejects_negative_or_reversed():
    with pytest.raises(UsageError):
        Region("chr1", -1, 5)
    with pytest.raises(UsageError):
        Region("chr1", 5, 4)


def test_read_bed(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\nbrowser position chr1\n# comment\n\nchr1\t0\t10\tfirst\nchr2\t5\t6\nchr1 3 4 .\r\n")
    assert read_bed(bed) == [Region("chr1", 0, 10, "first"), Region("chr2", 5, 6), Region("chr1", 3, 4)]


def test_read_bed_gzip(tmp_path):
    bed = tmp_path / "r.bed.gz"
    bed.write_bytes(gzip.compress(b"chr1\t1\t2\n"))
    assert read_bed(bed) == [Region("chr1", 1, 2)]


@pytest.mark.parametrize("line", ["chr1\t5", "chr1\tx\t10", "chr1\t10\t5", "chr1\t-1\t5"])
def test_read_bed_bad_line_names_file_and_line(tmp_path, line):
    bed = tmp_path / "bad.bed"
    bed.write_text(f"chr1\t0\t1\n{line}\n")
    with pytest.raises(FormatError, match=r"bad\.bed:2: "):
        read_bed(bed)


def test_parse_regions_file_or_region(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t0\t10\n")
    assert parse_regions(str(bed)) == [Region("chr1", 0, 10)]
    assert parse_regions("chr1:1-10") == [Region("chr1", 0, 10)]
    with pytest.raises(InputError, match="BED file not found"):
        parse_regions(str(tmp_path / "missing.bed"))


@pytest.mark.parametrize(
    "name, available, expected",
    [
        ("chr1", ["chr1", "1"], "chr1"),
        ("chr1", ["1", "2"], "1"),
        ("1", ["chr1", "chr2"], "chr1"),
        ("chrM", ["1", "MT"], "MT"),
        ("MT", ["chr1", "chrM"], "chrM"),
        ("M", ["chrM"], "chrM"),
        ("chr3", ["chr1", "1"], None),
    ],
)
def test_resolve_contig(name, available, expected):
    assert resolve_contig(name, iter(available)) == expected


# --------------------------------------------------------------------------- opening


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_open_each_compression(tmp_path, compression):
    path = write_fasta(tmp_path, RECORDS, compression)
    with FastaSource(path) as source:
        assert source.indexed == (compression != "gzip")
        assert source.contig_lengths() == {name: len(seq) for name, seq in SEQS.items()}
        assert source.contig_names == ["chr1", "chr2", "chrM"]
        assert source.fetch("chr1", 10, 75) == SEQS["chr1"][10:75]
        assert source.fetch("chr2", 0, 64) == SEQS["chr2"]
        assert source.fetch("chr2", 3, 3) == ""


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_case_kept_and_crlf_stripped(tmp_path, compression):
    records = [("a", "ACgtNNacGT" * 3), ("b", "nnnnAC")]
    path = write_fasta(tmp_path, records, compression, width=7, newline="\r\n")
    source = FastaSource(path)
    assert [w.sequence for w in windows(source, 100, 100)] == ["ACgtNNacGT" * 3, "nnnnAC"]
    assert source.fetch("a", 5, 12) == ("ACgtNNacGT" * 3)[5:12]


def test_variable_line_lengths_are_streamed(tmp_path):
    path = tmp_path / "ragged.fa"
    path.write_text(">a\nACG\nTTTTT\n\nGG\n>b\nC\nCCCC\n")
    source = FastaSource(path)
    assert not source.indexed
    assert source.contig_lengths() == {"a": 10, "b": 5}
    assert [w.sequence for w in windows(source, 4, 4)] == ["ACGT", "TTTT", "GG", "CCCC", "C"]


def test_single_line_contig_and_no_final_newline(tmp_path):
    seq = random_seq(5000, 4)
    path = tmp_path / "one.fa"
    path.write_text(f">one\n{seq}")
    for source in (FastaSource(path), FastaSource(write_bytes(tmp_path / "one.fa.gz", path.read_bytes(), "gzip"))):
        assert "".join(w.sequence for w in windows(source, 333, 333)) == seq


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        FastaSource(tmp_path / "nope.fa")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"ACGT\n>chr1\nACGT\n", "not FASTA"),
        (b"@read1\nACGT\n+\nIIII\n", "not FASTA"),
        (b">chr1\nAC\x00GT\n", "binary"),
        (b">chr1\nAC\xff\xfeGT\n", "binary"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    ],
)
@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_invalid_content_is_format_error(tmp_path, data, message, compression):
    path = write_bytes(tmp_path / ("x.fa" if compression == "plain" else "x.fa.gz"), data, compression)
    with pytest.raises(FormatError, match=message) as info:
        FastaSource(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_other_compression_is_named(tmp_path):
    path = tmp_path / "x.fa.bz2"
    path.write_bytes(b"BZh91AY&SY")
    with pytest.raises(FormatError, match="bzip2-compressed"):
        FastaSource(path)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(fasta_bytes(RECORDS))
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated"):
        FastaSource(path)


def test_truncated_bgzf(tmp_path):
    full = write_fasta(tmp_path, RECORDS, "bgzf")
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(full.read_bytes()[:-40])
    with pytest.raises(FormatError, match="truncated"):
        FastaSource(cut)


def test_truncation_found_late_in_a_large_gzip_stream(tmp_path, monkeypatch):
    data = gzip.compress(fasta_bytes([("a", random_seq(20000, 5))]))
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[:-30])
    monkeypatch.setattr(fasta, "_SNIFF_BYTES", 100)  # the open-time check sees only the start
    monkeypatch.setattr(fasta, "_READ_BLOCK", 1000)
    source = FastaSource(path)
    with pytest.raises(FormatError, match="truncated"):
        windows(source, 1000, 1000)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_duplicate_contig_names(tmp_path, compression):
    path = write_fasta(tmp_path, [("a", "ACGT"), ("b", "AC"), ("a x", "GG")], compression)
    with pytest.raises(FormatError, match="[Dd]uplicate"):
        source = FastaSource(path)
        windows(source, 2, 2)


def test_empty_header_name(tmp_path):
    path = tmp_path / "x.fa.gz"
    path.write_bytes(gzip.compress(b">\nACGT\n"))
    with pytest.raises(FormatError, match="no sequence name"):
        windows(FastaSource(path), 2, 2)


def test_read_only_directory(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    path = write_fasta(directory, RECORDS, "bgzf")
    directory.chmod(0o555)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("running as a user that chmod cannot stop (root)")
        source = FastaSource(path)
        assert source.indexed and source.fetch("chr2", 1, 9) == SEQS["chr2"][1:9]
        assert sorted(os.listdir(directory)) == ["genome.fa.gz"]
    finally:
        directory.chmod(0o755)


@pytest.mark.parametrize("compression", ["plain", "bgzf"])
def test_index_kept_in_memory_when_it_cannot_be_written(tmp_path, monkeypatch, compression):
    # Simulates a read-only directory even as root: publishing the index next to the FASTA fails.
    def refuse(src, dst, **kwargs):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(fasta.shutil, "copyfile", refuse)
    path = write_fasta(tmp_path, RECORDS, compression)
    source = FastaSource(path)
    assert source.indexed and source.fetch("chr1", 200, 257) == SEQS["chr1"][200:]
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_streams_when_no_index_can_be_built_anywhere(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fasta.tempfile, "mkdtemp", refuse)
    source = FastaSource(write_fasta(tmp_path, RECORDS))
    assert not source.indexed and source.fetch("chr1", 0, 9) == SEQS["chr1"][:9]


def test_existing_index_is_reused(tmp_path):
    path = write_fasta(tmp_path, RECORDS)
    FastaSource(path).close()
    fai = Path(f"{path}.fai")
    before = fai.stat().st_mtime_ns
    assert FastaSource(path).indexed and fai.stat().st_mtime_ns == before


# --------------------------------------------------------------------------- windows


def tiles(length: int, window: int, stride: int, start: int = 0) -> list[tuple[int, int]]:
    source_seq = "A" * length
    tiler = fasta._Tiler(0, "c", start, None, window, stride)
    out = tiler.feed(0, source_seq) + tiler.finish(length)
    return [(w.start, w.end) for w in out]


def test_tiling_rule():
    assert tiles(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]  # stops once a window reaches the end
    assert tiles(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (9, 11)]  # last window shorter
    assert tiles(10, 4, 6) == [(0, 4), (6, 10)]  # stride > window leaves gaps
    assert tiles(12, 4, 6) == [(0, 4), (6, 10)]
    assert tiles(13, 4, 6) == [(0, 4), (6, 10), (12, 13)]
    assert tiles(3, 10, 5) == [(0, 3)]  # window longer than the contig
    assert tiles(10, 4, 4, start=3) == [(3, 7), (7, 10)]


def test_tiler_memory_is_bounded():
    tiler = fasta._Tiler(0, "c", 0, None, 50, 20)
    count = 0
    for i in range(1000):
        count += len(tiler.feed(i * 10, "ACGTACGTAC"))
        assert sum(len(piece) for piece in tiler._pieces) <= 50 + 10
    assert count == (10000 - 50) // 20 + 1


def test_parser_events_are_bounded_by_the_block_size():
    text = ">a desc\n" + "A" * 1000 + "\n>b\n" + "C" * 10
    blocks = [text[i : i + 64] for i in range(0, len(text), 64)]
    events = list(fasta._parse_blocks(blocks))
    assert ("header", "a desc") in events and ("header", "b") in events
    assert max(len(value) for _, value in events) <= 64


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_stride_equal_window_concatenates_to_the_sequence(tmp_path, compression):
    source = FastaSource(write_fasta(tmp_path, RECORDS, compression, width=13))
    for window in (1, 7, 64, 1000):
        got: dict[str, str] = {}
        for w in windows(source, window, window):
            assert w.sequence == SEQS[w.contig][w.start : w.end]
            got[w.contig] = got.get(w.contig, "") + w.sequence
        assert got == SEQS


@pytest.mark.parametrize("window, stride", [(1, 1), (4, 3), (10, 10), (7, 2), (5, 9), (64, 32), (300, 300)])
def test_indexed_equals_streamed(tmp_path, monkeypatch, window, stride):
    # Tiny read blocks and fetch chunks: headers, lines and CRLFs split across every boundary.
    monkeypatch.setattr(fasta, "_READ_BLOCK", 7)
    monkeypatch.setattr(fasta, "_FETCH_CHUNK", 5)
    results = []
    for compression in COMPRESSIONS:
        directory = tmp_path / compression
        directory.mkdir()
        source = FastaSource(write_fasta(directory, RECORDS, compression, width=11, newline="\r\n"))
        results.append(windows(source, window, stride))
    assert results[0] == results[1] == results[2]
    assert all(w.sequence == SEQS[w.contig][w.start : w.end] for w in results[0])


def test_indexed_equals_streamed_with_regions(tmp_path):
    regions = [Region("chr1", 5, 100), Region("chr1", 150, None), Region("chr2", 0, 1), Region("chrM", 2, 5)]
    plain = FastaSource(write_fasta(tmp_path, RECORDS))
    streamed = FastaSource(write_bytes(tmp_path / "g.fa.gz", Path(plain.path).read_bytes(), "gzip"))
    assert windows(plain, 30, 20, regions) == windows(streamed, 30, 20, regions)
    # Streaming serves regions in file order (sorted by start): same windows, whatever the given order.
    assert windows(streamed, 30, 20, regions[::-1]) == windows(plain, 30, 20, regions)
    assert windows(plain, 30, 20, regions[::-1])[0].contig == "chrM"  # indexed keeps the given order


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_window_coordinates_and_contig_index(tmp_path, compression):
    source = FastaSource(write_fasta(tmp_path, RECORDS, compression))
    got = windows(source, 100, 100, [Region("chr2", 10, 30), Region("chrM", 0, None)])
    assert got == [Window(1, "chr2", 10, 30, SEQS["chr2"][10:30]), Window(2, "chrM", 0, 5, SEQS["chrM"])]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_unknown_contig(tmp_path, compression):
    records = [(f"chr{i}", "ACGT") for i in range(1, 9)]
    source = FastaSource(write_fasta(tmp_path, records, compression))
    with pytest.raises(
        InputError, match=r"contig 'chrZ' not in FASTA .*chr1, chr2, chr3, chr4, chr5, \.\.\. \(8 in all\)"
    ):
        windows(source, 2, 2, [Region("chrZ", 0, 2)])
    with pytest.raises(InputError, match="did you mean 'chr3'"):
        windows(source, 2, 2, [Region("3", 0, 2)])


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize(
    "region, shown",
    [
        (Region("chr2", 60, 70), "chr2:61-70"),
        (Region("chr2", 64, None), "chr2:65-"),
        (Region("chr2", 0, 65), "chr2:1-65"),
    ],
)
def test_region_outside_contig(tmp_path, compression, region, shown):
    source = FastaSource(write_fasta(tmp_path, RECORDS, compression))
    with pytest.raises(InputError, match=f"region {shown} is outside contig chr2 \\(length 64\\)"):
        windows(source, 8, 8, [region])


def test_streaming_checks_regions_up_front_once_lengths_are_known(tmp_path):
    source = FastaSource(write_fasta(tmp_path, RECORDS, "gzip"))
    source.contig_lengths()
    with pytest.raises(InputError, match="outside"):
        source.windows(8, 8, [Region("chr1", 0, 8), Region("chr2", 0, 999)])  # raised before iterating


def test_indexed_checks_every_region_before_the_first_window(tmp_path):
    source = FastaSource(write_fasta(tmp_path, RECORDS))
    with pytest.raises(InputError, match="chrZ"):
        source.windows(8, 8, [Region("chr1", 0, 8), Region("chrZ", 0, 1)])


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_empty_region_list_gives_no_windows(tmp_path, compression):
    assert windows(FastaSource(write_fasta(tmp_path, RECORDS, compression)), 8, 8, []) == []


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_empty_record_yields_no_windows(tmp_path, compression, captured_warnings):
    path = write_fasta(tmp_path, [("a", "ACGT"), ("empty", ""), ("b", "GG")], compression)
    source = FastaSource(path)
    assert [(w.contig_index, w.contig, w.sequence) for w in windows(source, 10, 10)] == [
        (0, "a", "ACGT"),
        (2, "b", "GG"),
    ]
    assert source.contig_lengths()["empty"] == 0
    assert any("empty has no sequence" in r.getMessage() for r in captured_warnings)


def test_zero_length_region_yields_nothing(tmp_path):
    source = FastaSource(write_fasta(tmp_path, RECORDS))
    assert windows(source, 4, 4, [Region("chr2", 10, 10), Region("chr2", 64, 64)]) == []


@pytest.mark.parametrize("window, stride", [(0, 1), (1, 0), (-5, 5)])
def test_bad_window_or_stride(tmp_path, window, stride):
    source = FastaSource(write_fasta(tmp_path, RECORDS))
    with pytest.raises(UsageError):
        windows(source, window, stride)


def test_streaming_fetch_stops_reading_early(tmp_path, monkeypatch):
    path = write_fasta(tmp_path, RECORDS, "gzip")
    monkeypatch.setattr(fasta, "_READ_BLOCK", 16)
    source = FastaSource(path)
    read = []
    original = source._text_blocks
    monkeypatch.setattr(source, "_text_blocks", lambda: (read.append(b) or b for b in original()))
    assert source.fetch("chr1", 0, 20) == SEQS["chr1"][:20]
    assert sum(map(len, read)) < 100  # not the whole file
    assert source.contig_names == ["chr1"]  # streaming: only what has been read so far


def test_streaming_fetch_errors(tmp_path):
    source = FastaSource(write_fasta(tmp_path, RECORDS, "gzip"))
    with pytest.raises(InputError, match="not in FASTA"):
        source.fetch("chrZ", 0, 1)
    with pytest.raises(InputError, match="outside"):
        source.fetch("chrM", 0, 6)
