"""`genomelm in-context`: soft prompting, k-shot and instruction tuning on CPU with tiny models.

The soft-prompt test needs a model that can do the task once told which task it is: a tiny model is
pretrained here (a few seconds) on ``NNNNNNNN x [SEP] y`` where the label y is N when the motif GGGGGGGG
is in x and A otherwise, and on ``(8 random bases) x [SEP] N`` (always N). Without the NNNNNNNN prefix
the model answers N whatever x is (chance accuracy); a soft prompt of 8 vectors has to learn to stand in
for the prefix.
"""

import csv
import json
import logging
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from typer.testing import CliRunner

from genomelm.classify.metrics import mcc
from genomelm.classify.readouts import readouts
from genomelm.cli import app
from genomelm.commands import in_context
from genomelm.commands.in_context import InContextOptions, run
from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats.checkpoint import load_model, save_model
from genomelm.tokenizer import A_ID, C_ID, N_ID, SEP_ID, CharTokenizer
from tests.conftest import random_dna, tiny_model

MOTIF, MARK, LENGTH = "GGGGGGGG", "NNNNNNNN", 20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models are fastest on one thread, and the seeded results below do not depend on thread timing.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def caplog(caplog, monkeypatch):
    """caplog that sees genomelm's records even after a CLI run set the package logger not to propagate
    (and without that run's handler, whose stream CliRunner has closed)."""
    logger = logging.getLogger("genomelm")
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "handlers", [])
    return caplog


def motif_example(rng: random.Random) -> tuple[str, int]:
    """A random LENGTH-bp sequence; label 1 (half the time) when MOTIF was written into it somewhere."""
    sequence = list(random_dna(LENGTH, rng.randrange(1 << 30)))
    label = rng.randint(0, 1)
    if label:
        start = rng.randint(0, LENGTH - len(MOTIF))
        sequence[start : start + len(MOTIF)] = MOTIF
    return "".join(sequence), label


def write_csv(path, rows, header=("sequence", "label")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def motif_csv(path, n, seed):
    rng = random.Random(seed)
    return write_csv(path, [motif_example(rng) for _ in range(n)])


def pretrain_marker_model(seed: int = 0):
    """The tiny model of the module docstring: 100 steps on marked examples, then 200 on a 50/50 mix."""
    model = tiny_model(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    rng = random.Random(seed)
    for step in range(300):
        tokenizer, ids, targets = CharTokenizer(), [], []
        for _ in range(32):
            sequence, label = motif_example(rng)
            marked = step < 100 or rng.random() < 0.5
            prefix = MARK if marked else random_dna(len(MARK), rng.randrange(1 << 30))
            ids.append(np.append(tokenizer.encode(prefix + sequence), SEP_ID))
            targets.append((N_ID if label else A_ID) if marked else N_ID)
        loss = F.cross_entropy(model(torch.tensor(np.stack(ids)))[:, -1], torch.tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def marker_model_dir(tmp_path_factory):
    return str(save_model(pretrain_marker_model(), tmp_path_factory.mktemp("in_context") / "marker"))


@pytest.fixture(scope="module")
def motif_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("motif_data")
    return {"train": motif_csv(root / "train.csv", 300, 1), "test": motif_csv(root / "test.csv", 300, 2)}


@pytest.fixture(scope="module")
def soft_prompt_run(marker_model_dir, motif_data, tmp_path_factory):
    """One trained soft prompt (P=8), with snapshots of the backbone and the prompt around training."""
    seen = {}
    original = in_context.fit_soft_prompt

    def spy(ctx):
        seen["before"] = {k: v.clone() for k, v in ctx.model.state_dict().items()}
        seen["prompt_before"] = ctx.prompt.weight.detach().clone()
        report = original(ctx)
        seen["after"] = ctx.model.state_dict()
        seen["prompt_after"] = ctx.prompt.weight.detach().clone()
        return report

    mp = pytest.MonkeyPatch()
    mp.setattr(in_context, "fit_soft_prompt", spy)
    out = tmp_path_factory.mktemp("soft") / "P8"
    try:
        summary = run(_soft_options(marker_model_dir, motif_data, out, prompt_tokens=8))
    finally:
        mp.undo()
    return summary, seen, out


def _soft_options(model_dir, data, out, **changes):
    values = dict(test=data["test"], output=str(out), train=data["train"], model=model_dir, lr=1e-2, device="cpu")
    values.update(changes)
    return InContextOptions(**values)


def read_tsv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# --------------------------------------------------------------------------- soft prompting


def test_soft_prompt_raises_accuracy_well_above_chance(soft_prompt_run, marker_model_dir, motif_data, tmp_path):
    bare = run(_soft_options(marker_model_dir, motif_data, tmp_path / "P0", prompt_tokens=0))
    trained, _, out = soft_prompt_run
    assert bare.accuracy < 0.65 and abs(bare.mcc) < 0.2  # the bare model always answers N: chance
    assert trained.accuracy >= 0.9 and trained.mcc >= 0.8
    assert trained.accuracy_vocab >= 0.9  # the paper's readout (argmax over the whole vocabulary) too
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["kind"] == "soft-prompt" and metrics["soft_prompt_tokens"] == 8
    assert metrics["metrics"]["label_tokens"]["accuracy"] == trained.accuracy
    assert not (tmp_path / "P0" / "prompt.safetensors").exists()  # P = 0: nothing trained, nothing saved


def test_soft_prompt_training_leaves_the_backbone_bit_identical(soft_prompt_run):
    _, seen, _ = soft_prompt_run
    assert seen["before"].keys() == seen["after"].keys()
    for name, tensor in seen["before"].items():
        assert torch.equal(tensor, seen["after"][name]), name
    assert not torch.equal(seen["prompt_before"], seen["prompt_after"])


def test_soft_prompt_file_and_predictions(soft_prompt_run, marker_model_dir):
    summary, seen, out = soft_prompt_run
    saved = load_file(out / "prompt.safetensors")
    assert torch.equal(saved["prompt"], seen["prompt_after"]) and saved["prompt"].shape == (8, 16)
    rows = read_tsv(out / "predictions.tsv")
    assert list(rows[0]) == ["id", "predicted", "predicted_token", "prob_0", "prob_1", "shots", "label", "flag"]
    assert len(rows) == 300 and {r["flag"] for r in rows} == {"."}
    assert all(abs(float(r["prob_0"]) + float(r["prob_1"]) - 1) < 1e-5 for r in rows)
    assert np.mean([r["predicted"] == r["label"] for r in rows]) == pytest.approx(summary.accuracy)
    assert summary.prompt_path == str(out / "prompt.safetensors")


def test_prompt_reuse_predicts_new_data_without_retraining(soft_prompt_run, marker_model_dir, motif_data, tmp_path):
    _, _, out = soft_prompt_run
    unlabelled = write_csv(
        tmp_path / "new.csv", [[row[0]] for row in csv.reader(open(motif_data["test"]))][1:], header=("sequence",)
    )
    opts = InContextOptions(
        test=unlabelled,
        output=str(tmp_path / "reuse"),
        model=marker_model_dir,
        prompt=str(out / "prompt.safetensors"),
        device="cpu",
    )
    summary = run(opts)
    assert summary.accuracy is None and summary.queries == 300 and summary.skipped == 0
    assert not (tmp_path / "reuse" / "prompt.safetensors").exists()
    before, after = read_tsv(out / "predictions.tsv"), read_tsv(tmp_path / "reuse" / "predictions.tsv")
    assert "label" not in after[0]
    assert [r["predicted"] for r in after] == [r["predicted"] for r in before]
    assert np.allclose([float(r["prob_1"]) for r in after], [float(r["prob_1"]) for r in before], atol=1e-6)
    metrics = json.loads((tmp_path / "reuse" / "metrics.json").read_text())
    assert metrics["metrics"] is None and metrics["training"] is None and metrics["soft_prompt_tokens"] == 8


def test_prompt_reuse_checks_the_model(soft_prompt_run, motif_data, tmp_path, tiny_model_dir, caplog):
    _, _, out = soft_prompt_run
    prompt = str(out / "prompt.safetensors")
    wide = str(save_model(tiny_model(d_model=32, d_inner=128), tmp_path / "wide"))
    with pytest.raises(UsageError, match="d_model"):
        run(InContextOptions(test=motif_data["test"], output=str(tmp_path / "a"), model=wide, prompt=prompt))
    with caplog.at_level(logging.WARNING, logger="genomelm"):
        run(
            InContextOptions(
                test=motif_data["test"],
                output=str(tmp_path / "b"),
                model=str(tiny_model_dir),
                prompt=prompt,
                device="cpu",
            )
        )
    assert "trained with another model" in caplog.text
    with pytest.raises(UsageError, match="differs"):
        run(
            InContextOptions(
                test=motif_data["test"],
                output=str(tmp_path / "c"),
                model=str(tiny_model_dir),
                prompt=prompt,
                prompt_tokens=4,
            )
        )
    (tmp_path / "bad.safetensors").write_bytes(b"not a prompt")
    with pytest.raises(FormatError):
        run(
            InContextOptions(
                test=motif_data["test"],
                output=str(tmp_path / "d"),
                model=str(tiny_model_dir),
                prompt=str(tmp_path / "bad.safetensors"),
            )
        )
    with pytest.raises(UsageError, match="soft-prompt"):
        run(InContextOptions(test=motif_data["test"], output=str(tmp_path / "e"), method="k-shot", prompt=prompt))


# --------------------------------------------------------------------------- k-shot and instruction


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    """40-bp sequences: with the tiny model's l_max 258, k = 4 shots per class (8 x 43 + 41 tokens) do not fit."""
    root = tmp_path_factory.mktemp("long_data")
    rows = [(random_dna(40, i), i % 2) for i in range(40)]
    return {"train": write_csv(root / "train.csv", rows[:30]), "test": write_csv(root / "test.csv", rows[30:])}


def test_too_long_k_shot_prompts_use_fewer_shots_with_a_warning(tiny_model_dir, long_data, tmp_path, caplog):
    opts = InContextOptions(
        test=long_data["test"],
        output=str(tmp_path / "k4"),
        method="k-shot",
        shots=4,
        train=long_data["train"],
        model=str(tiny_model_dir),
        device="cpu",
    )
    with caplog.at_level(logging.WARNING, logger="genomelm"):
        summary = run(opts)
    assert "use fewer (down to 2)" in caplog.text
    metrics = json.loads((tmp_path / "k4" / "metrics.json").read_text())
    assert metrics["shots"] == {"requested": 4, "min": 2, "mean": 2.0}  # 4 x 43 + 41 = 213 <= 258 < 299
    assert metrics["flagged"]["prompts_with_fewer_shots"] == 10 and summary.skipped == 0
    assert {r["shots"] for r in read_tsv(tmp_path / "k4" / "predictions.tsv")} == {"2"}
    with pytest.raises(UsageError, match="--strict"):
        run(InContextOptions(**{**opts.__dict__, "output": str(tmp_path / "strict"), "strict": True}))
    assert not (tmp_path / "strict" / "metrics.json").exists()


def test_k_shot_is_reproducible_and_batch_invariant(tiny_model_dir, long_data, tmp_path):
    def predict(name, **changes):
        values = dict(
            test=long_data["test"],
            output=str(tmp_path / name),
            method="k-shot",
            shots=2,
            train=long_data["train"],
            model=str(tiny_model_dir),
            device="cpu",
        )
        run(InContextOptions(**{**values, **changes}))
        return np.array([float(r["prob_1"]) for r in read_tsv(tmp_path / name / "predictions.tsv")])

    one, many = predict("b1", eval_batch_size=1), predict("b7", eval_batch_size=7)
    assert np.allclose(one, many, atol=1e-5)
    assert np.array_equal(predict("again", eval_batch_size=7), many)
    assert not np.allclose(predict("seed1", seed=1), many, atol=1e-5)  # other demonstrations


def test_instruction_tuning_updates_and_saves_the_model(tiny_model_dir, long_data, tmp_path):
    opts = InContextOptions(
        test=long_data["test"],
        output=str(tmp_path / "inst"),
        method="instruction",
        shots=1,
        tune_samples=6,
        train=long_data["train"],
        model=str(tiny_model_dir),
        device="cpu",
    )
    summary = run(opts)
    metrics = json.loads((tmp_path / "inst" / "metrics.json").read_text())
    assert metrics["training"]["tune_prompts"] == 6 and metrics["training"]["epochs_run"] == 1
    assert summary.accuracy is not None and metrics["shots"]["min"] == 1
    tuned, base = load_model(tmp_path / "inst" / "model"), load_model(tiny_model_dir)
    changed = [k for k, v in base.state_dict().items() if not torch.equal(v, tuned.state_dict()[k])]
    assert changed  # the whole model was tuned (lr 1e-4, 3 steps of batch 2)
    again = InContextOptions(
        **{
            **opts.__dict__,
            "method": "k-shot",
            "model": str(tmp_path / "inst" / "model"),
            "output": str(tmp_path / "reuse"),
            "tune_samples": 16,
        }
    )
    assert run(again).accuracy == summary.accuracy  # same demonstrations, same tuned model


# --------------------------------------------------------------------------- flagged records, errors


def test_bad_and_too_long_queries_are_flagged_not_fatal(tiny_model_dir, tmp_path):
    train = write_csv(tmp_path / "train.csv", [(random_dna(30, i), i % 2) for i in range(10)])
    test = write_csv(tmp_path / "test.csv", [("ACGTACGT", 0), ("ACGXT", 1), ("A" * 300, 1), ("CCGT", 7)])
    summary = run(
        InContextOptions(
            test=test,
            output=str(tmp_path / "out"),
            method="k-shot",
            shots=0,
            train=train,
            model=str(tiny_model_dir),
            device="cpu",
        )
    )
    rows = read_tsv(tmp_path / "out" / "predictions.tsv")
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["flag"] == "." and rows[0]["predicted"] in ("0", "1")
    assert "invalid character 'X'" in rows[1]["flag"] and rows[1]["predicted"] == "NA"
    assert rows[2]["flag"].startswith("too long") and rows[2]["prob_0"] == "NA"
    assert rows[3]["flag"] == "unknown label '7'" and rows[3]["predicted"] != "NA"  # predicted, not scored
    assert (summary.queries, summary.scored, summary.skipped) == (4, 1, 2)
    with pytest.raises(InputError, match="--strict"):
        run(
            InContextOptions(
                test=test,
                output=str(tmp_path / "strict"),
                method="k-shot",
                shots=0,
                train=train,
                model=str(tiny_model_dir),
                device="cpu",
                strict=True,
            )
        )


def test_usage_errors(tiny_model_dir, long_data, tmp_path):
    base = dict(test=long_data["test"], output=str(tmp_path / "o"), model=str(tiny_model_dir), device="cpu")
    unlabelled = write_csv(tmp_path / "u.csv", [("ACGT",)], header=("sequence",))
    cases = [
        (dict(method="few-shot"), "--method"),
        (dict(method="k-shot", shots=2), "needs a labelled --train"),
        (dict(method="soft-prompt", prompt_tokens=4), "needs a labelled --train"),
        (dict(method="k-shot", prompt_tokens=4), "--prompt-tokens is for"),
        (dict(method="soft-prompt", prompt_tokens=258, train=long_data["train"]), "leaves no room"),
        (dict(method="k-shot", shots=0, test=unlabelled), "cannot tell the classes"),
        (dict(method="k-shot", shots=0, label_tokens="A,Q"), "not in the vocabulary"),
        (dict(output="-"), "directory"),
    ]
    for changes, message in cases:
        with pytest.raises(UsageError, match=message):
            run(InContextOptions(**{**base, **changes}))


def test_metrics():
    assert mcc(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), 2) == pytest.approx(1.0)
    assert mcc(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), 2) == pytest.approx(-1.0)
    assert mcc(np.array([0, 1, 0, 1]), np.array([0, 0, 0, 0]), 2) == 0.0
    true, pred = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])  # tp 2, tn 1, fp 1, fn 1
    assert mcc(true, pred, 2) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    logits = np.full((3, 12), -5.0, dtype=np.float32)
    logits[0, A_ID], logits[1, N_ID], logits[2, C_ID], logits[2, N_ID] = 1, 1, 9, 2
    by_label, by_vocab, probs = readouts(np.vstack([logits, np.full((1, 12), np.nan)]), [A_ID, N_ID])
    assert by_label.tolist() == [0, 1, 1, -1] and by_vocab.tolist() == [0, 1, 2, -1]  # 2: not a label token
    assert np.allclose(probs[:3].sum(axis=1), 1) and np.isnan(probs[3]).all()


# --------------------------------------------------------------------------- command line


def test_cli(tiny_model_dir, long_data, tmp_path):
    args = [
        "in-context",
        "--model",
        str(tiny_model_dir),
        "--train",
        long_data["train"],
        "--test",
        long_data["test"],
        "--method",
        "k-shot",
        "-k",
        "1",
        "-o",
        str(tmp_path / "cli"),
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "label tokens (A,N)" in result.output and "whole vocabulary" in result.output
    assert (tmp_path / "cli" / "metrics.json").exists()
    bad = CliRunner().invoke(app, [*args[:-4], "--method", "bogus", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--method must be one of" in bad.output
    missing = CliRunner().invoke(
        app,
        [
            "in-context",
            "--test",
            str(tmp_path / "nope.csv"),
            "-o",
            str(tmp_path / "y"),
            "--model",
            str(tiny_model_dir),
            "--method",
            "k-shot",
            "-k",
            "0",
        ],
    )
    assert missing.exit_code == 1 and "genomelm: error:" in missing.output


def test_subprocess(tiny_model_dir, long_data, tmp_path):
    out = tmp_path / "proc"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genomelm",
            "in-context",
            "--model",
            str(tiny_model_dir),
            "--train",
            long_data["train"],
            "--test",
            long_data["test"],
            "--method",
            "soft-prompt",
            "-P",
            "2",
            "--epochs",
            "1",
            "-o",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "whole vocabulary" in proc.stderr
    assert {p.name for p in out.iterdir()} == {"metrics.json", "predictions.tsv", "prompt.safetensors"}
