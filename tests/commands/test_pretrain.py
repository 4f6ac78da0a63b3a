"""`genomelm pretrain`: learning, exact resume, DDP (gloo), signals, divergence, bad inputs, CLI."""

import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genomelm.cli import app
from genomelm.commands import pretrain
from genomelm.errors import GenomelmError, InputError, UsageError
from genomelm.formats.checkpoint import load_model
from genomelm.tokenizer import N_ID, SEP_ID, reverse_complement_ids
from genomelm.training import load_training_state, pretrainer
from genomelm.training import windows as data
from tests.conftest import torchrun, write_fasta

runner = CliRunner()
LN4 = float(np.log(4))


def markov_dna(length: int, seed: int = 0, stay: float = 0.85) -> str:
    """An order-1 chain where each base mostly has one successor: entropy ~0.47 nats/base, far below ln 4."""
    successor = dict(zip("ACGT", "GTCA"))  # one chain for every seed: validation shares training's distribution
    rng = random.Random(seed)
    bases = ["A"]
    for _ in range(length - 1):
        bases.append(successor[bases[-1]] if rng.random() < stay else rng.choice("ACGT"))
    return "".join(bases)


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("genome")
    return write_fasta(folder / "genome.fa", {"chr1": markov_dna(12000, 0), "chr2": markov_dna(3000, 1)})


def options(fasta, run_dir, **changes) -> pretrain.PretrainOptions:
    values = dict(
        fasta=str(fasta),
        output=str(run_dir),
        d_model=16,
        n_layer=2,
        d_inner=64,
        seq_len=128,
        batch_size=4,
        steps=12,
        lr=1e-2,
        warmup_steps=2,
        eval_every=6,
        save_every=4,
        log_every=1,
        val_contigs=["chr2"],
        val_windows=4,
        threads=1,
        device="cpu",
    )
    values.update(changes)
    return pretrain.PretrainOptions(**values)


def train_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in pretrain_metrics(run_dir) if "loss" in r}


def pretrain_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- learning


def test_tiny_model_learns_a_synthetic_genome(genome, tmp_path):
    summary = pretrain.run(options(genome, tmp_path / "run", steps=60, eval_every=60, log_every=10))
    assert summary.finished and summary.stopped_by is None and summary.step == 60
    assert summary.loss < LN4 - 0.5 and summary.val_loss < LN4 - 0.5  # entropy of the chain is ~0.47
    assert summary.tokens_seen == 60 * 4 * 128
    model = load_model(str(tmp_path / "run" / "checkpoint"))  # loadable by every other command
    assert model.config.d_model == 16 and model.config.extra["step"] == 60
    val = [r for r in pretrain_metrics(tmp_path / "run") if "val_ppl" in r]
    assert len(val) == 1 and val[0]["val_ppl"] == pytest.approx(summary.val_ppl)


# --------------------------------------------------------------------------- resume


def test_resume_continues_exactly(genome, tmp_path):
    """2N steps in one run == N steps, then --resume for N more: same losses and the same final weights."""
    settings = dict(steps=8, global_batch_size=8, rc_aug=True, seqlen_warmup=4, save_every=3, eval_every=4)
    pretrain.run(options(genome, tmp_path / "whole", **settings))
    first = pretrain.run(options(genome, tmp_path / "split", stop_at_step=4, **settings))
    assert first.stopped_by == "stop-at-step" and first.step == 4
    assert load_training_state(tmp_path / "split")["step"] == 4
    second = pretrain.run(pretrain.PretrainOptions(resume=str(tmp_path / "split"), threads=1))
    assert second.finished and second.step == 8
    whole, split = train_losses(tmp_path / "whole"), train_losses(tmp_path / "split")
    assert sorted(split) == list(range(1, 9))
    for step in whole:
        assert split[step] == pytest.approx(whole[step], abs=1e-6), step
    a = load_model(str(tmp_path / "whole" / "checkpoint")).state_dict()
    b = load_model(str(tmp_path / "split" / "checkpoint")).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_on_cuda_gives_the_same_validation(genome, tmp_path):
    """On CUDA (fused AdamW, bf16): the validation after a resume equals the uninterrupted run's. It did not
    while fused optimiser steps left the inference filter caches of the previous validation in place."""
    settings = dict(steps=8, save_every=4, eval_every=4, device="cuda", precision="bf16")
    pretrain.run(options(genome, tmp_path / "whole", **settings))
    pretrain.run(options(genome, tmp_path / "split", stop_at_step=4, **settings))
    pretrain.run(pretrain.PretrainOptions(resume=str(tmp_path / "split"), threads=1))
    whole, split = (
        {r["step"]: r["val_loss"] for r in pretrain_metrics(tmp_path / run) if "val_loss" in r}
        for run in ("whole", "split")
    )
    assert sorted(whole) == sorted(split) == [4, 8]
    for step in whole:
        assert split[step] == pytest.approx(whole[step], rel=1e-3), step


def test_resume_drops_metrics_logged_after_the_checkpoint(genome, tmp_path):
    pretrain.run(options(genome, tmp_path / "run", steps=6, eval_every=100, stop_at_step=4))
    with open(tmp_path / "run" / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 5, "loss": 9.0}) + "\n")  # logged after the checkpoint, then the job died
    summary = pretrain.run(pretrain.PretrainOptions(resume=str(tmp_path / "run"), threads=1))
    assert summary.step == 6
    assert [r["step"] for r in pretrain_metrics(tmp_path / "run") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert train_losses(tmp_path / "run")[5] != 9.0


def test_resume_refuses_changed_settings_and_missing_runs(genome, tmp_path):
    pretrain.run(options(genome, tmp_path / "run", steps=2))
    with pytest.raises(UsageError, match="seq_len"):
        pretrain.run(pretrain.PretrainOptions(resume=str(tmp_path / "run"), seq_len=64))
    with pytest.raises(InputError, match="no checkpoint"):
        pretrain.run(pretrain.PretrainOptions(resume=str(tmp_path / "nothing")))
    with pytest.raises(UsageError, match="--resume"):
        pretrain.run(options(genome, tmp_path / "run", steps=2))  # a fresh start would overwrite the run
    assert pretrain.run(options(genome, tmp_path / "run", steps=2, force=True)).step == 2


# --------------------------------------------------------------------------- robustness


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(genome, tmp_path, monkeypatch):
    real = pretrainer.forward_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(pretrainer, "forward_loss", poisoned)
    with pytest.raises(GenomelmError, match=r"diverged at step 6.*last good checkpoint \(step 4\)"):
        pretrain.run(options(genome, tmp_path / "run", steps=10, save_every=4))
    assert load_training_state(tmp_path / "run")["step"] == 4
    weights = load_model(str(tmp_path / "run" / "checkpoint")).state_dict()
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_sigint_saves_a_checkpoint_then_interrupts(genome, tmp_path, monkeypatch):
    real = pretrainer.forward_loss
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 3
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrainer, "forward_loss", interrupting)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(options(genome, tmp_path / "run", steps=50, save_every=100))
    assert load_training_state(tmp_path / "run")["step"] == 3  # step 3 finished, then saved


def test_time_limit_checkpoints_and_stops(genome, tmp_path):
    summary = pretrain.run(options(genome, tmp_path / "run", steps=50, time_limit=0.001))
    assert summary.stopped_by == "time-limit" and summary.step == 1 and not summary.finished
    assert load_training_state(tmp_path / "run")["step"] == 1


def test_genome_shorter_than_seq_len_fails_before_training(genome, tmp_path):
    with pytest.raises(InputError, match="longer than every training interval"):
        pretrain.run(options(genome, tmp_path / "run", seq_len=20000, l_max=20002))
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_regions_without_usable_windows_fail_before_training(tmp_path):
    fasta = write_fasta(tmp_path / "n.fa", {"chr1": "ACGTN" * 400 + "N" * 2000, "chr2": markov_dna(2000)})
    with pytest.raises(InputError, match="at most 10% N"):
        pretrain.run(options(fasta, tmp_path / "run", max_n_frac=0.1))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(global_batch_size=6), "not a multiple"),
        (dict(preset="huge"), "--preset"),
        (dict(seq_len=4096), "l_max"),
        (dict(val_fraction=0.1), "at most one"),
        (dict(precision="fp8"), "--precision"),
        (dict(steps=0), "--steps"),
        (dict(fasta=None), "--fasta"),
    ],
)
def test_usage_errors(genome, tmp_path, changes, message):
    with pytest.raises(UsageError, match=message):
        pretrain.run(dataclasses.replace(options(genome, tmp_path / "run", l_max=258), **changes))


# --------------------------------------------------------------------------- data


def test_split_from_bed_labels_and_validation_regions_never_overlap_training(tmp_path):
    lengths = {"chr1": 10000, "chr2": 5000}
    bed = tmp_path / "split.bed"
    bed.write_text("1\t0\t6000\ttrain\nchr1\t6000\t8000\tvalid\nchr2\t0\t5000\ttest\n")
    split = data.plan_split(lengths, train_regions=str(bed))
    assert [str(i) for i in split.train] == ["chr1:1-6,000"] and [str(i) for i in split.val] == ["chr1:6,001-8,000"]
    split = data.plan_split(lengths, val_regions=["chr1:2,001-3,000"])  # 1-based inclusive
    assert [(i.contig, i.start, i.end) for i in split.train] == [
        ("chr1", 0, 2000),
        ("chr1", 3000, 10000),
        ("chr2", 0, 5000),
    ]
    split = data.plan_split(lengths, val_fraction=0.1)
    assert [(i.start, i.end) for i in split.val] == [(9000, 10000), (4500, 5000)]
    assert split.train_bases + split.val_bases == 15000


def test_sampler_windows_end_with_sep_respect_the_n_filter_and_reverse_complement():
    tokens = np.full(1000, 7, dtype=np.uint8)  # all A
    tokens[500:600] = N_ID
    sampler = data.WindowSampler([tokens], seed=1, max_n_frac=0.0, rc_aug=True)
    batch = sampler.sample(200, 64)
    assert batch.shape == (200, 65) and (batch[:, -1] == SEP_ID).all()
    assert not (batch == N_ID).any()
    strands = {tuple(row[:3]) for row in batch}
    assert strands == {(7, 7, 7), (10, 10, 10)}  # A on one strand, T on the other
    state = sampler.state()
    again = sampler.sample(5, 64)
    sampler.set_state(state)
    assert np.array_equal(sampler.sample(5, 64), again)
    assert sampler.usable_windows(64) == (500 - 64 + 1) + (1000 - 600 - 64 + 1)  # no window touches the N run


def test_validation_windows_are_fixed_tiles():
    tokens = np.tile(np.array([7, 8, 9, 10], dtype=np.uint8), 100)  # 400 bases
    windows = data.validation_windows([tokens], 64, 0.1, limit=None)
    assert windows.shape == (6, 65) and np.array_equal(windows[1, :64], tokens[64:128])
    assert data.validation_windows([tokens], 64, 0.1, limit=3).shape == (3, 65)
    assert np.array_equal(reverse_complement_ids(reverse_complement_ids(windows)), windows)


# --------------------------------------------------------------------------- CLI, subprocess, DDP


def test_cli_runs_and_maps_usage_errors(genome, tmp_path):
    args = [
        "pretrain",
        "--fasta",
        str(genome),
        "-o",
        str(tmp_path / "run"),
        "--d-model",
        "16",
        "--n-layer",
        "2",
        "--seq-len",
        "64",
        "-b",
        "2",
        "--steps",
        "3",
        "--val-contigs",
        "chr2",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "step 3/3" in result.output
    result = runner.invoke(app, args[:-4] + ["--global-batch-size", "3"])
    assert result.exit_code == 2 and "not a multiple" in result.output


def test_sigterm_in_a_real_process_checkpoints_and_exits_143(genome, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "genomelm",
        "pretrain",
        "--fasta",
        str(genome),
        "-o",
        str(run_dir),
        "--d-model",
        "16",
        "--n-layer",
        "2",
        "--seq-len",
        "64",
        "-b",
        "2",
        "--steps",
        "100000",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--save-every",
        "100000",
    ]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    # More SIGTERMs until it exits (schedulers and `timeout` signal process and group): whenever they land,
    # during the checkpoint or after it, the exit code stays 143 and stderr has one error line (issue 13, case 11).
    while process.poll() is None and time.time() < deadline + 60:
        time.sleep(0.002)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "terminated" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr and stderr.count("genomelm: error:") == 1, stderr
    step = load_training_state(run_dir)["step"]
    assert step >= 2 and load_model(str(run_dir / "checkpoint")).config.extra["step"] == step


def test_two_process_ddp_on_cpu_with_gloo(genome, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = torchrun() + [
        "-m",
        "genomelm",
        "pretrain",
        "--fasta",
        str(genome),
        "-o",
        str(run_dir),
        "--d-model",
        "16",
        "--n-layer",
        "2",
        "--seq-len",
        "64",
        "-b",
        "2",
        "--global-batch-size",
        "8",
        "--steps",
        "6",
        "--lr",
        "1e-2",
        "--warmup-steps",
        "1",
        "--val-contigs",
        "chr2",
        "--val-windows",
        "5",
        "--eval-every",
        "6",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = pretrain_metrics(run_dir)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # rank 0 alone writes metrics
    assert records[-1]["tokens_seen"] == 6 * 8 * 64
    assert records[-1]["val_bases"] == 5 * 63  # the 5 held-out windows were split over 2 ranks, then summed
    state = load_training_state(run_dir)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["ranks"][0]["sampler"] != state["ranks"][1]["sampler"]  # each rank its own data stream
    assert result.stderr.count("step 6/6,") == 1  # one summary line, from rank 0
