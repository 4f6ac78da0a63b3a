"""`genomelm convert`: official layout -> native directory, via run() and the CLI."""

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from genomelm.cli import app
from genomelm.commands import convert
from genomelm.formats.checkpoint import load_model
from tests.conftest import DATA

COMPAT = DATA / "official_tiny_lightning"
runner = CliRunner()


def test_convert_lightning_to_native_reproduces_golden(tmp_path):
    summary = convert.run(convert.ConvertOptions(str(COMPAT), str(tmp_path / "native")))
    assert summary.source_layout == "lightning" and summary.parameters == 436_096
    expected = load_file(COMPAT / "expected.safetensors")
    model = load_model(str(tmp_path / "native"))
    with torch.no_grad():
        assert (model(expected["input_ids"]) - expected["logits"]).abs().max() <= 1e-4
    assert "lightning" in (tmp_path / "native" / "config.json").read_text()


def test_cli_convert_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "native"
    assert runner.invoke(app, ["convert", str(COMPAT), "-o", str(out)]).exit_code == 0
    again = runner.invoke(app, ["convert", str(COMPAT), "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    forced = runner.invoke(app, ["convert", str(COMPAT), "-o", str(out), "--force", "--filter-shift", "0.05"])
    assert forced.exit_code == 0
    assert load_model(str(out)).config.filter_shift == 0.05


def test_cli_convert_bad_source(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["convert", str(tmp_path / "empty"), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no config.json" in result.output
    assert not (tmp_path / "x").exists()
