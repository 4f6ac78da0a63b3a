"""score-variants with chunks in flight gives what scoring chunk by chunk gives, bit for bit."""

import numpy as np
import pysam
import pytest
import torch

from genomelm.errors import InputError
from genomelm.formats.fasta import FastaSource
from genomelm.formats.vcf import VariantReader
from genomelm.variants import Reference
from genomelm.variants.engine import ScoringSettings, VariantScorer, chunks
from genomelm.variants.llr import Pass, run_passes, start_passes
from tests.conftest import random_dna, tiny_model, write_fasta

SEQ = random_dna(3000, seed=5)


def write_snvs(path, every: int = 37, wrong_ref_at: int | None = None):
    """A VCF of SNVs on contig 'c' at every ``every``-th base (1-based POS); REF wrong at one POS if asked."""
    header = pysam.VariantHeader()
    header.contigs.add("c", length=len(SEQ))
    with pysam.VariantFile(str(path), "w", header=header) as handle:
        for pos in range(1, len(SEQ) + 1, every):
            ref = SEQ[pos - 1] if pos != wrong_ref_at else next(b for b in "ACGT" if b != SEQ[pos - 1])
            alts = [b for b in "ACGT" if b != ref][: 1 + pos % 3]  # 1 to 3 ALT alleles
            handle.write(handle.new_record(contig="c", start=pos - 1, alleles=(ref, *alts)))
    return path


def scored(sites) -> list:
    """(POS, SKIP, {score: per-ALT floats or None}) per site: == compares the floats exactly."""
    return [(s.record.pos, s.skip_reason(), {k: list(v) for k, v in s.values.items()}) for s in sites]


def scorer(fasta, device="cpu", precision="fp32", in_flight=None, **settings) -> VariantScorer:
    model = tiny_model().to(device)
    options = ScoringSettings(context=50, stride=100, window=32, batch_size=2, precision=precision, **settings)
    return VariantScorer(model, Reference(fasta), options, torch.device(device), in_flight=in_flight)


def pipelined_and_chunk_by_chunk(tmp_path, device="cpu", precision="fp32", methods=("llr",), in_flight=None):
    fasta_path = write_fasta(tmp_path / "g.fa", {"c": SEQ})
    vcf_path = write_snvs(tmp_path / "v.vcf")
    with FastaSource(fasta_path) as fasta:
        pipelined = scorer(fasta, device, precision, in_flight, methods=methods)
        with VariantReader(str(vcf_path)) as reader:
            piped = [(len(chunk), scored(sites)) for chunk, sites in pipelined.score_all(reader.records())]
        one_by_one = scorer(fasta, device, precision, methods=methods)
        with VariantReader(str(vcf_path)) as reader:
            plain = [(len(c), scored(one_by_one.score(c))) for c in chunks(reader.records(), 100, 2)]
    return piped, plain, pipelined.passes, one_by_one.passes


@pytest.mark.parametrize("methods", [("llr",), ("llr", "delta-ll")])
@pytest.mark.parametrize("in_flight", [None, 0, 1, 3])
def test_pipelined_score_all_equals_chunk_by_chunk(tmp_path, methods, in_flight):
    piped, plain, passes, plain_passes = pipelined_and_chunk_by_chunk(tmp_path, methods=methods, in_flight=in_flight)
    assert len(piped) > 3 and passes == plain_passes > 0  # several chunks, so some were in flight
    assert piped == plain
    assert sum(1 for _, sites in piped for _, skip, values in sites if "llr" in values and skip is None) > 50


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_an_error_in_a_later_chunk_comes_after_the_chunks_before_it(tmp_path, in_flight):
    bad = 1 + 37 * 40  # POS of a record in a chunk in the middle
    fasta_path = write_fasta(tmp_path / "g.fa", {"c": SEQ})
    vcf_path = write_snvs(tmp_path / "v.vcf", wrong_ref_at=bad)
    with FastaSource(fasta_path) as fasta, VariantReader(str(vcf_path)) as reader:
        handed_back, sites = [], []
        with pytest.raises(InputError):
            for chunk, scored_sites in scorer(fasta, in_flight=in_flight, on_ref_mismatch="error").score_all(
                reader.records()
            ):
                handed_back.extend(record.pos for record in chunk)
                sites.extend(scored_sites)
    # every chunk before the bad one came back, scored; none after it
    assert handed_back == list(range(1, max(handed_back) + 1, 37))
    assert max(handed_back) < bad and max(handed_back) >= bad - 2 * 100
    assert all(site.values["llr"] for site in sites if site.record.pos > 1)


def test_one_staging_slot_per_chunk_in_flight_plus_the_one_being_prepared(tmp_path):
    fasta_path = write_fasta(tmp_path / "g.fa", {"c": SEQ})
    with FastaSource(fasta_path) as fasta:
        assert [len(scorer(fasta, in_flight=n)._stages) for n in (0, 1, 2, 3)] == [1, 2, 3, 4]


def random_passes(count: int, seed: int) -> list[Pass]:
    rng = np.random.default_rng(seed)
    passes = []
    for _ in range(count):
        ids = rng.integers(7, 11, rng.integers(5, 120))
        passes.append(Pass(ids, sorted(rng.choice(len(ids), rng.integers(1, 4), replace=False).tolist())))
    return passes


def check_queued_passes(device: torch.device):
    """Two calls in flight at once (buffers of two stages) equal one pass at a time, bit for bit."""
    model = tiny_model().to(device)
    first, second = random_passes(9, 1), random_passes(7, 2)
    wait_first = start_passes(model, first, device, "fp32", 4)
    wait_second = start_passes(model, second, device, "fp32", 3)
    got = wait_first() + wait_second()
    alone = [run_passes(model, [p], device, "fp32", 1)[0] for p in first + second]
    assert all(a.shape == (len(p.positions), 16) for a, p in zip(got, first + second))
    for a, b in zip(got, alone):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # batch 1 vs N: float rounding only
    batched_again = run_passes(model, first, device, "fp32", 4) + run_passes(model, second, device, "fp32", 3)
    assert all(np.array_equal(a, b) for a, b in zip(got, batched_again))


def test_queued_passes_equal_one_at_a_time():
    check_queued_passes(torch.device("cpu"))
