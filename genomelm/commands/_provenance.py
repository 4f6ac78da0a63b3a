"""Provenance written into every output: genomelm version, the command, the model and its SHA-256.

Nothing here depends on the time or the machine, so two identical commands write identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from pathlib import Path

from genomelm.formats.checkpoint import builtin_model_dir, named_model_dir

WEIGHT_FILES = ("model.safetensors", "weights.ckpt", "pytorch_model.bin")
_FLAGS = {"methods": "--method", "output": "--output"}  # option fields whose flag is not --<field-name>
_file_hashes: dict[tuple[str, int, int], str] = {}


def command_line(command: str, options, positional: tuple[str, ...] = ()) -> str:
    """``genomelm <command> ...`` rebuilt from an Options dataclass: the positional fields, then every
    option that differs from its default (a canonical form of what was asked, whatever the caller)."""
    words = ["genomelm", command] + [str(getattr(options, name)) for name in positional]
    for item in dataclasses.fields(options):
        value = getattr(options, item.name)
        if item.name in positional or value == _default(item):
            continue
        flag = _FLAGS.get(item.name, "--" + item.name.replace("_", "-"))
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            words += [w for v in value for w in (flag, str(v))]
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _default(item: dataclasses.Field):
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return dataclasses.MISSING


def weights_file(spec) -> Path | None:
    """The weight file ``--model spec`` loads, when it is a file on disk (None for presets)."""
    if spec is None or str(spec) == "default":
        directory = builtin_model_dir()
    elif Path(spec).is_dir():
        directory = Path(spec)
    else:
        directory = named_model_dir(str(spec))
    if directory is None:
        return None
    return next((directory / name for name in WEIGHT_FILES if (directory / name).is_file()), None)


def model_sha256(spec, model) -> str:
    """SHA-256 of the model's weight file (``sha256sum model.safetensors``); for weights without a
    file (a preset's random weights) the SHA-256 of its tensors, by name in sorted order."""
    path = weights_file(spec)
    if path is not None:
        return _file_sha256(path)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def model_line(label: str, spec, model) -> str:
    """``<name>,sha256=<hex>``: the value of ##genomelm_model and of the other outputs' model field."""
    return f"{label},sha256={model_sha256(spec, model)}"
