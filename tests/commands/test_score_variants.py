"""`genomelm score-variants` end to end: skip reasons, pass-through, invariances, formats, errors, sanity."""

import gzip
import logging
import math
import subprocess
import sys

import numpy as np
import pysam
import pytest
import torch
from typer.testing import CliRunner

from genomelm import variants as engine_api
from genomelm.cli import app
from genomelm.commands import score_variants as sv
from genomelm.errors import InputError, RefMismatchError, UsageError
from genomelm.formats.checkpoint import load_model, save_model
from genomelm.formats.fasta import FastaSource
from genomelm.tokenizer import CharTokenizer, reverse_complement_ids
from genomelm.variants import engine
from tests.conftest import random_dna, tiny_model, write_fasta

runner = CliRunner()
KEYS = ("GLM_LLR", "GLM_LLR_FWD", "GLM_LLR_REV", "GLM_DLL", "GLM_DLL_MEAN", "GLM_EMB_COS", "GLM_EMB_L2", "GLM_SKIP")


@pytest.fixture(autouse=True)
def _every_test_on_one_thread(one_thread):
    """Every test here uses conftest's one_thread fixture."""


def _chr1() -> str:
    seq = random_dna(3000, seed=1)
    return seq[:1000] + seq[1000:1200].lower() + seq[1200:]  # a soft-masked stretch


def _chr2() -> str:
    seq = random_dna(800, seed=2)
    return seq[:400] + "N" * 100 + seq[500:]


GENOME = {"chr1": _chr1(), "chr2": _chr2(), "chrM": random_dna(300, seed=3), "chrT": "A"}


def variants():
    """(contig, 1-based POS, alleles, expected SKIP with --method llr --method delta-ll)."""
    c1, c2 = GENOME["chr1"], GENOME["chr2"]

    def other(base: str) -> str:
        return next(b for b in "ACGT" if b != base.upper())

    return [
        ("1", 1, (c1[0], other(c1[0])), None),  # contig start: no left context
        ("1", 50, (c1[49], other(c1[49])), None),
        ("1", 60, (c1[59], *[b for b in "ACGT" if b != c1[59]][:2], "<NON_REF>"), None),  # multi-allelic
        ("1", 70, (other(c1[69]), c1[69]), "ref_mismatch"),
        ("1", 80, (c1[79], "<DEL>"), "symbolic"),
        ("1", 90, (c1[89], "*"), "spanning_deletion"),
        ("1", 100, (c1[99], f"{c1[99]}]2:300]"), "breakend"),
        ("1", 110, (c1[109],), "no_alt"),
        ("1", 120, (c1[119], "N"), "unsupported_allele"),
        ("1", 130, (c1[129:133], c1[129]), None),  # deletion
        ("1", 140, (c1[139], c1[139] + "TTG"), None),  # insertion
        ("1", 150, (c1[149:151], other(c1[149]) + other(c1[150])), None),  # MNV
        ("1", 400, (c1[399:700], c1[399]), "too_long"),  # longer than the 256 bp window
        ("1", 1100, (c1[1099].upper(), other(c1[1099])), None),  # soft-masked reference
        ("1", 2999, (c1[2998], other(c1[2998])), None),
        ("1", 3000, (c1[2999] + "AC", c1[2999]), "out_of_range"),
        ("2", 520, (c2[519], other(c2[519])), "n_in_context"),
        ("2", 700, (c2[699], other(c2[699])), None),
        ("MT", 10, (GENOME["chrM"][9], other(GENOME["chrM"][9])), None),
        ("chrT", 1, ("A", "G"), "no_context"),
        ("3", 5, ("A", "G"), "contig_missing"),
    ]


def write_vcf(path, rows, contigs=("1", "2", "MT", "chrT", "3")):
    header = pysam.VariantHeader()
    for name in contigs:
        header.contigs.add(name)
    header.add_line('##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">')
    header.add_line('##INFO=<ID=END,Number=1,Type=Integer,Description="end">')  # pysam sets it for <NON_REF>
    header.add_sample("S1")
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    with pysam.VariantFile(str(path), "w", header=header) as handle:
        for i, (contig, pos, alleles, *_) in enumerate(rows):
            start, stop = pos - 1, pos - 1 + len(alleles[0])
            alleles = alleles if len(alleles) > 1 else (*alleles, ".")  # ALT '.': no alternate allele
            record = handle.new_record(contig=contig, start=start, stop=stop, alleles=alleles, id=f"v{i}", qual=30)
            record.info["DP"] = i
            record.samples["S1"]["GT"] = (0, 1)
            handle.write(record)
    return path


@pytest.fixture()
def data(tmp_path):
    fasta = write_fasta(tmp_path / "ref.fa", GENOME)
    return fasta, write_vcf(tmp_path / "in.vcf", variants())


def options(vcf_path, fasta, output, model_dir, **changes):
    values = dict(input=str(vcf_path), fasta=str(fasta), output=str(output), model=str(model_dir), batch_size=3)
    values.update(changes)
    return sv.ScoreVariantsOptions(**values)


def read_records(path):
    with pysam.VariantFile(str(path)) as handle:
        return [(r.chrom, r.pos, r.alts, {k: r.info.get(k) for k in KEYS if k in r.info}) for r in handle]


def values(path, key):
    return [info.get(key) for *_, info in read_records(path)]


def strip_added(line: str) -> str:
    columns = line.rstrip("\n").split("\t")
    kept = [kv for kv in columns[7].split(";") if kv.split("=")[0] not in KEYS]
    columns[7] = ";".join(kept) or "."
    return "\t".join(columns)


def split_vcf(text: str):
    lines = text.splitlines()
    return [x for x in lines if x.startswith("##")], [x for x in lines if not x.startswith("##")]


def test_every_skip_reason_and_scored_values(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    out = tmp_path / "out.vcf"
    summary = sv.run(options(vcf_path, fasta, out, tiny_model_dir, methods=["llr", "delta-ll", "embedding"]))
    records = read_records(out)
    expected = [skip for *_, skip in variants()]
    assert [info.get("GLM_SKIP") for *_, info in records] == expected
    assert summary.records == len(expected) and summary.scored == expected.count(None)
    assert sum(summary.skipped.values()) == len(expected) - expected.count(None)
    for (_, _, alts, info), skip in zip(records, expected):
        if skip is not None:  # skipped records get the flag and nothing else
            assert set(info) == {"GLM_SKIP"}
            continue
        assert len(info["GLM_DLL"]) == len(alts) and len(info["GLM_EMB_L2"]) == len(alts)
    by_pos = {(c, p): info for c, p, _, info in records}
    first = by_pos[("1", 1)]  # no left context: the mean is the reverse strand's value
    assert "GLM_LLR_FWD" not in first and first["GLM_LLR"] == first["GLM_LLR_REV"]
    multi = by_pos[("1", 60)]
    assert multi["GLM_LLR"][2] is None and None not in multi["GLM_LLR"][:2] and multi["GLM_DLL"][2] is None
    assert np.isclose(multi["GLM_LLR"][0], (multi["GLM_LLR_FWD"][0] + multi["GLM_LLR_REV"][0]) / 2, atol=1e-5)
    for indel in (("1", 130), ("1", 140), ("1", 150)):  # delta-ll scores indels and MNVs, llr does not
        assert by_pos[indel]["GLM_DLL"][0] is not None and "GLM_LLR" not in by_pos[indel]
    assert summary.alleles_unscored["symbolic"] == 1


def test_llr_only_flags_indels_not_snv(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    out = tmp_path / "out.vcf"
    sv.run(options(vcf_path, fasta, out, tiny_model_dir))
    skips = dict(((c, p), info.get("GLM_SKIP")) for c, p, _, info in read_records(out))
    assert skips[("1", 130)] == skips[("1", 140)] == skips[("1", 150)] == "not_snv"
    assert skips[("1", 400)] == "not_snv" and skips[("1", 50)] is None


def test_output_equals_input_apart_from_added_info(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    out = tmp_path / "out.vcf"
    sv.run(options(vcf_path, fasta, out, tiny_model_dir, methods=["llr", "delta-ll"]))
    in_meta, in_body = split_vcf(vcf_path.read_text())
    out_meta, out_body = split_vcf(out.read_text())
    assert [strip_added(x) for x in out_body] == in_body  # '#CHROM' line, every record, same order and fields
    assert set(in_meta) <= set(out_meta)
    added = [x for x in out_meta if x not in in_meta]
    assert all(x.startswith(("##INFO=<ID=GLM_", "##genomelm_", "##FILTER=<ID=PASS")) for x in added)
    assert any("Number=A" in x and "by tiny" in x and "context 128-255" in x for x in added)


def test_shared_windows_equal_one_pass_per_variant(tmp_path, tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    tiling = engine_api.LlrTiling(context=60, stride=100)  # 30 blocks in a small genome
    rng = np.random.default_rng(0)
    with FastaSource(write_fasta(tmp_path / "g.fa", GENOME)) as fasta:
        reference = engine_api.Reference(fasta)
        seq = GENOME["chr1"].upper()
        positions = sorted(set(rng.integers(0, 3000, 80).tolist()) | {0, 1, 99, 100, 101, 2998, 2999})
        queries = [engine_api.SnvQuery("chr1", p, seq[p], [b for b in "ACGT" if b != seq[p]]) for p in positions]
        shared, shared_passes = engine_api.score_llr_shared(model, reference, queries, tiling, torch.device("cpu"))
        naive, naive_passes = engine_api.score_llr_naive(model, reference, queries, tiling, torch.device("cpu"))
    blocks = len({p // 100 for p in positions})
    assert naive_passes == 2 * len(queries) - 2 and shared_passes <= 2 * blocks < naive_passes / 2
    for a, b in zip(shared, naive):
        np.testing.assert_allclose(a.forward, b.forward, atol=1e-5)
        np.testing.assert_allclose(a.reverse, b.reverse, atol=1e-5)
    assert np.isnan(shared[0].forward).all() and np.isnan(shared[-1].reverse).all()


def test_llr_matches_its_definition(data, tmp_path, tiny_model_dir):
    fasta, _ = data
    seq = GENOME["chr1"].upper()
    pos = 2000  # 0-based; block 15 (stride 128) starts at 1920, left context from 1920 - 128 = 1792
    rows = [("1", pos + 1, (seq[pos], "T" if seq[pos] != "T" else "A"))]
    out = tmp_path / "one.vcf"
    sv.run(options(write_vcf(tmp_path / "one_in.vcf", rows), fasta, out, tiny_model_dir))
    info = read_records(out)[0][3]
    model, tok = load_model(str(tiny_model_dir)), CharTokenizer()
    alt = rows[0][2][1]
    with torch.no_grad():
        fwd = model(torch.as_tensor(tok.encode(seq[1792:pos]))[None])[0, -1]
        rc_ids = reverse_complement_ids(tok.encode(seq[pos + 1 : 1920 + 128 + 128]))
        rev = model(torch.as_tensor(rc_ids)[None])[0, -1]
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    ids = tok.vocab
    assert math.isclose(info["GLM_LLR_FWD"][0], float(fwd[ids[alt]] - fwd[ids[seq[pos]]]), abs_tol=1e-5)
    assert math.isclose(info["GLM_LLR_REV"][0], float(rev[ids[comp[alt]]] - rev[ids[comp[seq[pos]]]]), abs_tol=1e-5)


def test_delta_ll_and_embedding_match_their_definitions(data, tmp_path, tiny_model_dir):
    fasta, _ = data
    seq = GENOME["chr1"].upper()
    pos, alt = 2000, "A" if GENOME["chr1"][2000].upper() != "A" else "C"
    out = tmp_path / "one.vcf"
    rows = [("1", pos + 1, (seq[pos], alt))]
    sv.run(
        options(write_vcf(tmp_path / "one_in.vcf", rows), fasta, out, tiny_model_dir, methods=["delta-ll", "embedding"])
    )
    info = read_records(out)[0][3]
    model, tok = load_model(str(tiny_model_dir)), CharTokenizer()
    left, right = pos - 63, pos + 65  # default window 128 bp: 63 bases left of the SNV, 64 right
    ref_seq, alt_seq = seq[left:right], seq[left:pos] + alt + seq[pos + 1 : right]

    def stats(text):
        ids = torch.as_tensor(tok.encode(text))[None]
        with torch.no_grad():
            hidden = model.hidden_states(ids)[0]
            logp = torch.log_softmax(model.lm_head(hidden), -1)[:-1].gather(-1, ids[0, 1:, None])[:, 0]
        return logp, hidden.mean(0)

    (rf, ef), (af, xf) = stats(ref_seq), stats(alt_seq)
    rc = {"A": "T", "C": "G", "G": "C", "T": "A"}
    (rr, er), (ar, xr) = (stats("".join(rc[b] for b in reversed(s))) for s in (ref_seq, alt_seq))
    dll = ((af.sum() - rf.sum()) + (ar.sum() - rr.sum())) / 2  # full sums: the shared prefix cancels
    assert math.isclose(info["GLM_DLL"][0], float(dll), abs_tol=1e-4)
    ref_vec, alt_vec = (ef + er) / 2, (xf + xr) / 2
    assert math.isclose(info["GLM_EMB_L2"][0], float((ref_vec - alt_vec).norm()), rel_tol=1e-4)
    cos = 1 - torch.nn.functional.cosine_similarity(ref_vec, alt_vec, dim=0)
    assert math.isclose(info["GLM_EMB_COS"][0], float(cos), abs_tol=1e-6)


def test_alone_equals_among_neighbours_and_batch_and_threads(data, tmp_path, tiny_model_dir, monkeypatch):
    fasta, vcf_path = data
    methods = ["llr", "delta-ll", "embedding"]
    base = tmp_path / "all.vcf"
    sv.run(options(vcf_path, fasta, base, tiny_model_dir, methods=methods, batch_size=1))
    other = tmp_path / "b7.vcf"
    monkeypatch.setattr(engine, "WINDOW_SITES_PER_SLICE", 3)  # windows built a few sites at a time
    sv.run(options(vcf_path, fasta, other, tiny_model_dir, methods=methods, batch_size=7, threads=2))
    alone_rows = [row for row in variants() if row[:2] == ("1", 1100)]
    alone = tmp_path / "alone.vcf"
    sv.run(options(write_vcf(tmp_path / "alone_in.vcf", alone_rows), fasta, alone, tiny_model_dir, methods=methods))
    reference = {(c, p): info for c, p, _, info in read_records(base)}
    for path in (other, alone):
        for chrom, pos, _, info in read_records(path):
            for key, value in info.items():
                expected = reference[(chrom, pos)][key]
                if isinstance(value, tuple):
                    assert [v is None for v in value] == [e is None for e in expected]
                    np.testing.assert_allclose(
                        [v for v in value if v is not None], [e for e in expected if e is not None], atol=1e-5
                    )
                else:
                    assert value == expected


@pytest.fixture()
def caplog(caplog, monkeypatch):
    """caplog that sees genomelm's records even after a CLI run set the package logger not to propagate."""
    logger = logging.getLogger("genomelm")
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "handlers", [])
    return caplog


def test_aliases_lowercase_reference_and_one_warning(data, tmp_path, tiny_model_dir, caplog):
    fasta, vcf_path = data
    upper = write_fasta(tmp_path / "upper.fa", {k: v.upper() for k, v in GENOME.items()})
    with caplog.at_level("WARNING", logger="genomelm"):
        sv.run(options(vcf_path, fasta, tmp_path / "a.vcf", tiny_model_dir))
    assert len([r for r in caplog.records if "alias" in r.getMessage()]) == 1
    sv.run(options(vcf_path, upper, tmp_path / "b.vcf", tiny_model_dir))
    assert read_records(tmp_path / "a.vcf") == read_records(tmp_path / "b.vcf")
    assert [c for c, *_ in read_records(tmp_path / "a.vcf")][-3:] == ["MT", "chrT", "3"]  # VCF names kept


@pytest.mark.parametrize("name, index_name", [("out.vcf.gz", "out.vcf.gz.tbi"), ("out.bcf", "out.bcf.csi")])
def test_compressed_output_with_index(data, tmp_path, tiny_model_dir, name, index_name):
    fasta, vcf_path = data
    out = tmp_path / name
    sv.run(options(vcf_path, fasta, out, tiny_model_dir, index=True))
    assert (tmp_path / index_name).exists()
    with pysam.VariantFile(str(out)) as handle:
        fetched = [(r.pos, r.info.get("GLM_SKIP")) for r in handle.fetch("1", 1000, 3000)]
    assert fetched == [(1100, None), (2999, None), (3000, "out_of_range")]
    plain = tmp_path / "plain.vcf.gz"  # bgzipped text: same records as the plain VCF
    sv.run(options(vcf_path, fasta, plain, tiny_model_dir))
    if name.endswith(".gz"):
        assert read_records(out) == read_records(plain)
    else:  # BCF keeps full float32 precision, text VCF six significant digits
        for (*key, info), (*key2, info2) in zip(read_records(out), read_records(plain)):
            assert key == key2 and info.keys() == info2.keys() and info.get("GLM_SKIP") == info2.get("GLM_SKIP")
            if "GLM_LLR" in info:
                np.testing.assert_allclose(info["GLM_LLR"][0], info2["GLM_LLR"][0], rtol=1e-5)


def test_regions_scatter_gather_equals_whole(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    gz = str(vcf_path) + ".gz"
    pysam.tabix_compress(str(vcf_path), gz)
    pysam.tabix_index(gz, preset="vcf")
    whole = tmp_path / "whole.vcf"
    sv.run(options(gz, fasta, whole, tiny_model_dir))
    bed = tmp_path / "rest.bed"
    bed.write_text("MT\t0\t300\nchr2\t0\t800\n")  # contig names matched to the VCF's; visited in header order
    shards = [["1:1-130"], ["1:131-3000"], [str(bed)], ["chrT", "3"]]
    gathered = []
    for i, regions in enumerate(shards):
        out = tmp_path / f"shard{i}.vcf"
        sv.run(options(gz, fasta, out, tiny_model_dir, regions=regions))
        gathered += split_vcf(out.read_text())[1][1:]
    assert gathered == split_vcf(whole.read_text())[1][1:]


def test_empty_vcf_gives_valid_empty_output(tmp_path, tiny_model_dir):
    fasta = write_fasta(tmp_path / "ref.fa", GENOME)
    empty = write_vcf(tmp_path / "empty.vcf", [])
    out = tmp_path / "out.vcf.gz"
    summary = sv.run(options(empty, fasta, out, tiny_model_dir, index=True, tsv=str(tmp_path / "t.tsv")))
    assert summary.records == 0 and read_records(out) == []
    comment, columns = (tmp_path / "t.tsv").read_text().splitlines()  # provenance, then the column names
    assert comment.startswith("# genomelm_version=") and columns.startswith("chrom\tpos\tid\tref\talt\tllr_fwd")


def test_tsv_table(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    tsv = tmp_path / "t.tsv"
    sv.run(options(vcf_path, fasta, tmp_path / "o.vcf", tiny_model_dir, methods=["llr", "embedding"], tsv=str(tsv)))
    lines = [line.split("\t") for line in tsv.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == ["chrom", "pos", "id", "ref", "alt", "llr_fwd", "llr_rev", "llr", "emb_cos", "emb_l2", "skip"]
    rows = lines[1:]
    n_alts = sum(max(1, len(alleles) - 1) for _, _, alleles, _ in variants())
    assert len(rows) == n_alts
    multi = [r for r in rows if r[1] == "60"]
    assert [r[4] for r in multi][2] == "<NON_REF>" and multi[2][7] == "NA" and multi[2][-1] == "symbolic"
    assert multi[0][-1] == "NA" and float(multi[0][7]) == pytest.approx(float(multi[0][7]))
    assert [r[-1] for r in rows if r[1] == "70"] == ["ref_mismatch"]


def test_rescoring_scored_output_overwrites_values(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    first, second = tmp_path / "first.vcf", tmp_path / "second.vcf"
    sv.run(options(vcf_path, fasta, first, tiny_model_dir))
    sv.run(options(first, fasta, second, tiny_model_dir))
    first_meta, first_body = split_vcf(first.read_text())
    second_meta, second_body = split_vcf(second.read_text())
    assert second_body == first_body  # same values, overwritten in place
    # same header lines, none repeated, plus the second command line (a history, as bcftools keeps)
    commands = [x for x in second_meta if x.startswith("##genomelm_command=")]
    assert [x for x in second_meta if x not in commands] == [
        x for x in first_meta if not x.startswith("##genomelm_command")
    ]
    assert len(commands) == 2 and "first.vcf" in commands[1] and "second.vcf" in commands[1]
    assert read_records(second) == read_records(first)


def test_ref_mismatch_policy_and_strict(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    out = tmp_path / "out.vcf"
    with pytest.raises(RefMismatchError, match="1:70"):
        sv.run(options(vcf_path, fasta, out, tiny_model_dir, on_ref_mismatch="error"))
    with pytest.raises(InputError, match="--strict"):
        sv.run(options(vcf_path, fasta, out, tiny_model_dir, strict=True))
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []


def test_context_options(tiny_model_dir):
    model_l_max = 258
    opts = sv.ScoreVariantsOptions("x.vcf", "x.fa")
    assert sv.llr_tiling(opts, model_l_max) == sv.LlrTiling(128, 128)
    assert sv.llr_tiling(sv.ScoreVariantsOptions("x", "y", context=200), model_l_max) == sv.LlrTiling(200, 56)
    assert sv.llr_tiling(sv.ScoreVariantsOptions("x", "y", stride=6), model_l_max) == sv.LlrTiling(250, 6)
    assert sv.llr_tiling(sv.ScoreVariantsOptions("x", "y", context=256), model_l_max) == sv.LlrTiling(256, 3)
    for bad in (dict(context=300), dict(context=200, stride=100), dict(stride=0)):
        with pytest.raises(UsageError):
            sv.llr_tiling(sv.ScoreVariantsOptions("x", "y", **bad), model_l_max)
    assert sv.centred_window(opts, model_l_max).length == 128
    with pytest.raises(UsageError, match="longer than the model"):
        sv.centred_window(sv.ScoreVariantsOptions("x", "y", window=1000), model_l_max)


def test_read_only_fasta_directory(data, tmp_path, tiny_model_dir, monkeypatch):
    """The .fai cannot be written beside the FASTA: the index stays in memory and nothing is left."""
    fasta, vcf_path = data

    def refuse(src, dst, *args, **kwargs):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr("genomelm.formats.fasta.shutil.copyfile", refuse)  # as root, chmod would not stop us
    sv.run(options(vcf_path, fasta, tmp_path / "out.vcf", tiny_model_dir))
    assert not (tmp_path / "ref.fa.fai").exists()
    assert values(tmp_path / "out.vcf", "GLM_SKIP")[1] is None


CLI_ERRORS = [
    ("nohdr", 1, "header"),
    ("malformed", 1, "after 1:1"),
    ("truncated", 1, "truncated"),
    ("gzip_fasta", 1, "bgzip"),
    ("long_context", 2, "longer than the model allows"),
    ("bad_method", 2, "--method"),
    ("bad_prefix", 2, "--info-prefix"),
    ("index_plain", 2, "--index"),
    ("missing_vcf", 1, "not found"),
]


@pytest.mark.parametrize("case, code, message", CLI_ERRORS)
def test_cli_errors_one_line_exit_code_no_output(data, tmp_path, tiny_model_dir, case, code, message):
    fasta, vcf_path = data
    text = vcf_path.read_text()
    bad = tmp_path / "bad.vcf"
    args, out = [], tmp_path / "res" / "out.vcf.gz"
    out.parent.mkdir()
    if case == "nohdr":
        bad.write_text("".join(x + "\n" for x in text.splitlines() if not x.startswith("#")))
    elif case == "malformed":
        lines = text.splitlines()
        first = next(i for i, x in enumerate(lines) if not x.startswith("#"))
        bad.write_text("\n".join(lines[: first + 1] + ["1\tabc\t.\tA"] + lines[first + 1 :]) + "\n")
    elif case == "truncated":
        pysam.tabix_compress(str(vcf_path), str(tmp_path / "t.vcf.gz"))
        bad = tmp_path / "t.vcf.gz"
        bad.write_bytes(bad.read_bytes()[:-28])
    else:
        bad = vcf_path
    if case == "gzip_fasta":
        with gzip.open(tmp_path / "ref.fa.gz", "wb") as handle:
            handle.write(fasta.read_bytes())
        fasta = tmp_path / "ref.fa.gz"
    args = {
        "long_context": ["--context", "300"],
        "bad_method": ["--method", "gpn"],
        "bad_prefix": ["--info-prefix", "9x"],
        "index_plain": ["--index", "-o", str(tmp_path / "res" / "x.vcf")],
        "missing_vcf": [],
    }.get(case, [])
    source = str(tmp_path / "none.vcf") if case == "missing_vcf" else str(bad)
    result = runner.invoke(
        app, ["score-variants", source, "--fasta", str(fasta), "-o", str(out), "-m", str(tiny_model_dir), *args]
    )
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.count("genomelm: error:") == 1 and result.output.strip().splitlines()[-1].startswith(
        "genomelm: error:"
    )
    assert list((tmp_path / "res").iterdir()) == []


def test_cli_writes_file_and_stdout(data, tmp_path, tiny_model_dir):
    fasta, vcf_path = data
    args = ["score-variants", str(vcf_path), "--fasta", str(fasta), "-m", str(tiny_model_dir), "--method", "llr"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o.vcf"), "--method", "delta-ll", "-q"])
    assert result.exit_code == 0, result.output
    assert "GLM_DLL=" in (tmp_path / "o.vcf").read_text()
    result = runner.invoke(app, [*args, "-q"])  # default output: stdout
    assert result.exit_code == 0 and result.stdout.startswith("##fileformat")
    assert result.stdout.count("GLM_LLR=") == 7  # SNV records with a value (llr scores SNVs only)


def test_stdin_stdout_pipe_subprocess(data, tiny_model_dir):
    fasta, vcf_path = data
    proc = subprocess.run(
        [sys.executable, "-m", "genomelm", "score-variants", "-", "--fasta", str(fasta), "-m", str(tiny_model_dir)],
        input=vcf_path.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out_meta, out_body = split_vcf(proc.stdout.decode())
    assert [strip_added(x) for x in out_body] == split_vcf(vcf_path.read_text())[1]
    assert b"scored 7 of 21 records" in proc.stderr


def test_sanity_trained_model_penalises_repeat_breaking_snvs(tmp_path):
    """A model trained briefly on a periodic sequence finds mutations that break the period unlikely."""
    torch.manual_seed(0)
    model = tiny_model(seed=1).train()
    genome = "ACGT" * 250
    ids = torch.as_tensor(CharTokenizer().encode(genome))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        starts = torch.randint(0, len(genome) - 65, (8,))
        batch = torch.stack([ids[s : s + 65] for s in starts])  # (8, 65)
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model_dir = save_model(model.eval(), tmp_path / "periodic")
    fasta = write_fasta(tmp_path / "rep.fa", {"rep": genome})
    rows = [("rep", p + 1, (genome[p], "ACGT"[("ACGT".index(genome[p]) + 2) % 4])) for p in range(100, 900, 37)]
    out = tmp_path / "out.vcf"
    sv.run(options(write_vcf(tmp_path / "rep.vcf", rows, contigs=("rep",)), fasta, out, model_dir))
    llr = [v[0] for v in values(out, "GLM_LLR")]
    assert len(llr) == len(rows) and max(llr) < 0 and np.mean(llr) < -2


def test_ref_over_reference_n_is_ref_is_n_not_a_mismatch(data, tmp_path, tiny_model_dir):
    """An assembly gap under REF is its own reason, and --on-ref-mismatch error does not stop on it."""
    fasta, _ = data
    c2 = GENOME["chr2"]  # N at 0-based 400..499
    rows = [
        ("2", 451, ("A", "G")),
        ("2", 399, (c2[398:400] + "A", "A")),
        ("2", 300, ("T" if c2[299] != "T" else "A", "C")),
    ]
    out = tmp_path / "gap.vcf"
    sv.run(options(write_vcf(tmp_path / "gap_in.vcf", rows), fasta, out, tiny_model_dir, on_ref_mismatch="skip"))
    assert values(out, "GLM_SKIP") == ["ref_is_n", "ref_is_n", "ref_mismatch"]
    with pytest.raises(RefMismatchError, match="2:300"):
        sv.run(options(write_vcf(tmp_path / "gap2.vcf", rows), fasta, out, tiny_model_dir, on_ref_mismatch="error"))
    only_gaps = write_vcf(tmp_path / "gap3.vcf", rows[:2])
    summary = sv.run(options(only_gaps, fasta, out, tiny_model_dir, on_ref_mismatch="error"))
    assert summary.skipped == {"ref_is_n": 2}


def nan_model():
    model = tiny_model()
    with torch.no_grad():
        model.backbone.ln_f.weight.fill_(float("nan"))  # every output of the model is NaN
    return model


def test_non_finite_model_output_is_flagged_never_written(data, tmp_path, tiny_model_dir, monkeypatch):
    fasta, vcf_path = data
    monkeypatch.setattr(sv, "load_inference_model", lambda *args, **kwargs: nan_model())
    out, tsv = tmp_path / "nan.vcf", tmp_path / "nan.tsv"
    methods = ["llr", "delta-ll", "embedding"]
    summary = sv.run(options(vcf_path, fasta, out, tiny_model_dir, methods=methods, tsv=str(tsv)))
    records = read_records(out)
    assert all(set(info) == {"GLM_SKIP"} for *_, info in records)  # no NaN, inf nor 0 written as a score
    expected = [skip or "non_finite" for *_, skip in variants()]
    expected[variants().index(next(r for r in variants() if r[:2] == ("1", 400)))] = "too_long"
    assert [info["GLM_SKIP"] for *_, info in records] == expected
    assert summary.scored == 0 and summary.skipped["non_finite"] == expected.count("non_finite")
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[2:]]  # after provenance and column names
    assert rows and all(cell == "NA" for row in rows for cell in row[5:-1])


def test_same_bytes_whatever_the_chunks_in_flight(data, tmp_path, tiny_model_dir, monkeypatch):
    """Chunks queued ahead (engine.CHUNKS_IN_FLIGHT) change when the device runs, never the output."""
    fasta, vcf_path = data
    out = tmp_path / "out.vcf.gz"  # one path: the header's command line names it
    outputs = []
    for in_flight in (0, 1, 2, 4):
        monkeypatch.setattr(engine, "CHUNKS_IN_FLIGHT", in_flight)
        sv.run(options(vcf_path, fasta, out, tiny_model_dir, methods=["llr", "delta-ll"], batch_size=1))
        outputs.append(out.read_bytes())
    assert len(set(outputs)) == 1 and len(gzip.decompress(outputs[0]).splitlines()) > len(variants())
