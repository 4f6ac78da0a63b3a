"""formats/lookup_store: the columns of each reference base's three alternatives (lookup_rows), and lookup
arrays that cover whole contigs or spans of them (LookupWriter, open_lookup)."""

import numpy as np
import pytest

from genomelm.errors import FormatError
from genomelm.formats.lookup_store import (
    ALT_BASES,
    COLUMNS,
    LookupWriter,
    alt_column,
    lookup_file,
    lookup_rows,
    open_lookup,
)


def test_lookup_rows_pick_each_reference_bases_alternatives_in_order():
    rng = np.random.default_rng(3)
    codes = np.array([0, 1, 2, 3, 4, -1, 3, 0, 2, 1], dtype=np.int8)  # 4 and -1: not A/C/G/T
    mean, forward = (rng.normal(size=(len(codes), 4)).astype(np.float32) for _ in range(2))
    mean[6, 1] = np.nan  # a missing value stays missing in its column
    rows = lookup_rows(codes, mean, forward)
    assert rows.shape == (len(codes), COLUMNS) and rows.dtype == np.float32
    for i, code in enumerate(codes):
        if not 0 <= code < 4:
            assert np.isnan(rows[i]).all()
            continue
        expected = np.concatenate([mean[i, ALT_BASES[code]], forward[i, ALT_BASES[code]]])
        np.testing.assert_array_equal(rows[i], expected)
        for alt in ALT_BASES[code]:  # alt_column reads back what lookup_rows laid out
            assert rows[i, alt_column(code, alt)] == mean[i, alt] or np.isnan(mean[i, alt])


def _rows(start: int, count: int) -> np.ndarray:
    """Rows whose first column is their position (easy to check after a lookup)."""
    rows = np.zeros((count, COLUMNS), np.float32)
    rows[:, 0] = np.arange(start, start + count)
    return rows


def test_spans_hold_only_their_positions_and_lookups_map_back(tmp_path):
    contigs = [("a", 100), ("b", 50), ("c", 30)]
    spans = [[(10, 20), (60, 90)], [(0, 50)], [(5, 8)]]  # "c" never receives a row: its span is NaN
    with LookupWriter(str(tmp_path), contigs, spans) as writer:
        writer.add("a", 12, _rows(12, 5))  # 10-11 and 17-19 stay NaN
        writer.add("a", 60, _rows(60, 30))
        writer.add("b", 0, _rows(0, 50))
    assert [len(np.load(lookup_file(str(tmp_path), i))) for i in range(3)] == [40, 50, 3]
    a = open_lookup(str(tmp_path), 0, 100, spans[0])
    got = a.take(np.array([0, 10, 12, 16, 17, 59, 60, 89, 90, 99]))
    assert np.isnan(got[[0, 1, 4, 5, 8, 9], 0]).all()
    np.testing.assert_array_equal(got[[2, 3, 6, 7], 0], [12, 16, 60, 89])
    whole = open_lookup(str(tmp_path), 1, 50)  # one span over the whole contig: plain indexing
    np.testing.assert_array_equal(whole.take(np.array([0, 49]))[:, 0], [0, 49])
    assert np.isnan(open_lookup(str(tmp_path), 2, 30, spans[2]).take(np.arange(30))).all()
    with pytest.raises(FormatError, match=r"expected \(100, 6\)"):
        open_lookup(str(tmp_path), 0, 100)  # the spans' file read as a whole contig's


def test_rows_outside_the_spans_are_refused(tmp_path):
    writer = LookupWriter(str(tmp_path), [("a", 100)], [[(10, 20)]])
    with pytest.raises(ValueError, match="outside the covered spans"):
        writer.add("a", 15, _rows(15, 10))
