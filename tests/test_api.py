"""The Python API (genomelm.score_variants / log_likelihood / embed_sequences): same numbers as the CLI."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import genomelm
from genomelm.commands import embed
from genomelm.commands import score_variants as sv
from genomelm.errors import UsageError
from genomelm.formats.checkpoint import load_model
from genomelm.tokenizer import CharTokenizer, reverse_complement_ids
from genomelm.variants import Variant
from tests.commands.test_score_variants import GENOME, variants, write_vcf
from tests.conftest import random_dna, write_fasta

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["llr", "delta-ll", "embedding"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def data(tmp_path):
    return write_fasta(tmp_path / "ref.fa", GENOME), write_vcf(tmp_path / "in.vcf", variants())


def tsv_rows(path):
    lines = [line.split("\t") for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    return [dict(zip(lines[0], row)) for row in lines[1:]]


def test_score_variants_gives_the_cli_numbers(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    tsv = tmp_path / "t.tsv"
    opts = sv.ScoreVariantsOptions(str(vcf_path), str(fasta), str(tmp_path / "o.vcf"), model=str(tiny_model_dir))
    opts.methods, opts.tsv, opts.batch_size = METHODS, str(tsv), 3
    sv.run(opts)
    model = load_model(str(tiny_model_dir))
    results = list(genomelm.score_variants(vcf_path, fasta, model=model, methods=METHODS, batch_size=3))
    rows = tsv_rows(tsv)
    assert len(results) == len(rows) == sum(max(1, len(v[2]) - 1) for v in variants())
    for result, row in zip(results, rows):
        assert (result.chrom, str(result.pos), result.ref, result.alt) == (
            row["chrom"],
            row["pos"],
            row["ref"],
            row["alt"],
        )
        assert (result.skip or "NA") == row["skip"]
        for name in ("llr", "llr_fwd", "llr_rev", "dll", "dll_mean", "emb_cos", "emb_l2"):
            if row[name] == "NA":
                assert name not in result.scores
            else:
                assert result.scores[name] == pytest.approx(float(row[name]), rel=1e-5, abs=1e-9)


def test_in_memory_records_equal_the_vcf_path(data, tiny_model_dir):
    fasta, vcf_path = data
    model = load_model(str(tiny_model_dir))
    rows = [(c, p, alleles[0], alleles[1:]) for c, p, alleles, _ in variants() if len(alleles) > 1]
    rows[0] = Variant(*rows[0][:3], tuple(rows[0][3]))  # Variant objects are accepted too
    from_memory = list(genomelm.score_variants(rows, fasta, model=model, methods=METHODS))
    from_vcf = [r for r in genomelm.score_variants(vcf_path, fasta, model=model, methods=METHODS) if r.alt != "."]
    assert [(r.chrom, r.pos, r.alt, r.scores, r.skip) for r in from_memory] == [
        (r.chrom, r.pos, r.alt, r.scores, r.skip) for r in from_vcf
    ]
    ref = GENOME["chr1"][49]
    alt = "C" if ref != "C" else "G"
    (single,) = genomelm.score_variants([("1", 50, ref, alt)], fasta, model=model)  # default method: llr
    assert single.scores.keys() == {"llr", "llr_fwd", "llr_rev"} and single.skip is None
    with pytest.raises(TypeError):
        list(genomelm.score_variants(rows, fasta, model=model, no_such_setting=1))


def test_log_likelihood_matches_its_definition(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    seqs = [random_dna(40, seed=1), random_dna(25, seed=2)]
    one = genomelm.log_likelihood(seqs[0], model=model)
    both = genomelm.log_likelihood(seqs, model=model, both_strands=True, batch_size=2)
    assert one.shape == (40,) and [b.shape for b in both] == [(2, 40), (2, 25)]
    ids = CharTokenizer().encode(seqs[1])
    with torch.no_grad():
        fwd = torch.log_softmax(model(torch.as_tensor(ids)[None])[0], -1).numpy()
        rc = reverse_complement_ids(ids)
        rev = torch.log_softmax(model(torch.as_tensor(rc)[None])[0], -1).numpy()
    np.testing.assert_allclose(both[1][0, 1:], fwd[np.arange(24), ids[1:]], atol=1e-5)
    # reverse row, position t: log P(complement of base t | reverse complement of bases after t)
    expected_rev = rev[np.arange(24), rc[1:]][::-1]  # predicts rc[1..24] = positions 23..0
    np.testing.assert_allclose(both[1][1, :-1], expected_rev, atol=1e-5)
    assert np.isnan(both[1][0, 0]) and np.isnan(both[1][1, -1]) and np.isnan(one[0])
    np.testing.assert_allclose(one, both[0][0], atol=1e-6)


def test_embed_sequences_equals_the_embed_command(tmp_path, tiny_model_dir):
    seq = random_dna(300, seed=4)
    out = tmp_path / "e.safetensors"
    fasta = write_fasta(tmp_path / "g.fa", {"g": seq})
    embed.run(embed.EmbedOptions(str(fasta), str(out), model=str(tiny_model_dir), window=100, rc=True, batch_size=3))
    with safe_open(str(out), "np") as handle:
        expected = handle.get_tensor("embeddings")
    windows = [seq[i : i + 100] for i in range(0, 300, 100)]
    got = genomelm.embed_sequences(windows, model=load_model(str(tiny_model_dir)), rc=True, batch_size=3)
    assert got.shape == expected.shape == (3, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    per_token = genomelm.embed_sequences(windows[0], model=str(tiny_model_dir), pooling="none", layer=1)
    assert per_token.shape == (100, 16)
    with pytest.raises(UsageError, match="pooling"):
        genomelm.embed_sequences(windows, model=str(tiny_model_dir), pooling="max")


def test_default_batch_size_follows_the_commands_rule(tiny_model_dir, monkeypatch):
    """No batch_size: the commands' rule for the longest sequence (8 on a GPU; on a CPU as many as fit
    CPU_BATCH_TOKENS), with the numbers of that batch size asked for explicitly."""
    from genomelm import api, runtime

    cpu = torch.device("cpu")
    assert api._batch_size(None, cpu, [[0] * 100]) == 8
    assert api._batch_size(None, cpu, [[0] * 100, [0] * 32768]) == 1
    assert api._batch_size(None, torch.device("cuda"), [[0] * 32768]) == 8
    assert api._batch_size(3, cpu, [[0] * 32768]) == 3
    with pytest.raises(UsageError, match="batch-size"):
        api._batch_size(0, cpu, [[0] * 10])
    monkeypatch.setattr(runtime, "CPU_BATCH_TOKENS", 200)  # 2 sequences of <= 100 tokens per call
    seqs = [random_dna(100 - 7 * i, seed=i) for i in range(5)]
    model = load_model(str(tiny_model_dir))
    calls = []  # batch size of every model call
    model.backbone.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    default = genomelm.log_likelihood(seqs, model=model)
    assert max(calls) == 2
    for got, want in zip(default, genomelm.log_likelihood(seqs, model=model, batch_size=2)):
        np.testing.assert_array_equal(got, want)


def test_models_named_by_string_are_loaded_once(tiny_model_dir):
    from genomelm import api

    first, _ = api._model(str(tiny_model_dir), "cpu")
    second, _ = api._model(str(tiny_model_dir), "cpu")
    assert first is second


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "genomelm.score_variants(" in b)


@pytest.mark.slow
def test_readme_python_api_snippet_runs():
    """The snippet in README's "Python API" section, run as a user would (shipped model, example data)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + readme_snippet()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("gi|9626243|ref|NC_001416.1|") for line in lines) == 64  # one per ALT allele
    assert "(2, 33)" in lines and "(2, 256)" in lines and "'dll'" in proc.stdout
