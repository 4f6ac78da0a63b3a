"""`genomelm convert`: any supported checkpoint layout -> the native genomelm directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genomelm.errors import UsageError
from genomelm.formats.atomic import inside, refuse_overwriting_inputs, same_file
from genomelm.formats.checkpoint import detect_layout, load_checkpoint_dir, save_model
from genomelm.log import get_logger

log = get_logger(__name__)


@dataclass
class ConvertOptions:
    source: str
    output: str
    trust_checkpoint: bool = False
    filter_shift: float | None = None  # override the source's convention (Lightning 0.0, HF 0.05)
    force: bool = False  # replace an existing output directory


@dataclass
class ConvertSummary:
    source_layout: str
    output: str
    parameters: int
    filter_shift: float


def run(opts: ConvertOptions) -> ConvertSummary:
    source, output = Path(opts.source), Path(opts.output)
    if not source.is_dir():
        raise UsageError(f"{source}: not a directory (expected an official or genomelm checkpoint directory)")
    if output.exists() and not opts.force:
        raise UsageError(f"{output} already exists; pass --force to replace it")
    refuse_overwriting_inputs({"--output": output}, [source], directories=["--output"])
    if same_file(output, source) or inside(output, source):
        raise UsageError(f"the output directory must be outside the source {source}")
    layout = detect_layout(source)
    model = load_checkpoint_dir(source, opts.trust_checkpoint, opts.filter_shift)
    save_model(model, output, converted_from=str(source), source_layout=layout)
    log.info("converted %s checkpoint %s -> %s (%s parameters)", layout, source, output, f"{model.num_parameters():,}")
    return ConvertSummary(layout, str(output), model.num_parameters(), model.config.filter_shift)
