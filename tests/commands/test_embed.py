"""`genomelm embed` end to end: outputs, invariances, regions, formats, errors."""

import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch
from Bio import bgzf
from safetensors import safe_open
from typer.testing import CliRunner

from genomelm import runtime
from genomelm.cli import app
from genomelm.commands import embed
from genomelm.formats.checkpoint import load_model
from genomelm.tokenizer import CharTokenizer
from tests.conftest import random_dna, write_fasta

runner = CliRunner()


@pytest.fixture()
def genome(tmp_path):
    records = {"chr1": random_dna(700, seed=1), "chr2": random_dna(333, seed=2)}
    return write_fasta(tmp_path / "genome.fa", records), records


def read(path):
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def options(fasta, output, model_dir, **changes):
    values = dict(fasta=str(fasta), output=str(output), model=str(model_dir), window=200, batch_size=3)
    values.update(changes)
    return embed.EmbedOptions(**values)


def test_rows_coordinates_and_values(genome, tmp_path, tiny_model_dir):
    fasta, records = genome
    summary = embed.run(options(fasta, tmp_path / "e.safetensors", tiny_model_dir))
    tensors, meta = read(tmp_path / "e.safetensors")
    assert summary.windows == summary.rows == 4 + 2 and summary.bases == 1033
    assert tensors["embeddings"].shape == (6, 16) and tensors["embeddings"].dtype == np.float32
    assert tensors["contig"].tolist() == [0, 0, 0, 0, 1, 1]
    assert tensors["start"].tolist() == [0, 200, 400, 600, 0, 200]
    assert tensors["end"].tolist() == [200, 400, 600, 700, 200, 333]
    assert tensors["strand"].tolist() == [1] * 6
    assert meta["contigs"] == '["chr1", "chr2"]' and meta["format"] == "genomelm-embeddings"
    model = load_model(str(tiny_model_dir))
    ids = torch.as_tensor(CharTokenizer().encode(records["chr1"][600:700]))[None]
    with torch.no_grad():
        expected = model.hidden_states(ids)[0].mean(0).numpy()
    np.testing.assert_allclose(tensors["embeddings"][3], expected, atol=1e-5)


def test_batch_size_and_batch_mates_do_not_change_embeddings(genome, tmp_path, tiny_model_dir):
    fasta, _ = genome
    # Regions of very different lengths put short windows next to long ones in one batch.
    regions = ["chr1:1-250", "chr2:5-40", "chr1:300-310", "chr2:1-333"]
    outputs = []
    for batch_size in (1, 2, 7):
        out = tmp_path / f"b{batch_size}.safetensors"
        embed.run(options(fasta, out, tiny_model_dir, regions=regions, batch_size=batch_size))
        outputs.append(read(out)[0])
    for other in outputs[1:]:
        np.testing.assert_allclose(other["embeddings"], outputs[0]["embeddings"], atol=1e-5)
        assert other["start"].tolist() == outputs[0]["start"].tolist()


def test_default_batch_size_on_a_cpu_fits_a_token_budget(genome, tmp_path, tiny_model_dir, monkeypatch):
    """Without --batch-size, a CPU batches as many windows as fit CPU_BATCH_TOKENS (1 to 8), a GPU 8."""
    assert runtime.default_batch_size(torch.device("cuda"), 32768) == 8
    assert [runtime.default_batch_size(torch.device("cpu"), t) for t in (32768, 16384, 1000, 40000)] == [1, 2, 8, 1]
    sizes = []
    real_batched = embed.batched
    monkeypatch.setattr(embed, "batched", lambda items, size: sizes.append(size) or real_batched(items, size))
    monkeypatch.setattr(runtime, "CPU_BATCH_TOKENS", 600)
    fasta, _ = genome
    embed.run(options(fasta, tmp_path / "auto.safetensors", tiny_model_dir, batch_size=None))  # window 200
    embed.run(options(fasta, tmp_path / "three.safetensors", tiny_model_dir))  # batch 3, as given
    assert sizes == [3, 3]
    np.testing.assert_array_equal(
        read(tmp_path / "auto.safetensors")[0]["embeddings"], read(tmp_path / "three.safetensors")[0]["embeddings"]
    )


def test_plain_gzip_and_bgzip_give_the_same_embeddings(genome, tmp_path, tiny_model_dir):
    fasta, _ = genome
    text = fasta.read_bytes()
    with gzip.open(tmp_path / "g.fa.gz", "wb") as handle:
        handle.write(text)
    with bgzf.BgzfWriter(str(tmp_path / "b.fa.gz"), "wb") as handle:
        handle.write(text)
    results = []
    for path in (fasta, tmp_path / "g.fa.gz", tmp_path / "b.fa.gz"):
        out = tmp_path / f"{path.name}.safetensors"
        embed.run(options(path, out, tiny_model_dir, stride=150))
        results.append(read(out)[0])
    for other in results[1:]:
        np.testing.assert_array_equal(other["embeddings"], results[0]["embeddings"])
        assert other["end"].tolist() == results[0]["end"].tolist()


def test_regions_bed_and_samtools_style(genome, tmp_path, tiny_model_dir):
    fasta, _ = genome
    bed = tmp_path / "r.bed"
    bed.write_text("chr2\t9\t109\tfirst\n")
    embed.run(options(fasta, tmp_path / "bed.safetensors", tiny_model_dir, regions=[str(bed)]))
    embed.run(options(fasta, tmp_path / "sam.safetensors", tiny_model_dir, regions=["chr2:10-109"]))
    bed_out, sam_out = read(tmp_path / "bed.safetensors")[0], read(tmp_path / "sam.safetensors")[0]
    assert bed_out["start"].tolist() == [9] and bed_out["end"].tolist() == [109]
    np.testing.assert_array_equal(bed_out["embeddings"], sam_out["embeddings"])


def test_lowercase_and_iupac_equal_uppercase_and_n(tmp_path, tiny_model_dir):
    seq = random_dna(150, seed=5)
    iupac = seq[:50] + "RYKM" + seq[54:]
    write_fasta(tmp_path / "upper.fa", {"c": seq[:50] + "NNNN" + seq[54:]})
    write_fasta(tmp_path / "lower.fa", {"c": iupac.lower()})
    for name in ("upper", "lower"):
        embed.run(options(tmp_path / f"{name}.fa", tmp_path / f"{name}.st", tiny_model_dir))
    np.testing.assert_array_equal(
        read(tmp_path / "upper.st")[0]["embeddings"], read(tmp_path / "lower.st")[0]["embeddings"]
    )


def test_pooling_none_last_rc_and_layer(genome, tmp_path, tiny_model_dir):
    fasta, _ = genome
    embed.run(options(fasta, tmp_path / "none.st", tiny_model_dir, pooling="none", regions=["chr2:1-30"]))
    embed.run(options(fasta, tmp_path / "mean.st", tiny_model_dir, regions=["chr2:1-30"]))
    embed.run(options(fasta, tmp_path / "last.st", tiny_model_dir, pooling="last", regions=["chr2:1-30"]))
    per_token, mean, last = (read(tmp_path / f"{n}.st")[0] for n in ("none", "mean", "last"))
    assert per_token["embeddings"].shape == (30, 16) and per_token["start"].tolist() == list(range(30))
    np.testing.assert_allclose(per_token["embeddings"].mean(0), mean["embeddings"][0], atol=1e-5)
    np.testing.assert_allclose(per_token["embeddings"][-1], last["embeddings"][0], atol=1e-6)
    embed.run(options(fasta, tmp_path / "rc.st", tiny_model_dir, rc=True, regions=["chr2:1-30"]))
    rc = read(tmp_path / "rc.st")[0]
    assert rc["strand"].tolist() == [0] and not np.allclose(rc["embeddings"], mean["embeddings"])
    embed.run(options(fasta, tmp_path / "l0.st", tiny_model_dir, layer=0, regions=["chr2:1-30"]))
    assert not np.allclose(read(tmp_path / "l0.st")[0]["embeddings"], mean["embeddings"])


def test_per_token_output_size_limit(genome, tmp_path, tiny_model_dir, monkeypatch):
    fasta, _ = genome
    monkeypatch.setattr(embed, "PER_TOKEN_LIMIT_BYTES", 1000)
    with pytest.raises(embed.UsageError, match="--force"):
        embed.run(options(fasta, tmp_path / "x.st", tiny_model_dir, pooling="none"))
    assert not (tmp_path / "x.st").exists()
    embed.run(options(fasta, tmp_path / "x.st", tiny_model_dir, pooling="none", force=True))
    assert read(tmp_path / "x.st")[0]["embeddings"].shape == (1033, 16)


@pytest.mark.parametrize(
    "content, extra, code, message",
    [
        (b">c\nACGT\n", ["--regions", "chrZ:1-2"], 1, "chrZ"),
        (b">c\nACGT\n", ["--regions", "c:3-10"], 1, "c:3-10"),
        (b">c\nAC!T\n", [], 1, "position 3"),
        (b"ACGT\n", [], 1, "genome.fa"),
        (b"", [], 1, "genome.fa"),
        (b">c\nACGT\n", ["--window", "100000"], 2, "longer than the model"),
        (b">c\nACGT\n", ["--pooling", "max"], 2, "--pooling"),
    ],
)
def test_cli_errors_one_line_exit_code_no_output(tmp_path, tiny_model_dir, content, extra, code, message):
    (tmp_path / "genome.fa").write_bytes(content)
    out = tmp_path / "out.safetensors"
    result = runner.invoke(
        app, ["embed", str(tmp_path / "genome.fa"), "-o", str(out), "-m", str(tiny_model_dir), *extra]
    )
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_truncated_gzip_is_a_format_error(genome, tmp_path, tiny_model_dir):
    fasta, _ = genome
    data = gzip.compress(fasta.read_bytes())
    (tmp_path / "t.fa.gz").write_bytes(data[: len(data) // 2])
    result = runner.invoke(
        app, ["embed", str(tmp_path / "t.fa.gz"), "-o", str(tmp_path / "o.st"), "-m", str(tiny_model_dir)]
    )
    assert result.exit_code == 1 and "t.fa.gz" in result.output
    assert not (tmp_path / "o.st").exists()


def test_console_script_subprocess(genome, tmp_path, tiny_model_dir):
    fasta, _ = genome
    out = tmp_path / "cli.safetensors"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genomelm",
            "embed",
            str(fasta),
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--window",
            "256",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert read(out)[0]["embeddings"].shape == (3 + 2, 16)


def test_windows_run_by_length_keep_order_and_values_of_a_padded_batch(tiny_model_dir):
    """Equal-length groups (no padding) give the padded batch's embeddings: bitwise for the longest windows,
    within fp32 rounding for shorter ones (their FFTs are sized to their own length now)."""
    model = load_model(str(tiny_model_dir)).eval()
    tokenizer = CharTokenizer()
    ids = [tokenizer.encode(random_dna(n, seed=n)) for n in (200, 57, 200, 120, 57)]
    assert embed._same_length_groups(ids) == [[0, 2], [3], [1, 4]]
    opts = embed.EmbedOptions(fasta="-", output="x")
    with torch.no_grad():
        grouped = embed._pooled(model, ids, torch.device("cpu"), opts, reverse=False)
        padded = embed._pooled_padded(model, ids, torch.device("cpu"), opts, reverse=False)
    for i, (got, expected) in enumerate(zip(grouped, padded)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"window {i}")
    assert np.array_equal(grouped[0], padded[0]) and np.array_equal(grouped[2], padded[2])
