"""Shared training pieces: schedules, sequence-length warmup, stop signals, checkpoints, metrics."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from genomelm.formats.checkpoint import load_model
from genomelm.training import (
    MetricsLog,
    StopRequest,
    cosine_lr_factor,
    gather_objects,
    load_training_state,
    make_optimizer,
    param_groups,
    portable_rng_state,
    save_checkpoint,
    seqlen_at,
    seqlen_stages,
    sequences_per_batch,
    set_rng_state,
)
from tests.conftest import tiny_model


def test_seqlen_stages_double_from_64_below_the_target():
    assert seqlen_stages(1024) == [64, 128, 256, 512]
    assert seqlen_stages(1000) == [64, 128, 256, 512]
    assert seqlen_stages(64) == [] and seqlen_stages(32) == []


def test_seqlen_warmup_spends_equal_steps_per_stage_then_trains_at_full_length():
    lengths = [seqlen_at(step, 1024, warmup_steps=8) for step in range(12)]
    assert lengths == [64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024, 1024, 1024]
    assert [seqlen_at(s, 1024, warmup_steps=0) for s in range(3)] == [1024] * 3
    assert seqlen_at(0, 48, warmup_steps=100) == 48  # nothing shorter than 64 to warm up with


def test_seqlen_warmup_keeps_tokens_per_step():
    for length in seqlen_stages(8192) + [8192]:
        count = sequences_per_batch(4, 8192, length)
        assert count * length == 4 * 8192


def test_cosine_schedule_warms_up_then_decays_to_min_ratio():
    factors = [cosine_lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[110] == pytest.approx(0.1)


def test_param_groups_decay_only_weight_matrices():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 and ".filter_fn." not in names[id(p)] for p in decay["params"])
    assert any(".filter_fn.implicit_filter" in names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1


def test_stop_request_turns_signals_into_a_flag_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
    assert signal.getsignal(signal.SIGTERM) is before
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and stop.signal_name == "SIGTERM"
            os.kill(os.getpid(), signal.SIGTERM)  # a second one (process and group signalled) changes nothing
            assert stop.signal_name == "SIGTERM"
        # on the way out (exit 143): a later SIGTERM must not interrupt the clean-up (issue 13, case 11)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_second_sigint_interrupts_at_once():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_checkpoint_is_a_loadable_model_dir_with_a_safe_training_state(tmp_path):
    model = tiny_model()
    state = {"step": 3, "rng": portable_rng_state(), "sampler": np.random.default_rng(1).bit_generator.state}
    path = save_checkpoint(tmp_path, model, state, step=3)
    assert sorted(p.name for p in path.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "training_state.pt",
    ]
    loaded = load_model(str(path))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert json.loads((path / "config.json").read_text())["model"]["extra"]["step"] == 3
    assert load_training_state(tmp_path)["step"] == 3  # torch.load(weights_only=True) accepts it
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask  # not the private mode of a temporary directory
    # A second save replaces the first and leaves no staging directories behind.
    save_checkpoint(tmp_path, model, {**state, "step": 4})
    assert load_training_state(tmp_path)["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_model()
    save_checkpoint(tmp_path, model, {"step": 1})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model, {"step": 2})
    monkeypatch.undo()
    assert load_training_state(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_portable_rng_state_round_trips():
    state = portable_rng_state()
    expected = (np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (np.random.rand(), torch.rand(1).item()) == expected


def test_metrics_log_truncates_records_after_the_resumed_step(tmp_path):
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        metrics.write({"step": step, "loss": 1.0 / step})
    metrics.truncate_after(3)
    assert [r["step"] for r in metrics.read()] == [1, 2, 3]
    silent = MetricsLog(tmp_path / "other.jsonl", enabled=False)
    silent.write({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_gather_objects_single_process():
    from genomelm.training import DistInfo

    assert gather_objects({"a": 1}, DistInfo()) == [{"a": 1}]


def _logits_after_a_fused_step(model, tokens, optimizer, between=lambda: None):
    """Inference (filling the filter caches), one fused-AdamW step, inference again; returns (before, after)."""
    model.eval()
    with torch.no_grad():
        before = model(tokens)
    model.train() if between == "toggle" else None
    loss = model(tokens).float().logsumexp(-1).mean()
    loss.backward()
    optimizer.step()
    model.eval() if between == "toggle" else None
    with torch.no_grad():
        after = model(tokens)
    return before, after


def _fresh_logits(model, tokens):
    """The same weights in a new model object: nothing cached."""
    twin = tiny_model()
    twin.load_state_dict(model.state_dict())
    twin.eval()
    with torch.no_grad():
        return twin(tokens)


def test_fused_adamw_step_does_not_leave_inference_filters_stale():
    # torch's fused AdamW does not bump version counters; make_optimizer marks the parameters changed.
    torch.manual_seed(0)
    model = tiny_model()
    tokens = torch.randint(7, 11, (2, 64))
    optimizer = make_optimizer(model, lr=0.05, weight_decay=0.1, fused=True)
    before, after = _logits_after_a_fused_step(model, tokens, optimizer)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _fresh_logits(model, tokens), rtol=0, atol=0)


def test_train_eval_cycle_forgets_cached_filters():
    # An external loop with its own fused optimizer: the usual train()/eval() switch drops the cached filter.
    torch.manual_seed(0)
    model = tiny_model()
    tokens = torch.randint(7, 11, (2, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    _, after = _logits_after_a_fused_step(model, tokens, optimizer, between="toggle")
    torch.testing.assert_close(after, _fresh_logits(model, tokens), rtol=0, atol=0)
