"""Checkpoint I/O: the official compat golden, native round trip, official layouts, safety."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genomelm.errors import FormatError, UsageError
from genomelm.formats.checkpoint import detect_layout, load_checkpoint_dir, load_model, save_model
from tests.conftest import DATA, tiny_model

COMPAT = DATA / "official_tiny_lightning"


def _official_state():
    return torch.load(COMPAT / "weights.ckpt", weights_only=True)["state_dict"]


def test_official_lightning_golden_reproduced():
    expected = load_file(COMPAT / "expected.safetensors")
    model = load_checkpoint_dir(COMPAT)
    assert model.config.filter_shift == 0.0 and model.config.extra["source"] == "lightning"
    with torch.no_grad():
        hidden = model.hidden_states(expected["input_ids"])
        logits = model(expected["input_ids"])
    assert (hidden - expected["hidden"]).abs().max() <= 1e-4
    assert (logits - expected["logits"]).abs().max() <= 1e-4


def test_filter_shift_override_changes_outputs():
    expected = load_file(COMPAT / "expected.safetensors")
    model = load_checkpoint_dir(COMPAT, filter_shift=0.05)
    assert model.config.filter_shift == 0.05
    with torch.no_grad():
        assert (model(expected["input_ids"]) - expected["logits"]).abs().max() > 1e-3


def test_native_round_trip(tmp_path):
    model = tiny_model(seed=3)
    out = save_model(model, tmp_path / "m")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    assert detect_layout(out) == "native"
    stored = load_file(out / "model.safetensors")
    assert "lm_head.weight" not in stored or "backbone.embeddings.word_embeddings.weight" not in stored
    loaded = load_checkpoint_dir(out)
    ids = torch.randint(7, 12, (2, 50))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))
    assert loaded.config.replace(extra={}) == model.config.replace(extra={})
    assert loaded.config.extra == {"trained_l_max": model.config.l_max}  # the l_max the weights were made with


def test_converted_official_model_loads_identically(tmp_path):
    official = load_checkpoint_dir(COMPAT)
    native = load_checkpoint_dir(save_model(official, tmp_path / "native"))
    assert native.config.filter_shift == 0.0
    ids = load_file(COMPAT / "expected.safetensors")["input_ids"]
    with torch.no_grad():
        assert torch.equal(official(ids), native(ids))


def test_gradient_checkpointed_layer_keys(tmp_path):
    state = {
        k.replace(".mixer.", ".mixer.layer.").replace(".mlp.", ".mlp.layer."): v for k, v in _official_state().items()
    }
    directory = tmp_path / "ckpt"
    directory.mkdir()
    shutil.copy(COMPAT / "config.json", directory)
    torch.save({"state_dict": state}, directory / "weights.ckpt")
    expected = load_file(COMPAT / "expected.safetensors")
    with torch.no_grad():
        logits = load_checkpoint_dir(directory)(expected["input_ids"])
    assert (logits - expected["logits"]).abs().max() <= 1e-4


def _write_hf_copy(directory: Path) -> None:
    """The compat weights in the Hugging Face layout (hyena.backbone. prefix, only implicit_filter.1.freq)."""
    directory.mkdir()
    state = {}
    for key, value in _official_state().items():
        if key.endswith(("implicit_filter.3.freq", "implicit_filter.5.freq")):
            continue
        new = key.replace("model.backbone.", "hyena.backbone.").replace("model.lm_head.", "lm_head.")
        state[new] = value.clone()
    save_file(state, directory / "model.safetensors")
    raw = json.loads((COMPAT / "config.json").read_text())
    hf = {
        "model_type": "hyenadna",
        "d_model": raw["d_model"],
        "n_layer": raw["n_layer"],
        "d_inner": raw["d_inner"],
        "vocab_size": 12,
        "max_seq_len": raw["layer"]["l_max"],
        "emb_dim": 5,
        "filter_order": 64,
        "short_filter_order": 3,
        "num_inner_mlps": 2,
        "activation_freq": 10,
        "hyena_order": 2,
        "pad_vocab_size_multiple": 8,
        "layer_norm_epsilon": 1e-5,
    }
    (directory / "config.json").write_text(json.dumps(hf))


def test_hugging_face_layout_uses_its_shift_convention(tmp_path):
    _write_hf_copy(tmp_path / "hf")
    assert detect_layout(tmp_path / "hf") == "huggingface"
    hf = load_checkpoint_dir(tmp_path / "hf")
    assert hf.config.filter_shift == 0.05 and hf.config.extra["source"] == "huggingface"
    lightning = load_checkpoint_dir(COMPAT, filter_shift=0.05)
    ids = load_file(COMPAT / "expected.safetensors")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(hf(ids), lightning(ids), atol=1e-6)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = _official_state()
    del state["model.backbone.layers.1.mlp.fc2.bias"]
    state["model.backbone.layers.0.mixer.extra_thing"] = torch.zeros(2)
    directory = tmp_path / "bad"
    directory.mkdir()
    shutil.copy(COMPAT / "config.json", directory)
    torch.save({"state_dict": state}, directory / "weights.ckpt")
    with pytest.raises(FormatError, match=r"missing: backbone.layers.1.mlp.fc2.bias.*unexpected: .*extra_thing"):
        load_checkpoint_dir(directory)


def test_shape_mismatch_is_named(tmp_path):
    state = _official_state()
    state["model.backbone.layers.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    directory = tmp_path / "bad"
    directory.mkdir()
    shutil.copy(COMPAT / "config.json", directory)
    torch.save({"state_dict": state}, directory / "weights.ckpt")
    with pytest.raises(FormatError, match=r"shape mismatch for backbone.layers.0.mlp.fc1.weight"):
        load_checkpoint_dir(directory)


def test_pickle_with_objects_needs_explicit_opt_in(tmp_path):
    directory = tmp_path / "pickled"
    directory.mkdir()
    shutil.copy(COMPAT / "config.json", directory)
    torch.save({"state_dict": _official_state(), "hparams": argparse.Namespace(lr=1)}, directory / "weights.ckpt")
    with pytest.raises(FormatError, match="--trust-checkpoint"):
        load_checkpoint_dir(directory)
    assert load_checkpoint_dir(directory, trust_checkpoint=True).config.d_model == 128


def test_model_resolution(tmp_path, monkeypatch):
    assert load_model("tiny-1k").config.d_model == 128  # preset: random weights
    with pytest.raises(UsageError, match="no such directory"):
        load_model(str(tmp_path / "nowhere"))
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(UsageError, match="huggingface_hub is not installed"):
        load_model("LongSafari/hyenadna-tiny-1k-seqlen-hf")


def test_saved_model_directory_is_readable_by_others(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = save_model(tiny_model(), tmp_path / "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644
