"""`genomelm finetune`: learns a motif task, writes a loadable checkpoint, metrics, options, errors."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from genomelm.classify.data import encode_split, fit_length
from genomelm.classify.engine import evaluate
from genomelm.classify.metrics import auroc, classification_metrics
from genomelm.cli import app
from genomelm.commands import embed, finetune
from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.checkpoint import load_classifier, load_model, save_model
from tests.conftest import tiny_model

runner = CliRunner()
MOTIF = "GGGGGG"


def motif_rows(n: int, seed: int, length: int = 40, labels=("0", "1")) -> list[tuple[str, str]]:
    """Random DNA; the second label's sequences carry MOTIF at a random place, the first's never."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        seq = "".join(rng.choice("ACGT") for _ in range(length)).replace(MOTIF, "A" * len(MOTIF))
        if i % 2:
            at = rng.randrange(length - len(MOTIF))
            seq = seq[:at] + MOTIF + seq[at + len(MOTIF) :]
        rows.append((seq, labels[i % 2]))
    return rows


def write_csv(path, rows, header="sequence,label"):
    path.write_text(header + "\n" + "".join(f"{s},{label}\n" for s, label in rows))
    return str(path)


@pytest.fixture(scope="module")
def motif_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("motif")
    paths = {
        name: write_csv(root / f"{name}.csv", motif_rows(n, seed))
        for name, n, seed in (("train", 600, 1), ("val", 150, 2), ("test", 200, 3))
    }
    return root, paths


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_model(tiny_model(), tmp_path_factory.mktemp("base") / "tiny")


def options(paths, base, output, **changes):
    values = dict(
        train=paths["train"],
        val=paths["val"],
        test=paths.get("test"),
        model=str(base),
        output=str(output),
        epochs=10,
        batch_size=32,
        lr=3e-3,
        threads=1,
    )
    values.update(changes)
    return finetune.FinetuneOptions(**values)


@pytest.fixture(scope="module")
def trained(motif_data, base_dir):
    root, paths = motif_data
    summary = finetune.run(options(paths, base_dir, root / "out"))  # a few seconds on one CPU thread
    return summary, root / "out"


def test_motif_task_is_learned(trained):
    summary, out = trained
    assert summary.test["accuracy"] >= 0.9 and summary.test["mcc"] >= 0.8
    assert summary.val["accuracy"] >= 0.9
    assert 1 <= summary.best_epoch <= summary.epochs_run <= 10


def test_output_is_a_checkpoint_with_metrics(trained, base_dir):
    summary, out = trained
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md", "metrics.json"}
    config = json.loads((out / "config.json").read_text())
    block = config["classifier"]
    assert block["classes"] == ["0", "1"] and block["pooling"] == "mean" and block["max_length"] == 257
    assert block["truncate"] == "error" and block["add_sep"] is True
    assert config["model"]["extra"]["finetuned_from"] == "tiny"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"] == pytest.approx(summary.test) and metrics["best_epoch"] == summary.best_epoch
    assert len(metrics["history"]) == summary.epochs_run and metrics["device"] == "cpu"
    stored = load_file(out / "model.safetensors")
    assert stored["head.weight"].shape == (2, 16) and stored["head.bias"].shape == (2,)
    assert "| test | 200 |" in (out / "README.md").read_text()


def test_checkpoint_reloads_with_the_same_test_metrics(trained, motif_data):
    summary, out = trained
    model, meta = load_classifier(out)
    data = encode_split("test", _records(motif_data[1]["test"]), meta.classes, meta.max_length, "error", "t")
    again = evaluate(model, data, 7, torch.device("cpu"), "fp32")
    assert again["accuracy"] == summary.test["accuracy"]
    assert again["auroc"] == pytest.approx(summary.test["auroc"], abs=1e-6)


def _records(path):
    from genomelm.formats.labels import read_records

    return read_records(path)


def test_finetuned_dir_loads_as_backbone_for_embed(trained, tmp_path):
    _, out = trained
    lm = load_model(str(out))  # head.* ignored: a plain HyenaDNA language model
    classifier, _ = load_classifier(out)
    ids = torch.randint(7, 11, (1, 30))
    with torch.no_grad():
        assert torch.equal(lm.hidden_states(ids), classifier.hidden_states(ids))
    fasta = tmp_path / "g.fa"
    fasta.write_text(">c\n" + "ACGT" * 30 + "\n")
    result = embed.run(embed.EmbedOptions(fasta=str(fasta), output=str(tmp_path / "e.safetensors"), model=str(out)))
    assert result.rows == 1 and result.dim == 16


def test_string_classes_frozen_backbone_and_rc_aug(motif_data, base_dir, tmp_path):
    """Multi-class string labels; a linear probe leaves every backbone weight untouched."""
    rows = motif_rows(90, 4, labels=("promoter", "enhancer"))
    rows += [(s, "silencer") for s, _ in motif_rows(30, 5)]
    paths = {name: write_csv(tmp_path / f"{name}.csv", rows) for name in ("train", "val")}
    out = tmp_path / "probe"
    opts = options(paths, base_dir, out, epochs=2, freeze_backbone=True, rc_aug=True, pooling="last")
    summary = finetune.run(opts)
    assert summary.classes == ["enhancer", "promoter", "silencer"] and summary.test is None
    assert summary.trainable_parameters == 3 * 16 + 3
    assert summary.val["n"] == 120 and summary.val["auroc"] is not None  # macro one-vs-rest
    base, tuned = load_file(base_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(base[k], tuned[k]) for k in base)
    assert not torch.equal(tuned["head.weight"], torch.zeros(3, 16))


def test_random_init_replaces_the_base_weights(motif_data, base_dir, tmp_path):
    _, paths = motif_data
    small = {"train": paths["val"], "val": paths["val"]}
    finetune.run(options(small, base_dir, tmp_path / "r", epochs=1, random_init=True))
    base, tuned = load_file(base_dir / "model.safetensors"), load_file(tmp_path / "r" / "model.safetensors")
    name = "backbone.layers.0.mixer.in_proj.weight"
    assert (base[name] - tuned[name]).abs().max() > 0.01  # not the base plus one epoch of small steps


def test_metrics_against_hand_computed_values():
    labels = np.array([1, 1, 0, 0, 1])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.4, 0.6], [0.1, 0.9]])
    m = classification_metrics(labels, probs)
    # predictions 1 0 0 1 1: TP 2, FN 1, TN 1, FP 1
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["mcc"] == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["auroc"] == pytest.approx(5 / 6)  # 5 of 6 (pos, neg) pairs ranked right
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.4, 0.7, 0.4, 0.9])))
    assert auroc(np.array([0.5, 0.5, 0.5]), np.array([True, False, True])) == 0.5  # ties
    assert auroc(np.array([0.1, 0.2]), np.array([True, True])) is None
    three = classification_metrics(np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 2, 1]])
    # Gorodkin R_K: c=3, s=4, t=(1,1,2), p=(1,2,1) -> (12 - 5) / sqrt((16 - 6)(16 - 6))
    assert three["mcc"] == pytest.approx(0.7)


def test_fit_length_truncates_or_refuses():
    ids = np.arange(10)
    assert fit_length(ids, 4, "left", "x").tolist() == [6, 7, 8, 9]
    assert fit_length(ids, 4, "right", "x").tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="x: sequence of 10 bases is longer than the maximum 4; use --truncate"):
        fit_length(ids, 4, "error", "x")


@pytest.mark.parametrize(
    "train, val, error, message",
    [
        ([("ACGT", "a"), ("ACGA", "b")], [("ACGT", "c")], InputError, r"label\(s\) 'c' not among the training classes"),
        ([("ACGT", "a"), ("ACGA", "a")], [("ACGT", "a")], InputError, "need at least 2 classes"),
        ([("ACGT" * 70, "a"), ("ACGA", "b")], [("ACGT", "a")], InputError, "longer than the maximum 257"),
        ([("ACGX", "a"), ("ACGA", "b")], [("ACGT", "a")], FormatError, r"train\.csv:2: invalid character 'X'"),
    ],
)
def test_data_errors(tmp_path, base_dir, train, val, error, message):
    paths = {"train": write_csv(tmp_path / "train.csv", train), "val": write_csv(tmp_path / "val.csv", val)}
    with pytest.raises(error, match=message):
        finetune.run(options(paths, base_dir, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_truncation_makes_long_sequences_usable(tmp_path, base_dir):
    rows = [("ACGT" * 70, "a"), ("ACGA", "b")]
    paths = {"train": write_csv(tmp_path / "train.csv", rows), "val": write_csv(tmp_path / "val.csv", rows)}
    summary = finetune.run(options(paths, base_dir, tmp_path / "out", epochs=1, truncate="left", max_length=100))
    assert summary.val["n"] == 2
    assert json.loads((tmp_path / "out" / "config.json").read_text())["classifier"]["max_length"] == 100


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(pooling="max"), "--pooling"),
        (dict(metric="f2"), "--metric"),
        (dict(truncate="middle"), "--truncate"),
        (dict(epochs=0), "--epochs"),
        (dict(max_length=5000), "longer than the model takes"),
        (dict(precision="fp16"), "--precision"),
    ],
)
def test_usage_errors(motif_data, base_dir, tmp_path, changes, message):
    _, paths = motif_data
    with pytest.raises(UsageError, match=message):
        finetune.run(options(paths, base_dir, tmp_path / "out", **changes))


def test_existing_output_needs_force(motif_data, base_dir, tmp_path):
    _, paths = motif_data
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="--force"):
        finetune.run(options(paths, base_dir, tmp_path / "out"))


def test_cli_exit_codes(motif_data, base_dir, tmp_path):
    _, paths = motif_data
    common = ["finetune", "--train", paths["val"], "--val", paths["val"], "--model", str(base_dir), "--threads", "1"]
    ok = runner.invoke(app, [*common, "-o", str(tmp_path / "ok"), "--epochs", "1", "--rc-aug"])
    assert ok.exit_code == 0, ok.output
    assert "best epoch 1/1, val MCC" in ok.output
    usage = runner.invoke(app, [*common, "-o", str(tmp_path / "u"), "--pooling", "max"])
    assert usage.exit_code == 2 and "--pooling must be one of" in usage.output
    bad = write_csv(tmp_path / "bad.csv", [("ACGT", "7")])
    data = runner.invoke(
        app, ["finetune", "--train", paths["val"], "--val", bad, "--model", str(base_dir), "-o", str(tmp_path / "d")]
    )
    assert data.exit_code == 1 and "not among the training classes" in data.output


def test_subprocess_run(motif_data, base_dir, tmp_path):
    _, paths = motif_data
    args = f"finetune --train {paths['val']} --val {paths['val']} --epochs 1 --threads 1"
    cmd = [sys.executable, "-m", "genomelm", *args.split(), "--model", str(base_dir), "-o", str(tmp_path / "sub")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "metric" in result.stderr and "epoch 1/1" in result.stderr
    assert (tmp_path / "sub" / "metrics.json").exists()
