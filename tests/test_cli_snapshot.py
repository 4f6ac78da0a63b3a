"""The CLI's surface (every option, its flags, default and help) stays what it was: a refactor of cli.py
must not change what users see. Regenerate the snapshot only for a deliberate change:
``python3 tests/test_cli_snapshot.py`` rewrites tests/data/cli/options.json."""

import json
import sys
from pathlib import Path

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


if __name__ == "__main__":
    sys.path.insert(0, str(SNAPSHOT.parents[3]))
    SNAPSHOT.write_text(json.dumps(surface(), indent=1, sort_keys=True) + "\n")
    from genomelm.cli import app

    group = typer.main.get_command(app)
    helps = {name: command.help for name, command in group.commands.items()}
    SNAPSHOT.with_name("help.json").write_text(json.dumps(helps, indent=1, sort_keys=True) + "\n")
