"""delta-ll of indels is not biased by their length (REF and ALT windows score equal token counts).

On an i.i.d. uniform random sequence a random-weights model has nothing to prefer: the mean DLL of
deletions and of insertions must be within noise of 0 for every length. The sum over windows of
different lengths (the definition before equal-length windows) fails this: deletions shift up,
insertions down, by about the per-base log-likelihood times the length difference.
"""

import numpy as np
import pytest
import torch

import genomelm
from genomelm.model import HyenaDNA, preset
from tests.conftest import write_fasta

WINDOW = 64
BUCKETS = ((1, 5), (6, 10), (11, 15), (16, 20))


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 40_000))
    fasta = write_fasta(tmp_path_factory.mktemp("bias") / "iid.fa", {"r": seq})
    records, labels = [], []
    for kind in ("deletion", "insertion"):
        for i in range(200):
            n, p = i % 20 + 1, int(rng.integers(300, len(seq) - 300))  # lengths 1-20, 10 of each
            inserted = "".join(rng.choice(list("ACGT"), n))
            alleles = (seq[p : p + n + 1], seq[p]) if kind == "deletion" else (seq[p], seq[p] + inserted)
            records.append(("r", p + 1, *alleles))
            labels.append((kind, n))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HyenaDNA(preset("tiny-1k")).eval()  # random weights
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model runs fastest on one thread
    try:
        results = list(genomelm.score_variants(records, fasta, model, ["delta-ll"], window=WINDOW, batch_size=32))
        yield seq, model, records, labels, results
    finally:
        torch.set_num_threads(threads)


def z_score(values: np.ndarray) -> float:
    return float(values.mean() / (values.std(ddof=1) / np.sqrt(len(values))))


def groups(labels):
    for kind in ("deletion", "insertion"):
        for lo, hi in BUCKETS:
            yield kind, lo, hi, np.array([k == kind and lo <= n <= hi for k, n in labels])


def test_dll_of_indels_is_unbiased_by_length(scored):
    _, _, _, labels, results = scored
    assert all(r.skip is None for r in results)
    dll = np.array([r.scores["dll"] for r in results])
    dll_mean = np.array([r.scores["dll_mean"] for r in results])
    for kind, lo, hi, members in groups(labels):
        assert abs(z_score(dll[members])) < 2, (kind, lo, hi, dll[members].mean())
        assert abs(z_score(dll_mean[members])) < 2, (kind, lo, hi)


def test_unequal_windows_are_biased_on_the_same_data(scored):
    """The test has power: the old definition (ALT = REF window with ALT in place of REF) fails it."""
    seq, model, records, labels, _ = scored
    refs, alts, skips = [], [], []
    for _, pos, ref, alt in records:
        start = pos - 1
        left = start - (WINDOW - len(ref)) // 2
        right = left + WINDOW
        refs.append(seq[left:right])
        alts.append(seq[left:start] + alt + seq[start + len(ref) : right])
        skips.append(start - left)  # shared prefix: equal terms
    ref_ll = genomelm.log_likelihood(refs, model, batch_size=32)
    alt_ll = genomelm.log_likelihood(alts, model, batch_size=32)
    old = np.array([a[s:].sum() - r[s:].sum() for a, r, s in zip(alt_ll, ref_ll, skips)])
    for kind, lo, hi, members in groups(labels):  # deletions shifted up, insertions down, in every bucket
        assert z_score(old[members]) * (1 if kind == "deletion" else -1) > 3, (kind, lo, hi)
