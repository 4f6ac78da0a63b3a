"""The CLI's surface (every option, its flags, default and help) stays what it was: a refactor of cli.py
must not change what users see. Regenerate the snapshot only for a deliberate change:
``python3 tests/test_cli_snapshot.py`` rewrites tests/data/cli/options.json."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import typer.main

SNAPSHOT = Path(__file__).resolve().parent / "data" / "cli" / "options.json"


def surface() -> dict:
    """{command: [ {name, opts, default, help, required, type, is_flag}, ... ]} from the Click tree."""
    from genomelm.cli import app

    group = typer.main.get_command(app)
    commands = {"": group, **group.commands}
    return {name: [describe(p) for p in command.params] for name, command in sorted(commands.items())}


def describe(param) -> dict:
    default = param.default
    return {
        "name": param.name,
        "opts": list(param.opts) + list(param.secondary_opts),
        "default": default if isinstance(default, (str, int, float, bool, type(None))) else repr(default),
        "help": getattr(param, "help", None),
        "required": param.required,
        "type": repr(param.type_descriptor.annotation),
        "multiple": param.multiple,
        "metavar": param.metavar,
        "hidden": getattr(param, "hidden", False),
        "is_flag": getattr(param, "is_flag", False),
    }


def test_cli_options_match_the_snapshot():
    assert surface() == json.loads(SNAPSHOT.read_text())


def test_command_help_texts_match_the_snapshot():
    from genomelm.cli import app

    group = typer.main.get_command(app)
    helps = {name: command.help for name, command in group.commands.items()}
    assert helps == json.loads(SNAPSHOT.with_name("help.json").read_text())


# Command -> its Options dataclass, and the CLI parameters that reach it under another name or not at all.
OPTIONS = {
    "embed": ("EmbedOptions", set()),
    "convert": ("ConvertOptions", {"threads"}),  # the CLI sets the threads itself
    "pretrain": ("PretrainOptions", set()),
    "score-variants": ("ScoreVariantsOptions", {"input_vcf", "method"}),  # -> input, methods
    "score-genome": ("ScoreGenomeOptions", set()),  # time_limit: '30m' -> seconds
    "finetune": ("FinetuneOptions", set()),
    "predict": ("PredictOptions", {"model_dir", "input_path"}),  # -> model, input
    "evaluate": ("EvaluateOptions", set()),
    "in-context": ("InContextOptions", set()),
}


def options_class(command: str):
    import importlib

    module = importlib.import_module("genomelm.commands." + command.replace("-", "_"))
    return getattr(module, OPTIONS[command][0])


def test_every_command_is_mapped_to_its_options():
    from genomelm.cli import app

    assert set(typer.main.get_command(app).commands) == set(OPTIONS)


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_options_defaults_equal_the_cli_defaults(command):
    """Options built by the CLI and Options built in Python (tests, API, benchmarks) start from the same
    defaults, and every CLI parameter (but --quiet and the renamed ones) is a field of the Options."""
    from genomelm.cli import app

    fields = {f.name: f for f in dataclasses.fields(options_class(command))}
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    assert set(params) - set(fields) == {"quiet"} | OPTIONS[command][1]
    for name, param in params.items():
        if name in fields and fields[name].default is not dataclasses.MISSING:
            assert fields[name].default == param.default, name
        elif name in fields:
            assert param.required, name


if __name__ == "__main__":
    sys.path.insert(0, str(SNAPSHOT.parents[3]))
    SNAPSHOT.write_text(json.dumps(surface(), indent=1, sort_keys=True) + "\n")
    from genomelm.cli import app

    group = typer.main.get_command(app)
    helps = {name: command.help for name, command in group.commands.items()}
    SNAPSHOT.with_name("help.json").write_text(json.dumps(helps, indent=1, sort_keys=True) + "\n")
