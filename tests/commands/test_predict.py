"""`genomelm predict`: TSV layout, values, batch invariance, input layouts, flagged records, errors."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genomelm.cli import app
from genomelm.commands import predict
from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.checkpoint import ClassifierMeta, save_classifier, save_model
from genomelm.model.lm import HyenaDNAClassifier
from genomelm.tokenizer import SEP_ID, CharTokenizer
from tests.conftest import random_dna, tiny_config, tiny_model, write_fasta

runner = CliRunner()
CLASSES = ["enhancer", "promoter", "silencer"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A 3-class classifier with a random backbone and a random (non-trivial) head; max length 60 bases."""
    torch.manual_seed(1)
    model = HyenaDNAClassifier(tiny_config(), len(CLASSES), pooling="mean").eval()
    torch.nn.init.normal_(model.head.weight, std=2.0)
    meta = ClassifierMeta(CLASSES, "mean", max_length=60, truncate="error", add_sep=True)
    return save_classifier(model, meta, tmp_path_factory.mktemp("clf") / "model"), model


@pytest.fixture(scope="module")
def sequences():
    lengths = [5, 60, 17, 33, 1, 48, 60, 12, 29]
    return [random_dna(n, seed=i) for i, n in enumerate(lengths)]


def write_table(path, sequences, labels=None, sep=","):
    header = ["id", "sequence"] + (["label"] if labels else [])
    lines = [sep.join(header)]
    for i, seq in enumerate(sequences):
        lines.append(sep.join([f"s{i}", seq] + ([labels[i]] if labels else [])))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def read_tsv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def options(model_dir, input_path, output, **changes):
    values = dict(model=str(model_dir), input=str(input_path), output=str(output), threads=1)
    values.update(changes)
    return predict.PredictOptions(**values)


def expected_probs(model, sequence):
    ids = np.append(CharTokenizer().encode(sequence), SEP_ID)
    with torch.no_grad():
        logits = model(torch.as_tensor(ids)[None], torch.tensor([len(ids)]))
    return torch.softmax(logits, -1)[0].numpy()


def test_tsv_layout_and_values(classifier_dir, sequences, tmp_path):
    directory, model = classifier_dir
    table = write_table(tmp_path / "in.csv", sequences)
    summary = predict.run(options(directory, table, tmp_path / "p.tsv"))
    rows = read_tsv(tmp_path / "p.tsv")
    assert list(rows[0]) == ["id", "predicted", "prob_enhancer", "prob_promoter", "prob_silencer", "flag"]
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(len(sequences))]
    assert summary.records == summary.predicted == len(sequences) and summary.flagged == 0
    assert summary.metrics is None
    for row, seq in zip(rows, sequences):
        probs = np.array([float(row[f"prob_{c}"]) for c in CLASSES])
        np.testing.assert_allclose(probs, expected_probs(model, seq), atol=1e-5)
        assert row["predicted"] == CLASSES[int(np.argmax(probs))] and row["flag"] == "."
    assert len({r["predicted"] for r in rows}) > 1  # the random head does not predict one class for all


def test_batch_size_does_not_change_predictions(classifier_dir, sequences, tmp_path):
    directory, _ = classifier_dir
    table = write_table(tmp_path / "in.csv", sequences)
    results = []
    for batch_size in (1, 4, 64):
        predict.run(options(directory, table, tmp_path / f"b{batch_size}.tsv", batch_size=batch_size))
        rows = read_tsv(tmp_path / f"b{batch_size}.tsv")
        results.append(np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows]))
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-5)


def test_fasta_bed_and_table_inputs_agree(classifier_dir, sequences, tmp_path):
    directory, _ = classifier_dir
    table = write_table(tmp_path / "in.tsv", sequences, sep="\t")
    fasta = write_fasta(tmp_path / "in.fa", {f"s{i}": s for i, s in enumerate(sequences)})
    genome = "".join(sequences)
    reference = write_fasta(tmp_path / "ref.fa", {"chr1": genome})
    starts = np.cumsum([0] + [len(s) for s in sequences])
    bed = tmp_path / "in.bed"
    bed.write_text("".join(f"chr1\t{a}\t{b}\ts{i}\n" for i, (a, b) in enumerate(zip(starts[:-1], starts[1:]))))
    outputs = {}
    for name, path, extra in (("table", table, {}), ("fasta", fasta, {}), ("bed", bed, {"fasta": str(reference)})):
        predict.run(options(directory, path, tmp_path / f"{name}.tsv", **extra))
        outputs[name] = read_tsv(tmp_path / f"{name}.tsv")
    assert outputs["table"] == outputs["fasta"]
    # BED column 4 is taken as the label here, so the BED output has a label column on top.
    assert [{k: v for k, v in r.items() if k != "label"} for r in outputs["bed"]] == [
        {**r, "id": f"chr1:{a + 1}-{b}"} for r, a, b in zip(outputs["table"], starts[:-1], starts[1:])
    ]


def test_bad_records_are_flagged_and_counted(classifier_dir, tmp_path):
    directory, _ = classifier_dir
    table = write_table(tmp_path / "in.csv", ["ACGT", "ACXGT", "A" * 61, "GGCC"])
    summary = predict.run(options(directory, table, tmp_path / "p.tsv"))
    rows = read_tsv(tmp_path / "p.tsv")
    assert (summary.records, summary.predicted, summary.flagged) == (4, 2, 2)
    assert rows[1]["predicted"] == "NA" and rows[1]["prob_enhancer"] == "NA"
    assert rows[1]["flag"].startswith("invalid character 'X' at position 3")
    assert rows[2]["flag"].startswith("sequence of 61 bases is longer than the maximum 60")
    assert rows[0]["flag"] == rows[3]["flag"] == "."
    truncated = predict.run(options(directory, table, tmp_path / "t.tsv", truncate="left"))
    assert truncated.flagged == 1


def test_strict_fails_and_leaves_no_output(classifier_dir, tmp_path):
    directory, _ = classifier_dir
    table = write_table(tmp_path / "in.csv", ["ACGT", "ACXGT"])
    with pytest.raises(FormatError, match=r"in\.csv:3: invalid character"):
        predict.run(options(directory, table, tmp_path / "p.tsv", strict=True))
    assert list(tmp_path.iterdir()) == [tmp_path / "in.csv"]


def test_labels_give_metrics(classifier_dir, sequences, tmp_path):
    directory, model = classifier_dir
    labels = [CLASSES[i % 3] for i in range(len(sequences))]
    table = write_table(tmp_path / "in.csv", sequences, labels)
    summary = predict.run(options(directory, table, tmp_path / "p.tsv", metrics=str(tmp_path / "m.json")))
    rows = read_tsv(tmp_path / "p.tsv")
    assert [r["label"] for r in rows] == labels and list(rows[0])[-2:] == ["label", "flag"]
    predicted = [r["predicted"] for r in rows]
    assert summary.metrics["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, labels)]))
    assert json.loads((tmp_path / "m.json").read_text())["metrics"] == pytest.approx(summary.metrics)


def test_errors(classifier_dir, tmp_path):
    directory, _ = classifier_dir
    table = write_table(tmp_path / "in.csv", ["ACGT"])
    lm_dir = save_model(tiny_model(), tmp_path / "lm")
    with pytest.raises(UsageError, match="not a fine-tuned classifier"):
        predict.run(options(lm_dir, table, tmp_path / "p.tsv"))
    with pytest.raises(InputError, match="model directory not found"):
        predict.run(options(tmp_path / "nope", table, tmp_path / "p.tsv"))
    with pytest.raises(UsageError, match="--truncate"):
        predict.run(options(directory, table, tmp_path / "p.tsv", truncate="middle"))
    with pytest.raises(FormatError, match="no sequence column"):
        (tmp_path / "x.csv").write_text("foo,bar\nACGT,1\n")
        predict.run(options(directory, tmp_path / "x.csv", tmp_path / "p.tsv"))
    assert not (tmp_path / "p.tsv").exists()


def test_cli_writes_stdout_and_maps_errors(classifier_dir, sequences, tmp_path):
    directory, _ = classifier_dir
    table = write_table(tmp_path / "in.csv", sequences[:3])
    result = runner.invoke(app, ["predict", str(directory), table, "--batch-size", "2", "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().split("\n")
    assert lines[0].startswith("id\tpredicted\tprob_enhancer") and len(lines) == 4
    usage = runner.invoke(app, ["predict", str(save_model(tiny_model(), tmp_path / "lm")), table])
    assert usage.exit_code == 2 and "not a fine-tuned classifier" in usage.output
    strict = runner.invoke(app, ["predict", str(directory), write_table(tmp_path / "b.csv", ["AXC"]), "--strict"])
    assert strict.exit_code == 1 and "invalid character" in strict.output


def test_subprocess_pipe_from_stdin_to_stdout(classifier_dir, sequences, tmp_path):
    directory, model = classifier_dir
    table = write_table(tmp_path / "in.csv", sequences[:4])
    with open(table) as stdin:
        result = subprocess.run(
            [sys.executable, "-m", "genomelm", "predict", str(directory), "-", "--threads", "1"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines(), delimiter="\t"))
    assert [r["id"] for r in rows] == ["s0", "s1", "s2", "s3"]
    probs = np.array([float(rows[2][f"prob_{c}"]) for c in CLASSES])
    np.testing.assert_allclose(probs, expected_probs(model, sequences[2]), atol=1e-5)
    assert "predicted 4 record(s)" in result.stderr
