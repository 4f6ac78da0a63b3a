"""The methods table: a new score method is one entry plus its function, and shows up everywhere."""

import pysam

from genomelm.commands import score_variants as sv
from genomelm.variants import methods
from genomelm.variants.methods import Method, Score
from tests.commands.test_score_variants import GENOME, variants, write_vcf
from tests.conftest import write_fasta


def alt_surprise(stats) -> dict[str, float]:
    """A made-up window method: minus the ALT log-likelihood per scored base, forward strand."""
    return {"surprise": -stats.alt_forward.log_likelihood / stats.alt_forward.scored}


def test_adding_a_method_is_one_entry(tmp_path, tiny_model_dir, monkeypatch):
    entry = Method(
        "surprise",
        (Score("surprise", "SURPRISE", "ALT surprise, {window} bp, by {model}"),),
        ("surprise",),
        "window",
        alt_surprise,
    )
    monkeypatch.setitem(methods.METHODS, "surprise", entry)
    fasta, vcf_path = write_fasta(tmp_path / "ref.fa", GENOME), write_vcf(tmp_path / "in.vcf", variants())
    out, tsv = tmp_path / "out.vcf", tmp_path / "t.tsv"
    opts = sv.ScoreVariantsOptions(str(vcf_path), str(fasta), str(out), model=str(tiny_model_dir))
    opts.methods, opts.tsv = ["surprise", "llr"], str(tsv)
    summary = sv.run(opts)
    text = out.read_text()
    assert '##INFO=<ID=GLM_SURPRISE,Number=A,Type=Float,Description="ALT surprise, 128 bp, by tiny">' in text
    with pysam.VariantFile(str(out)) as handle:
        values = [r.info["GLM_SURPRISE"][0] for r in handle if "GLM_SURPRISE" in r.info]
    assert len(values) == summary.scored and all(v > 0 for v in values)  # indels too: it is a window method
    assert tsv.read_text().splitlines()[1].split("\t")[5:7] == ["surprise", "llr_fwd"]
