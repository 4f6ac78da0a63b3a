"""formats/lookup_store.lookup_rows: the columns of each reference base's three alternatives."""

import numpy as np

from genomelm.formats.lookup_store import ALT_BASES, COLUMNS, alt_column, lookup_rows


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
