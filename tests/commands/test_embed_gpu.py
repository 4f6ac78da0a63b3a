"""`genomelm embed` on the GPU: the pipelined loop (batch i queued before batch i-1 is collected) writes exactly
what embedding each batch on its own gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from genomelm.commands import embed
from genomelm.formats.checkpoint import load_model
from genomelm.tokenizer import CharTokenizer
from tests.conftest import random_dna, write_fasta

DEVICE = torch.device("cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize(
    "pooling,rc,precision", [("mean", False, "bf16"), ("last", True, "fp32"), ("none", False, "fp32")]
)
def test_pipelined_embed_equals_batch_by_batch(tiny_model_dir, tmp_path, pooling, rc, precision):
    records = {"a": random_dna(1000, 1), "b": random_dna(333, 2)}
    fasta = write_fasta(tmp_path / "g.fa", records)
    tiling = dict(window=200, stride=150, batch_size=3, device=DEVICE.type, precision=precision)
    opts = embed.EmbedOptions(
        str(fasta), str(tmp_path / "e.st"), model=str(tiny_model_dir), pooling=pooling, rc=rc, **tiling
    )
    embed.run(opts)
    written = load_file(opts.output)["embeddings"]
    model = load_model(str(tiny_model_dir)).to(DEVICE).eval()
    tokenizer, expected = CharTokenizer(), []
    with embed.FastaSource(str(fasta)) as source:
        for batch in embed.batched(source.windows(200, 150, None), 3):
            vectors = embed.embed_ids(model, [tokenizer.encode(w.sequence) for w in batch], DEVICE, opts)
            expected += [np.asarray(v, np.float32).reshape(-1, written.shape[1]) for v in vectors]
    assert np.array_equal(written, np.concatenate(expected))


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_queueing_a_batch_never_waits_for_the_gpu(tiny_model_dir, tmp_path, pooling):
    """embed keeps a batch queued while the previous one is collected: padding, the forward and the pooling must
    not synchronise (a blocking copy of the lengths to the GPU did, in runtime.pad_right)."""
    model = load_model(str(tiny_model_dir)).to(DEVICE).eval()
    opts = embed.EmbedOptions("unused.fa", str(tmp_path / "e.st"), pooling=pooling, device="cuda", precision="fp32")
    ids = [np.asarray(CharTokenizer().encode(random_dna(n, n))) for n in (300, 200, 120)]
    with torch.no_grad():
        embed._start_pooled_padded(model, ids, DEVICE, opts, False)()  # warm: filters, spectra, Triton
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            collect = embed._start_pooled_padded(model, ids, DEVICE, opts, False)  # raises on a synchronising call
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert len(collect()) == len(ids)
