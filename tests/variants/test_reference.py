"""Reference tiles: ids and N counts by span equal a direct read, across tile boundaries and cache evictions."""

import gzip

import numpy as np
import pytest

from genomelm.errors import InputError
from genomelm.formats.fasta import FastaSource
from genomelm.tokenizer import CharTokenizer
from genomelm.variants import Reference, open_fasta
from genomelm.variants import reference as reference_module
from tests.conftest import random_dna, write_fasta


def test_spans_across_tiles_equal_a_direct_read(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_module, "TILE", 100)  # many tiles in a small genome
    seq = random_dna(1000, seed=3, alphabet="ACGTNacgtRY")
    with FastaSource(write_fasta(tmp_path / "g.fa", {"c": seq})) as fasta:
        reference = Reference(fasta, cache_tiles=3)  # evictions too
        expected = CharTokenizer().encode(seq)
        rng = np.random.default_rng(0)
        for start, length in [(0, 1000), (99, 2), (100, 100), (950, 50), (5, 0)] + [
            (int(s), int(n)) for s, n in zip(rng.integers(0, 900, 30), rng.integers(0, 100, 30))
        ]:
            end = start + length
            np.testing.assert_array_equal(reference.ids("c", start, end), expected[start:end])
            narrow = reference.ids_uint8("c", start, end)  # a tile's own slice when inside one tile
            assert narrow.dtype == np.uint8 and np.array_equal(narrow, expected[start:end])
            assert reference.n_count("c", start, end) == int(np.sum(expected[start:end] == 11))


def test_open_fasta_needs_random_access(tmp_path):
    path = tmp_path / "g.fa.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(">c\nACGT\n")
    with pytest.raises(InputError, match="bgzip"):
        open_fasta(str(path))


def test_spans_with_n_is_false_exactly_for_spans_whose_tiles_hold_no_n(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_module, "TILE", 100)
    sequence = list(random_dna(1050, seed=3))
    sequence[210:220] = "N" * 10  # tile 2 holds N
    sequence[405] = "R"  # IUPAC counts as N (tile 4)
    sequence[1040] = "n"  # and soft-masked N (tile 10, the last, short)
    with FastaSource(write_fasta(tmp_path / "n.fa", {"c": "".join(sequence)})) as fasta:
        reference = Reference(fasta, cache_tiles=3)  # evictions too
        rng = np.random.default_rng(0)
        starts = rng.integers(0, len(sequence) - 1, 500)
        ends = np.minimum(len(sequence), starts + rng.integers(1, 300, 500))
        got = reference.spans_with_n("c", starts, ends)
        touched = [set(range(s // 100, (e - 1) // 100 + 1)) for s, e in zip(starts.tolist(), ends.tolist())]
        assert got.tolist() == [bool(t & {2, 4, 10}) for t in touched]
        counts = np.array([reference.n_count("c", s, e) for s, e in zip(starts.tolist(), ends.tolist())])
        assert (counts[~got] == 0).all() and (counts[got] > 0).any() and (~got).any()
        assert reference.spans_with_n("c", starts[:0], ends[:0]).shape == (0,)
