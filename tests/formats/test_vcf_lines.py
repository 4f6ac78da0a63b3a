"""formats.vcf_lines: the columns of a block of record lines equal those of a split per line."""

from __future__ import annotations

import numpy as np
import pysam
import pytest

from genomelm.formats.vcf_lines import RecordLines, spliced, tabs_per_line

LINES = [
    "chr1\t5\t.\tA\tC\t.\t.\t.\n",
    "chr1\t17\trs1\tg\tA,t\t30.5\tPASS\tDP=3;NOTE=caf\udce9\n",  # a byte that is not UTF-8, as a surrogate
    "chr1\t123456789012\t.\tAC\tA\t.\tq10\tNOTE=\u00e9t\u00e9;GLM_X=1\n",  # multi-byte UTF-8
    "chrUn_\u00e9\t0\t.\tN\t<DEL>\t.\t.\tDB\n",
    "chr2\t1\t.\tT\t.\t.\t.\t.\n",
    "chr2\t9\t.\tC\tG\t.\t.\tNOTE=a\tb\n",  # a tab inside a value (a BCF can hold one)
    "chr2\t12\t.\tC\tG\t.\t.\tNOTE=a\nb\n",  # a newline inside a value
    "chr2\t1x\t.\tC\tG\t.\t.\t.\n",
]


def _column(lines: RecordLines, r: int, j: int) -> str:
    return lines.data[lines.begin[r, j] : lines.end[r, j]].decode("utf-8", "surrogateescape")


def test_columns_equal_a_split_per_line_and_broken_lines_are_not_ok():
    lines = RecordLines.of(LINES, tabs_per_line(0))
    assert len(lines) == len(LINES)
    assert lines.ok.tolist() == [True] * 5 + [False, False, True]
    for r, line in enumerate(LINES):
        if lines.ok[r]:
            assert [_column(lines, r, j) for j in range(8)] == line[:-1].split("\t")
        else:
            assert (lines.width(3)[r], lines.width(7)[r]) == (0, 0)  # empty columns: nothing to read
    assert lines.data == "".join(LINES).encode("utf-8", "surrogateescape")


def test_numbers_runs_and_strings():
    lines = RecordLines.of(LINES, tabs_per_line(0))
    assert lines.unsigned(1).tolist() == [5, 17, 123456789012, 0, 1, -1, -1, -1]
    starts, texts = lines.runs(0)
    assert starts.tolist() == [0, 3, 4, 5, 7]  # the lines not ok have an empty CHROM
    assert texts == ["chr1", "chrUn_\u00e9", "chr2", "", "chr2"]
    assert lines.holds(7, b"GLM_").tolist() == [False, False, True, False, False, False, False, False]
    assert lines.holds(3, b"A").tolist() == [True, False, True, False, False, False, False, False]
    assert lines.padded(4, 3)[1].tobytes() == b"A,t" and lines.padded(4, 3)[0].tobytes() == b"C\0\0"


def test_samples_columns_end_info_at_its_tab():
    header = pysam.VariantHeader()
    header.contigs.add("c", length=100)
    for name in ("S1", "S2"):
        header.add_sample(name)
    record = header.new_record(contig="c", start=1, stop=2, alleles=("A", "C"))
    record.info.clear()
    text = [str(record), str(record).replace("\t.\t.\n", "\t.\n")]  # the second: a sample column short
    lines = RecordLines.of(text, tabs_per_line(2))
    assert lines.ok.tolist() == [True, False]
    assert _column(lines, 0, 7) == "." and lines.end[0, 7] < lines.line_end[0]


def test_spliced_replaces_spans_in_order():
    data = b"0123456789"
    starts, ends = np.array([0, 3, 10]), np.array([1, 3, 10])
    assert spliced(data, starts, ends, [b"a", b"b", b"c"], [b"", b"-", b"!"]) == b"a12b-3456789c!"
    assert spliced(data, np.array([], dtype=np.int64), np.array([], dtype=np.int64), []) == data


@pytest.mark.parametrize("rows", [0, 1])
def test_no_or_one_line(rows):
    lines = RecordLines.of(LINES[:rows], tabs_per_line(0))
    assert len(lines) == rows and lines.unsigned(1).tolist() == [5][:rows]
    assert len(lines.runs(0)[0]) == rows
