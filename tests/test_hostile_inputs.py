"""Issue 13: hostile and careless inputs. One regression test per numbered case, and a corpus of bad inputs
walked across every command (no 'unexpected' error, no traceback, a documented exit code, no output left,
inputs unchanged). Everything is generated here, with tiny models."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from genomelm.cli import app
from genomelm.errors import FormatError, GenomelmError
from genomelm.formats.checkpoint import ClassifierMeta, load_model, save_classifier, save_model
from genomelm.model.lm import HyenaDNAClassifier
from genomelm.training import stop_if_diverged
from tests.conftest import random_dna, tiny_config, tiny_model, write_fasta

runner = CliRunner()
EXIT_CODES = {1, 2}  # README: 1 input/data error, 2 usage error (0 ok, 130 Ctrl-C, 143 SIGTERM)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A genome, a VCF on it, a labelled table, a base model and a fine-tuned classifier."""
    root = tmp_path_factory.mktemp("world")
    genome = random_dna(400, seed=3)
    fasta = write_fasta(root / "genome.fa", {"chr1": genome[:250], "chr2": genome[250:]})
    pysam.faidx(str(fasta))
    rows = [(random_dna(40, seed=i), "ab"[i % 2]) for i in range(8)]
    table = root / "table.csv"
    table.write_text("sequence,label\n" + "".join(f"{s},{label}\n" for s, label in rows))
    vcf = root / "calls.vcf"
    alt = "A" if genome[99] != "A" else "C"
    vcf.write_text(_vcf_header() + f"chr1\t100\t.\t{genome[99]}\t{alt}\t.\t.\tDP=3\n")
    model = save_model(tiny_model(), root / "model")
    torch.manual_seed(1)
    classifier = HyenaDNAClassifier(tiny_config(), 2, pooling="mean").eval()
    meta = ClassifierMeta(["a", "b"], "mean", max_length=60, truncate="error", add_sep=True)
    clf = save_classifier(classifier, meta, root / "clf")
    return {"root": root, "fasta": fasta, "table": table, "vcf": vcf, "model": model, "clf": clf, "genome": genome}


def _vcf_header(extra: str = "", samples: str = "") -> str:
    return (
        "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=250>\n##contig=<ID=chr2,length=150>\n"
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">\n'
        f"{extra}#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO{samples}\n"
    )


def _digest(path: Path) -> str:
    if path.is_dir():
        return "".join(_digest(p) for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _invoke(args: list[str]):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output, result.output
    return result.output


# --------------------------------------------------------------------------- 1. output names an input


def _same_file_cases(w, tmp: Path) -> list[list]:
    link = tmp / "link.csv"
    link.symlink_to(w["table"])
    out_dir = tmp / "ic"
    out_dir.mkdir()
    (out_dir / "predictions.tsv").write_text("sequence,label\nACGTACGT,a\n")
    return [
        ["embed", w["fasta"], "-o", w["fasta"], "-m", w["model"]],
        ["predict", w["clf"], w["table"], "-o", w["table"]],
        ["predict", w["clf"], w["table"], "-o", link],  # a symlink to the input
        ["predict", w["clf"], w["table"], "-o", w["clf"] / "model.safetensors"],  # the model itself
        ["evaluate", w["fasta"], "-m", w["model"], "--json", w["fasta"]],
        ["score-variants", w["vcf"], "-f", w["fasta"], "-m", w["model"], "-o", w["vcf"]],
        ["score-variants", w["vcf"], "-f", w["fasta"], "-m", w["model"], "-o", tmp / "x.vcf", "--tsv", w["fasta"]],
        ["finetune", "--train", w["table"], "--val", w["table"], "-m", w["model"], "-o", w["root"], "--force"],
        ["convert", w["model"], "-o", w["root"], "--force"],
        ["in-context", "--test", out_dir / "predictions.tsv", "-o", out_dir, "-m", w["model"], "--method", "k-shot"],
        ["pretrain", "--fasta", tmp / "run" / "run.json", "-o", tmp / "run", "--preset", "tiny-1k"],
    ]


def test_1_an_output_that_names_an_input_is_refused(world, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(">chr1\nACGT\n")
    for args in _same_file_cases(world, tmp_path):
        before = {k: _digest(v) for k, v in world.items() if isinstance(v, Path)}
        output = _one_line_error(_invoke(args), 2)
        assert "would overwrite the input" in output or "outside the source" in output, (args, output)
        assert before == {k: _digest(v) for k, v in world.items() if isinstance(v, Path)}, args


# --------------------------------------------------------------------------- 2. non-finite models


def test_2_training_stops_on_non_finite_loss_or_weights():
    model = tiny_model()
    with pytest.raises(GenomelmError, match="diverged at epoch 1, step 2: the loss is nan"):
        stop_if_diverged(float("nan"), model, "epoch 1, step 2")
    stop_if_diverged(0.5, model, "epoch 1, step 2")  # finite: nothing happens
    with torch.no_grad():
        model.backbone.ln_f.weight[0] = float("inf")
    with pytest.raises(GenomelmError, match="weight backbone.ln_f.weight became non-finite"):
        stop_if_diverged(0.5, model, "step 3")


def test_2_finetune_with_an_absurd_learning_rate_saves_nothing(world, tmp_path):
    args = ["finetune", "--train", world["table"], "--val", world["table"], "-m", world["model"]]
    result = _invoke([*args, "-o", tmp_path / "ft", "--lr", "1e30", "--epochs", "2", "-b", "4", "--threads", "1"])
    assert "training diverged" in _one_line_error(result, 1)
    assert not (tmp_path / "ft").exists()


def test_2_a_checkpoint_with_non_finite_weights_is_an_error(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.backbone.layers[1].mlp.fc1.weight[0, 0] = float("nan")
    directory = save_model(model, tmp_path / "nan")
    with pytest.raises(FormatError, match=r"nan/model.safetensors: tensor backbone.layers.1.mlp.fc1.weight"):
        load_model(directory)
    result = _invoke(["embed", tmp_path / "g.fa", "-o", tmp_path / "o.st", "-m", directory])
    write_fasta(tmp_path / "g.fa", {"c": random_dna(50)})
    result = _invoke(["embed", tmp_path / "g.fa", "-o", tmp_path / "o.st", "-m", directory])
    assert "non-finite" in _one_line_error(result, 1) and not (tmp_path / "o.st").exists()


def test_2_embed_and_predict_never_write_non_finite_values(world, tmp_path, monkeypatch):
    from genomelm.commands import embed, predict

    nan_vectors = lambda model, ids, *a: lambda: [np.full(16, np.nan, np.float32) for _ in ids]  # noqa: E731
    monkeypatch.setattr(embed, "start_embed_ids", nan_vectors)
    result = _invoke(["embed", world["fasta"], "-o", tmp_path / "e.st", "-m", world["model"]])
    assert "non-finite embeddings" in _one_line_error(result, 1) and not (tmp_path / "e.st").exists()

    monkeypatch.setattr(predict, "predict_probabilities", lambda model, ids, *a: [np.full(2, np.nan) for _ in ids])
    result = _invoke(["predict", world["clf"], world["table"], "-o", tmp_path / "p.tsv"])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in (tmp_path / "p.tsv").read_text().splitlines()[1:]]
    assert rows and all(r[-1] == "non_finite" and r[2] == "NA" for r in rows)
    strict = _invoke(["predict", world["clf"], world["table"], "-o", tmp_path / "s.tsv", "--strict"])
    assert "non-finite probabilities" in _one_line_error(strict, 1) and not (tmp_path / "s.tsv").exists()


# --------------------------------------------------------------------------- 3-4, 6-7. VCF


def _score(world, vcf: Path, out: Path, *extra) -> str:
    result = _invoke(["score-variants", vcf, "-f", world["fasta"], "-m", world["model"], "-o", out, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_3_stale_prefixed_values_are_removed_and_counted(world, tmp_path):
    genome = world["genome"]
    alt = "A" if genome[99] != "A" else "C"
    vcf = tmp_path / "stale.vcf"
    vcf.write_text(
        _vcf_header()
        + f"chr1\t100\t.\t{genome[99]}\t{alt}\t.\t.\tGLM_LLR=9.5;GLM_SKIP=old;DP=1\n"
        + f"chr1\t101\t.\t{genome[100]}\tAT\t.\t.\tGLM_LLR=9.5\n"
    )
    log = _score(world, vcf, tmp_path / "out.vcf")
    records = list(pysam.VariantFile(str(tmp_path / "out.vcf")))
    assert "GLM_SKIP" not in records[0].info and records[0].info["GLM_LLR"][0] != pytest.approx(9.5)
    assert records[0].info["DP"] == 1
    assert records[1].info["GLM_SKIP"] == "not_snv" and "GLM_LLR" not in records[1].info
    assert "replaced 3 old INFO value(s)" in log


def test_4_bcf_output_carries_the_records_of_vcf_output(world, tmp_path):
    vcf = tmp_path / "sv.vcf"
    declared = (
        '##ALT=<ID=DEL,Description="Deletion">\n##INFO=<ID=END,Number=1,Type=Integer,Description="end">\n'
        '##INFO=<ID=SVLEN,Number=.,Type=Integer,Description="length">\n'
    )
    g = world["genome"]
    vcf.write_text(
        _vcf_header(declared)
        + f"chr1\t5\t.\t{g[4]}\t<DEL>\t.\t.\tSVLEN=-10;END=40\n"  # END and SVLEN disagree: END is kept
        + f"chr1\t50\t.\t{g[49]}\t<DEL>\t.\t.\tSVLEN=-20\n"  # no END: none is added
        + f"chr1\t60\t.\t{g[59]}\tT\t.\t.\tEND=60\n"  # an END equal to POS: kept
    )
    _score(world, vcf, tmp_path / "o.vcf")
    _score(world, vcf, tmp_path / "o.bcf")
    text, binary = (list(pysam.VariantFile(str(tmp_path / n))) for n in ("o.vcf", "o.bcf"))
    assert [str(r) for r in text] == [str(r) for r in binary]
    assert [r.stop for r in binary] == [40, 70, 60]
    assert "END=40" in str(binary[0]) and "END" not in str(binary[1]) and "END=60" in str(binary[2])


def test_4_bcf_accepts_what_vcf_accepts_undeclared_keys_and_contigs(world, tmp_path):
    g = world["genome"]
    vcf = tmp_path / "u.vcf"
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\n"
    vcf.write_text(header + f"chr1\t10\t.\t{g[9]}\tT\t.\tq10\tUNDECLARED=1;END=10\tGT:XX\t0/1:3\n")
    _score(world, vcf, tmp_path / "u.vcf.out.vcf")
    _score(world, vcf, tmp_path / "u.bcf")
    text, binary = (list(pysam.VariantFile(str(tmp_path / n))) for n in ("u.vcf.out.vcf", "u.bcf"))
    assert [str(r) for r in text] == [str(r) for r in binary] and "UNDECLARED=1;END=10" in str(binary[0])


def test_4_a_file_htslib_cannot_encode_as_bcf_is_one_line(world, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise pysam.utils.SamtoolsError("bcftools returned with error 1: [E::bcf_write] Unchecked error at chr1:100")

    monkeypatch.setattr(pysam.bcftools, "view", refuse)
    result = _invoke(
        ["score-variants", world["vcf"], "-f", world["fasta"], "-m", world["model"], "-o", tmp_path / "x.bcf"]
    )
    output = _one_line_error(result, 1)
    assert "htslib cannot encode these records as BCF" in output and "chr1:100" in output
    assert os.listdir(tmp_path) == []


def test_5_cr_only_fasta_is_rejected_in_one_line(world, tmp_path):
    fasta = tmp_path / "mac.fa"
    fasta.write_bytes(b">a\rACGTACGTAC\rGT\r>b\rACGT\r")
    result = _invoke(["embed", fasta, "-o", tmp_path / "o.st", "-m", world["model"]])
    assert "CR only" in _one_line_error(result, 1) and not (tmp_path / "o.st").exists()


def _without_command_line(path) -> list[str]:
    """The output's lines less the provenance line that names the command (its paths differ by design)."""
    return [line for line in path.read_text().splitlines() if not line.startswith("##genomelm_command=")]


def test_6_plain_gzip_vcf_is_streamed_and_regions_ask_for_bgzip(world, tmp_path):
    packed = tmp_path / "calls.vcf.gz"
    packed.write_bytes(gzip.compress(world["vcf"].read_bytes()))
    _score(world, packed, tmp_path / "gz.vcf")
    _score(world, world["vcf"], tmp_path / "plain.vcf")
    assert _without_command_line(tmp_path / "gz.vcf") == _without_command_line(tmp_path / "plain.vcf")
    result = _invoke(
        ["score-variants", packed, "-f", world["fasta"], "-m", world["model"], "-o", tmp_path / "r.vcf", "-r", "chr1"]
    )
    assert "bgzip" in _one_line_error(result, 2) and not (tmp_path / "r.vcf").exists()


def test_7_non_utf8_bytes_pass_through_byte_for_byte(world, tmp_path):
    g = world["genome"]
    vcf = tmp_path / "latin1.vcf"
    body = f"chr1\t100\t.\t{g[99]}\tT\t.\t.\tDP=2;NOTE=caf\xe9\tGT\t0/1\n"
    note = (
        '##INFO=<ID=NOTE,Number=1,Type=String,Description="n">\n##FORMAT=<ID=GT,Number=1,Type=String,Description="g">\n'
    )
    vcf.write_bytes((_vcf_header(note, "\tFORMAT\tsampl\xe9") + body).encode("latin-1"))
    _score(world, vcf, tmp_path / "out.vcf")
    written = (tmp_path / "out.vcf").read_bytes()
    assert b"\tsampl\xe9\n" in written and b"NOTE=caf\xe9" in written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.vcf", "out.vcf"]  # no temporary file left


# --------------------------------------------------------------------------- 8. malformed model directories


def _native_config(tmp_path: Path, model_section) -> Path:
    directory = save_model(tiny_model(), tmp_path / "m")
    meta = json.loads((directory / "config.json").read_text())
    meta["model"] = model_section(meta["model"]) if callable(model_section) else model_section
    (directory / "config.json").write_text(json.dumps(meta))
    return directory


def _changed(**changes):
    return lambda section: {**section, **changes}


MALFORMED = {
    "list": ([1, 2], "must hold a JSON object, got list"),
    "null": (None, "must hold a JSON object, got null"),
    "string": ("model", "must hold a JSON object, got str"),
    "no model section": ({"format": "genomelm-hyenadna", "format_version": 1}, "no 'model' section"),
    "string version": ({"format": "genomelm-hyenadna", "format_version": "1", "model": {}}, "format_version must"),
}
BAD_FIELDS = {
    "d_model string": (_changed(d_model="256"), 'd_model must be a positive integer, got "256"'),
    "d_model float": (_changed(d_model=16.0), "d_model must be a positive integer, got 16.0"),
    "d_model negative": (_changed(d_model=-16), "d_model must be a positive integer, got -16"),
    "n_layer 0": (_changed(n_layer=0), "n_layer must be a positive integer, got 0"),
    "l_max negative": (_changed(l_max=-5), "l_max must be a positive integer, got -5"),
    "d_model huge": (_changed(d_model=10**6), "d_model 1000000 is larger than genomelm allows"),
    "vocab 0": (_changed(vocab_size=0), "vocab_size must be a positive integer, got 0"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_8_malformed_config_json_is_one_line(tmp_path, name):
    content, message = MALFORMED[name]
    directory = save_model(tiny_model(), tmp_path / "m")
    (directory / "config.json").write_text(json.dumps(content))
    with pytest.raises(FormatError, match=message) as error:
        load_model(directory)
    assert str(directory / "config.json") in str(error.value) or "m:" in str(error.value)


@pytest.mark.parametrize("name", list(BAD_FIELDS))
def test_8_bad_fields_name_the_file_and_field_before_allocating(tmp_path, name):
    change, message = BAD_FIELDS[name]
    directory = _native_config(tmp_path, change)
    with pytest.raises(FormatError, match=f"{directory / 'config.json'}: {message}"):
        load_model(directory)


@pytest.mark.parametrize("layout", ["lightning", "huggingface"])
def test_8_official_configs_missing_sizes(tmp_path, layout):
    directory = tmp_path / layout
    directory.mkdir()
    if layout == "lightning":
        (directory / "config.json").write_text(json.dumps({"d_model": 16, "n_layer": 2, "layer": {}}))
        torch.save({"state_dict": {}}, directory / "weights.ckpt")
        expected = "missing field layer.l_max"
    else:
        (directory / "config.json").write_text(json.dumps({"model_type": "hyenadna", "n_layer": 2, "max_seq_len": 9}))
        save_file({"x": torch.zeros(1)}, str(directory / "model.safetensors"))
        expected = "missing field d_model"
    with pytest.raises(FormatError, match=expected):
        load_model(directory)


def test_8_resume_refuses_a_pickled_state_and_a_run_json_without_options(tmp_path, world):
    run = tmp_path / "run"
    save_model(tiny_model(), run / "checkpoint")
    (run / "run.json").write_text(json.dumps({"genomelm": "0.1.0"}))
    result = _invoke(["pretrain", "--resume", run])
    assert "run.json: no usable 'options'" in _one_line_error(result, 1)
    from genomelm.training import load_training_state

    torch.save({"opt": object()}, run / "checkpoint" / "training_state.pt")
    with pytest.raises(FormatError, match="training_state.pt: not a genomelm training state"):
        load_training_state(run)


# --------------------------------------------------------------------------- 9. usage errors


def test_9_conv_backend_errors_are_usage_errors_with_the_choices(world, tmp_path):
    args = ["embed", world["fasta"], "-o", tmp_path / "o.st", "-m", world["model"]]
    output = _one_line_error(_invoke([*args, "--conv-backend", "triton"]), 2)
    assert "auto, torch, cuda" in output
    if not torch.cuda.is_available():
        output = _one_line_error(_invoke([*args, "--conv-backend", "cuda", "--device", "cpu"]), 2)
        assert "--conv-backend torch" in output
    predict = ["predict", world["clf"], world["table"], "--conv-backend", "triton"]
    assert "auto, torch, cuda" in _one_line_error(_invoke(predict), 2)


def test_9_evaluate_checks_its_output_before_the_work(world, tmp_path, monkeypatch):
    from genomelm.commands import evaluate

    monkeypatch.setattr(evaluate, "load_inference_model", lambda *a, **k: pytest.fail("loaded the model first"))
    result = _invoke(["evaluate", world["fasta"], "-m", world["model"], "--json", tmp_path / "no" / "dir" / "r.json"])
    assert "directory does not exist" in _one_line_error(result, 1)


def test_9_one_rule_per_mistake(world, tmp_path):
    missing = tmp_path / "missing" / "out"
    cases = [
        ["embed", world["fasta"], "-o", missing, "-m", world["model"]],
        ["predict", world["clf"], world["table"], "-o", missing],
        ["evaluate", world["fasta"], "-m", world["model"], "--json", missing],
        ["score-variants", world["vcf"], "-f", world["fasta"], "-m", world["model"], "-o", f"{missing}.vcf"],
    ]
    for args in cases:  # a file output in a directory that does not exist: exit 1 everywhere, nothing created
        assert "does not exist" in _one_line_error(_invoke(args), 1), args
    assert not missing.parent.exists()
    for command in (["embed", world["fasta"], "-o", tmp_path / "w.st"], ["evaluate", world["fasta"]]):
        assert "--window must be >= 1" in _one_line_error(_invoke([*command, "-m", world["model"], "--window", 0]), 2)


# --------------------------------------------------------------------------- 10. disk full


def test_10_file_size_limit_is_one_line_and_leaves_nothing(world, tmp_path):
    out = tmp_path / "big.safetensors"
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
        "from genomelm.cli import main; sys.argv = ['genomelm'] + sys.argv[1:]; main()"
    )
    args = ["embed", world["fasta"], "-o", out, "-m", world["model"], "--pooling", "none", "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().startswith(f"genomelm: error: cannot write {out}: "), proc.stderr
    assert "file too large" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- 11. second SIGTERM


def test_11_after_the_first_sigterm_later_ones_are_ignored():
    from genomelm import cli

    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(cli._Terminated):
            cli._raise_terminated(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the clean-up runs undisturbed, exit 143
    finally:
        signal.signal(signal.SIGTERM, before)


# --------------------------------------------------------------------------- the corpus, across every command


def _bad_inputs(root: Path) -> dict[str, Path]:
    """Files a careless or hostile user might pass, in place of any input."""
    bad = {
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "latin1": ">x\nACGT\xe9\n".encode("latin-1"),
        "cr_only": b">a\rACGT\r",
        "truncated_gzip": gzip.compress(b">a\n" + bytes(range(65, 91)) * 300)[:60],
        "json_list": b"[1, 2, 3]",
    }
    root.mkdir()
    paths = {name: root / f"{name}.dat" for name in bad}
    for name, data in bad.items():
        paths[name].write_bytes(data)
    paths["directory"] = root / "a_directory"
    paths["directory"].mkdir()
    paths["missing"] = root / "missing.dat"
    model = tiny_model()
    with torch.no_grad():
        model.backbone.ln_f.bias[0] = float("nan")
    paths["nan_model"] = save_model(model, root / "nan_model")
    paths["list_config_model"] = save_model(tiny_model(), root / "list_config_model")
    (paths["list_config_model"] / "config.json").write_text("[]")
    return paths


READ_CORRECTLY = ("empty", "cr_only")  # the record readers (tables, FASTA) use universal newlines


def _corpus_commands(w, bad: Path, out: Path) -> list[list]:
    """Each command with ``bad`` in the place of one of its inputs, writing to ``out``."""
    model = w["model"]
    return [
        ["embed", bad, "-o", out, "-m", model],
        ["evaluate", bad, "-m", model, "--json", out],
        ["predict", w["clf"], bad, "-o", out],
        ["predict", bad, w["table"], "-o", out],
        ["score-variants", bad, "-f", w["fasta"], "-m", model, "-o", out.with_suffix(".vcf")],
        ["score-variants", w["vcf"], "-f", bad, "-m", model, "-o", out.with_suffix(".vcf")],
        ["finetune", "--train", bad, "--val", w["table"], "-m", model, "-o", out, "--epochs", "1"],
        ["in-context", "--test", bad, "--train", w["table"], "-m", model, "-o", out, "--method", "k-shot"],
        ["convert", bad, "-o", out],
        ["pretrain", "--fasta", bad, "-o", out, "--preset", "tiny-1k", "--steps", "1"],
        ["embed", w["fasta"], "-o", out, "-m", bad],
        ["evaluate", w["fasta"], "-m", bad, "--json", out],
        ["score-variants", w["vcf"], "-f", w["fasta"], "-m", bad, "-o", out.with_suffix(".vcf")],
        ["finetune", "--train", w["table"], "--val", w["table"], "-m", bad, "-o", out, "--epochs", "1"],
    ]


def test_corpus_of_bad_inputs_across_every_command(world, tmp_path):
    bad_inputs = _bad_inputs(tmp_path / "bad")
    before = {name: _digest(path) for name, path in bad_inputs.items() if path.exists()}
    world_before = {k: _digest(v) for k, v in world.items() if isinstance(v, Path)}
    for name, bad in bad_inputs.items():
        out_dir = tmp_path / f"out-{name}"
        out_dir.mkdir()
        for args in _corpus_commands(world, bad, out_dir / "out"):
            result = _invoke(args)
            where = f"{name}: {' '.join(map(str, args[:2]))}: {result.output}"
            assert "unexpected" not in result.output and "Traceback" not in result.output, where
            if result.exit_code == 0 and name in READ_CORRECTLY and args[0] in ("predict", "in-context"):
                # zero records, or a FASTA record read with universal newlines: a valid (small) result
                shutil.rmtree(out_dir / "out") if (out_dir / "out").is_dir() else (out_dir / "out").unlink()
                continue
            assert result.exit_code in EXIT_CODES, where
            assert os.listdir(out_dir) == [], where  # no output, no temporary file
    assert before == {name: _digest(path) for name, path in bad_inputs.items() if path.exists()}
    assert world_before == {k: _digest(v) for k, v in world.items() if isinstance(v, Path)}


# --------------------------------------------------------------------------- smaller ones


def test_a_garbage_fai_is_rebuilt_not_trusted(tmp_path, world):
    fasta = write_fasta(tmp_path / "g.fa", {"c": random_dna(80)})
    (tmp_path / "g.fa.fai").write_text("garbage line\n")
    result = _invoke(["embed", fasta, "-o", tmp_path / "o.st", "-m", world["model"], "--window", 40])
    assert result.exit_code == 0, result.output
    assert "g.fa.fai cannot be used" in result.output and (tmp_path / "g.fa.fai").read_text().startswith("c\t80\t")


def test_a_mistyped_relative_model_path_is_not_a_hub_id(tmp_path, world, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    result = _invoke(["embed", world["fasta"], "-o", tmp_path / "o.st", "-m", "models/tiyn"])
    assert "--model models/tiyn: no such directory (models has no 'tiyn')" in _one_line_error(result, 2)


def test_an_edited_l_max_is_warned_about(tmp_path, monkeypatch):
    from genomelm.formats import checkpoint

    seen = []
    monkeypatch.setattr(checkpoint.log, "warning", lambda message, *args: seen.append(message % args))
    load_model(save_model(tiny_model(), tmp_path / "same"))
    assert seen == []
    load_model(_native_config(tmp_path, _changed(l_max=300)))
    assert len(seen) == 1 and "l_max 300 differs from the 258 the weights were trained with" in seen[0]


def test_index_errors_do_not_show_the_hidden_temporary_name(world, tmp_path):
    g = world["genome"]
    vcf = tmp_path / "unsorted.vcf"
    vcf.write_text(_vcf_header() + f"chr1\t50\t.\t{g[49]}\tT\t.\t.\t.\nchr1\t5\t.\t{g[4]}\tT\t.\t.\t.\n")
    out = tmp_path / "o.vcf.gz"
    result = _invoke(["score-variants", vcf, "-f", world["fasta"], "-m", world["model"], "-o", out, "--index"])
    output = _one_line_error(result, 1)
    assert "must be sorted" in output and ".tmp" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unsorted.vcf"]


def test_library_warnings_are_one_line(capsys):
    import warnings

    from genomelm import log

    original = warnings.showwarning
    try:
        log.setup_logging()
        warnings.showwarning("first line\n  second line", UserWarning, "lib.py", 7)
        assert capsys.readouterr().err == "genomelm: WARNING: first line second line\n"
    finally:
        warnings.showwarning = original


def test_2_a_soft_prompt_with_non_finite_values_does_not_load(tmp_path):
    from genomelm.formats import soft_prompt

    path = tmp_path / "prompt.safetensors"
    metadata = {"format": soft_prompt.PROMPT_FORMAT, "format_version": str(soft_prompt.PROMPT_FORMAT_VERSION)}
    save_file({"prompt": torch.full((4, 16), float("nan"))}, str(path), metadata=metadata)
    with pytest.raises(FormatError, match="prompt.safetensors: tensor prompt holds non-finite values"):
        soft_prompt.load_prompt(str(path), tiny_model())
