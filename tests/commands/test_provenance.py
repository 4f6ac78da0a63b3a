"""Provenance in every output: version, command, model and its SHA-256, settings; reruns byte-identical."""

import gzip
import hashlib

from safetensors import safe_open

from genomelm import __version__
from genomelm.commands import embed
from genomelm.commands import score_variants as sv
from genomelm.commands._provenance import command_line, model_sha256
from genomelm.model import HyenaDNA
from tests.commands.test_score_variants import GENOME, variants, write_vcf
from tests.conftest import tiny_model, write_fasta


def test_vcf_and_tsv_name_version_command_model_and_settings(tmp_path, tiny_model_dir):
    fasta, vcf_path = write_fasta(tmp_path / "ref.fa", GENOME), write_vcf(tmp_path / "in.vcf", variants())
    outputs = []
    for run in ("a", "b"):  # the same command twice
        out = tmp_path / run / "out.vcf.gz"
        out.parent.mkdir()
        opts = sv.ScoreVariantsOptions(str(vcf_path), str(fasta), str(out), model=str(tiny_model_dir))
        opts.methods, opts.tsv, opts.window = ["llr", "delta-ll"], str(out.parent / "t.tsv"), 64
        sv.run(opts)
        outputs.append((out.read_bytes(), (out.parent / "t.tsv").read_bytes()))
    assert outputs[0] != outputs[1]  # the output paths differ, and the command line names them
    header = [line for line in _text(tmp_path / "a" / "out.vcf.gz") if line.startswith("##genomelm")]
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert f"##genomelm_version={__version__}" in header
    assert f"##genomelm_model=tiny,sha256={hashlib.sha256(weights).hexdigest()}" in header
    command = next(line for line in header if line.startswith("##genomelm_command="))
    assert command.endswith(f"--method llr --method delta-ll --window 64 --tsv {tmp_path}/a/t.tsv")
    assert any(line.startswith("##genomelm_scoreVariantsSettings=model=tiny;methods=llr,delta-ll;") for line in header)
    first = (tmp_path / "a" / "t.tsv").read_text().splitlines()[0]
    assert first.startswith("# genomelm_version=") and "sha256=" in first and "window=64" in first


def test_identical_commands_write_identical_files(tmp_path, tiny_model_dir):
    fasta, vcf_path = write_fasta(tmp_path / "ref.fa", GENOME), write_vcf(tmp_path / "in.vcf", variants())
    out = tmp_path / "out.vcf"
    results = []
    for _ in range(2):
        sv.run(sv.ScoreVariantsOptions(str(vcf_path), str(fasta), str(out), model=str(tiny_model_dir)))
        results.append(out.read_bytes())
    assert results[0] == results[1]


def test_embed_metadata_carries_provenance(tmp_path, tiny_model_dir):
    fasta = write_fasta(tmp_path / "g.fa", {"g": GENOME["chr1"]})
    out = tmp_path / "e.safetensors"
    embed.run(embed.EmbedOptions(str(fasta), str(out), model=str(tiny_model_dir), window=100))
    with safe_open(str(out), "np") as handle:
        meta = handle.metadata()
    assert meta["genomelm_version"] == __version__
    assert meta["genomelm_command"] == f"genomelm embed {fasta} --output {out} --model {tiny_model_dir} --window 100"
    digest = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert meta["genomelm_model"] == f"tiny,sha256={digest}"


def test_command_line_and_preset_hash():
    opts = sv.ScoreVariantsOptions("in put.vcf", "ref.fa", methods=["llr"], index=True, max_n_frac=0.1)
    assert command_line("score-variants", opts, ("input",)) == (
        "genomelm score-variants 'in put.vcf' --fasta ref.fa --index --max-n-frac 0.1"
    )
    model = tiny_model(seed=3)
    same, other = HyenaDNA(model.config), tiny_model(seed=4)
    same.load_state_dict(model.state_dict())
    assert model_sha256("tiny-1k-not-a-dir", model) == model_sha256("x", same) != model_sha256("x", other)


def _text(path):
    with gzip.open(path, "rt") as handle:
        return handle.read().splitlines()
