"""The pipelined score-variants engine on CUDA: pinned staging, async copies, the same results."""

import numpy as np
import pytest
import torch

from tests.variants.test_pipeline import check_queued_passes, pipelined_and_chunk_by_chunk

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("in_flight", [None, 1, 3])
def test_pipelined_equals_chunk_by_chunk_on_cuda(tmp_path, precision, in_flight):
    piped, plain, passes, plain_passes = pipelined_and_chunk_by_chunk(tmp_path, "cuda", precision, in_flight=in_flight)
    assert len(piped) > 3 and passes == plain_passes > 0
    assert piped == plain


def test_cuda_llr_close_to_cpu(tmp_path):
    (tmp_path / "gpu").mkdir(), (tmp_path / "cpu").mkdir()
    gpu, *_ = pipelined_and_chunk_by_chunk(tmp_path / "gpu", "cuda")
    cpu, *_ = pipelined_and_chunk_by_chunk(tmp_path / "cpu", "cpu")
    for (_, g_sites), (_, c_sites) in zip(gpu, cpu, strict=True):
        for (pos, g_skip, g_values), (_, c_skip, c_values) in zip(g_sites, c_sites, strict=True):
            assert g_skip == c_skip and g_values.keys() == c_values.keys(), pos
            for key in g_values:
                assert [v is None for v in g_values[key]] == [v is None for v in c_values[key]], pos
                g, c = (np.array([x for x in v[key] if x is not None]) for v in (g_values, c_values))
                np.testing.assert_allclose(g, c, atol=2e-3)


def test_queued_passes_on_cuda():
    check_queued_passes(torch.device("cuda"))
