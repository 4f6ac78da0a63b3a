"""Equal-length windows: REF and ALT score the same number of tokens on each strand, everywhere."""

import numpy as np
import pytest

from genomelm.formats.fasta import FastaSource
from genomelm.variants import Reference
from genomelm.variants.windows import CentredWindow, allele_windows
from tests.conftest import random_dna, write_fasta

SEQ = random_dna(500, seed=9)


def check(windows, contig_length, l_max):
    for ref, alt in ((windows.ref_forward, windows.alt_forward), (windows.ref_reverse, windows.alt_reverse)):
        assert ref.scored == alt.scored > 0 and ref.upstream == alt.upstream and ref.strand == alt.strand
        for w in (ref, alt):
            assert 0 <= w.left <= w.start <= w.end <= w.right <= contig_length
            assert w.right - w.left - (w.end - w.start) + len(w.allele) <= l_max


@pytest.mark.parametrize("start", [0, 1, 5, 100, 250, 480, 490, 495, 498])
@pytest.mark.parametrize("ref, alt", [("A", "C"), ("AC", "GT"), ("ACGTA", "A"), ("A", "ATTGCA"), ("ACG", "TTTTTT")])
def test_equal_scored_tokens_anywhere_on_the_contig(start, ref, alt):
    start = min(start, len(SEQ) - len(ref))  # REF ends at the contig end at the latest
    ref = SEQ[start : start + len(ref)]  # the template gives the REF length; the bases are the contig's
    windows = allele_windows(CentredWindow(64), "c", len(SEQ), start, ref, alt, l_max=258)
    if windows is None:  # only where the contig cannot give the downstream flank both need
        delta = len(alt) - len(ref)
        assert min(start, len(SEQ) - start - len(ref)) < abs(delta)
        return
    check(windows, len(SEQ), 258)


def test_snv_strands_read_the_one_centred_window():
    w = allele_windows(CentredWindow(64), "c", len(SEQ), 200, SEQ[200], "A", l_max=258)
    assert {(x.left, x.right) for x in w.all()} == {(200 - 31, 200 + 33)}


def test_deletion_reads_further_and_insertion_less(tmp_path):
    with FastaSource(write_fasta(tmp_path / "g.fa", {"c": SEQ})) as fasta:
        reference = Reference(fasta)
        deletion = allele_windows(CentredWindow(64), "c", len(SEQ), 200, SEQ[200:204], SEQ[200], l_max=258)
        assert deletion.alt_forward.right == deletion.ref_forward.right + 3  # 3 more reference bases after
        assert deletion.alt_reverse.left == deletion.ref_reverse.left - 3  # the reverse strand reads leftwards
        ids = deletion.alt_forward.ids(reference)
        np.testing.assert_array_equal(
            ids, reference.ids("c", 200 - 30, 201).tolist() + reference.ids("c", 204, 237).tolist()
        )
        insertion = allele_windows(CentredWindow(64), "c", len(SEQ), 200, SEQ[200], SEQ[200] + "GGGG", l_max=258)
        assert insertion.alt_forward.right == insertion.ref_forward.right - 4
        assert len(insertion.alt_forward.ids(reference)) == len(insertion.ref_forward.ids(reference)) == 64


def test_insertion_longer_than_the_flank_widens_both_windows():
    long_insertion = SEQ[200] + "A" * 40  # more than the 32 bases after the allele in a 64 bp window
    w = allele_windows(CentredWindow(64), "c", len(SEQ), 200, SEQ[200], long_insertion, l_max=258)
    assert w.ref_forward.right - w.ref_forward.end == 40 and w.alt_forward.right == w.alt_forward.end
    check(w, len(SEQ), 258)
    assert allele_windows(CentredWindow(64), "c", len(SEQ), 200, SEQ[200], long_insertion, l_max=70) is None
