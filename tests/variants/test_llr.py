"""The llr engine: per-block log-probabilities of both strands, and SNV llr derived from them."""

import numpy as np
import pytest
import torch

from genomelm.formats.fasta import FastaSource
from genomelm.tokenizer import CharTokenizer, reverse_complement_ids
from genomelm.variants import LlrTiling, Reference, SnvQuery, block_log_probs, llr, score_llr_shared
from tests.conftest import random_dna, tiny_model, write_fasta

SEQ = random_dna(700, seed=11)


@pytest.fixture()
def reference(tmp_path):
    with FastaSource(write_fasta(tmp_path / "g.fa", {"c": SEQ})) as fasta:
        yield Reference(fasta)


def test_block_log_probs_match_their_definition(reference):
    model, tiling = tiny_model(), LlrTiling(context=50, stride=100)
    blocks = block_log_probs(model, reference, "c", range(7), tiling, device=torch.device("cpu"), batch_size=3)
    assert [b.block for b in blocks] == list(range(7)) and sum(len(b.positions) for b in blocks) == len(SEQ)
    ids = CharTokenizer().encode(SEQ)
    block = blocks[3]  # positions 300..399: left context from 250, right context to 450
    with torch.no_grad():
        fwd = torch.log_softmax(model(torch.as_tensor(ids[250:399])[None])[0], -1).numpy()  # predicts 251..399
        rev = torch.log_softmax(model(torch.as_tensor(reverse_complement_ids(ids[301:450]))[None])[0], -1).numpy()
    np.testing.assert_allclose(block.forward[:, 0], fwd[49:, 7], atol=1e-5)  # A at 300..399
    np.testing.assert_allclose(block.forward[:, 3], fwd[49:, 10], atol=1e-5)  # T
    # reverse index i predicts position 448 - i; column A holds log P(T) on the reverse strand
    np.testing.assert_allclose(block.reverse[::-1, 0], rev[49:, 10], atol=1e-5)  # positions 399..300
    np.testing.assert_allclose(np.exp(block.forward).sum(1) <= 1 + 1e-6, True)
    first, last = blocks[0], blocks[-1]
    assert np.isnan(first.forward[0]).all() and not first.has_forward[0] and first.has_reverse[0]
    assert np.isnan(last.reverse[-1]).all() and not last.has_reverse[-1] and last.has_forward[-1]


def test_subset_of_positions_and_snv_llr_agree_with_score_llr_shared(reference):
    model, tiling = tiny_model(), LlrTiling(context=50, stride=100)
    cpu = torch.device("cpu")
    full = block_log_probs(model, reference, "c", [2], tiling, device=cpu)[0]
    part = block_log_probs(model, reference, "c", [2], tiling, device=cpu, positions={2: [260, 210, 230]})[0]
    assert part.positions.tolist() == [210, 230, 260] and part.passes == 2
    np.testing.assert_allclose(part.forward, full.forward[[10, 30, 60]], atol=1e-5)
    np.testing.assert_allclose(part.reverse, full.reverse[[10, 30, 60]], atol=1e-5)
    queries = [SnvQuery("c", p, SEQ[p], [b for b in "ACGT" if b != SEQ[p]]) for p in (210, 230, 260)]
    results, passes = score_llr_shared(model, reference, queries, tiling, cpu)
    assert passes == 2
    for query, result in zip(queries, results):
        forward, reverse = part.snv_llr(query.pos, query.ref, query.alts)
        np.testing.assert_array_equal(result.forward, forward)  # one code path: identical values
        np.testing.assert_array_equal(result.reverse, reverse)
        assert not result.non_finite.any()


def test_results_of_a_block_at_once_equal_one_query_at_a_time(reference):
    """llr._block_results (array operations over every ALT of a block) gives _query_result's bits."""
    model, tiling = tiny_model(), LlrTiling(context=50, stride=100)
    rng = np.random.default_rng(4)
    positions = [0, 1, 5, 99, 100, 150, 420, 650, 698, 699]  # contig ends: one strand without context
    queries = [SnvQuery("c", p, SEQ[p], list(rng.permutation([b for b in "ACGT" if b != SEQ[p]])[: 1 + p % 3]))
               for p in positions]  # fmt: skip
    results, _ = score_llr_shared(model, reference, queries, tiling, torch.device("cpu"), batch_size=2)
    wanted = {}  # the blocks exactly as score_llr_shared asks for them (same passes, same batches)
    for query in queries:
        wanted.setdefault(tiling.block(query.pos), []).append(query.pos)
    blocks = block_log_probs(model, reference, "c", wanted, tiling, device=torch.device("cpu"), batch_size=2,
                             positions=wanted)  # fmt: skip
    blocks = {b.block: b for b in blocks}
    for query, result in zip(queries, results, strict=True):
        alone = llr._query_result(blocks[tiling.block(query.pos)], query)
        for got, expected in ((result.forward, alone.forward), (result.reverse, alone.reverse)):
            assert got.shape == (len(query.alts),) and np.array_equal(got, expected, equal_nan=True)
        assert np.array_equal(result.non_finite, alone.non_finite)
        assert np.array_equal(result.mean, alone.mean, equal_nan=True)
    assert np.isnan(results[0].forward).all() and np.isnan(results[-1].reverse).all()
