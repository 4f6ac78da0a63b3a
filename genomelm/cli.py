"""Command line: options -> *Options dataclass -> commands.<x>.run(). The only place that exits.

torch and the command modules are imported inside each command so that `genomelm --help` and
`genomelm --version` answer quickly.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Optional

import typer

from genomelm import __version__

app = typer.Typer(
    name="genomelm",
    help="DNA language models (HyenaDNA): embeddings, variant effect scores, pretraining, fine-tuning.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False, "quiet": False}

# ---------------------------------------------------------------- shared option types

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Built-in name, checkpoint directory (genomelm, official Lightning or HF), "
        "preset (random weights) or Hugging Face id. Default: the shipped model.",
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option(help="fp32 or bf16 (autocast; the FFT stays fp32).")]
ConvBackendOpt = Annotated[
    Optional[str],
    typer.Option(
        "--conv-backend",
        help="Long-convolution backend: torch, cuda or auto (default: $GENOMELM_CONV_BACKEND or auto).",
    ),
]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="Cap torch/OpenMP CPU threads.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only; no progress bar.")]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-checkpoint", help="Allow full unpickling of a pickled checkpoint (can run code from it)."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    quiet: QuietOpt = False,
    debug: Annotated[bool, typer.Option("--debug", help="Full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug or bool(os.environ.get("GENOMELM_DEBUG"))
    _state["quiet"] = quiet


def _execute(work: Callable[[], object], quiet: bool = False) -> object:
    """Run a command; map typed errors to exit codes (1 data, 2 usage, 130 interrupted)."""
    from genomelm.errors import GenomelmError
    from genomelm.log import setup_logging

    setup_logging(quiet=quiet or _state["quiet"], debug=_state["debug"])
    try:
        return work()
    except GenomelmError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except MemoryError:
        _fail("out of memory; lower --batch-size or --window", 1)
    except Exception as exc:  # an unexpected bug: say so in one line, traceback only with --debug
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)


def _fail(message: str, code: int) -> None:
    if _state["debug"]:
        traceback.print_exc()
    typer.echo(f"genomelm: error: {message}", err=True)
    raise typer.Exit(code)


def _quiet_broken_pipe() -> None:
    # The reader of our stdout went away (e.g. `| head`): stop quietly, as Unix tools do.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


# ---------------------------------------------------------------- embed


@app.command()
def embed(
    fasta: Annotated[str, typer.Argument(help="FASTA: plain, gzip or bgzip.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output .safetensors file.")],
    model: ModelOpt = None,
    regions: Annotated[
        Optional[list[str]],
        typer.Option(
            "--regions", "-r", help="BED file (0-based) or region chr:start-end (1-based inclusive); repeatable."
        ),
    ] = None,
    window: Annotated[Optional[int], typer.Option(help="Window length (default: model max, capped at 32768).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Step between windows (default: the window).")] = None,
    pooling: Annotated[str, typer.Option(help="mean (over real bases), last, or none (per token).")] = "mean",
    layer: Annotated[int, typer.Option(help="Hidden layer: -1 final (default), 0 embeddings, i after block i.")] = -1,
    rc: Annotated[bool, typer.Option("--rc", help="Average forward and reverse-complement strands.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Windows per forward pass.")] = 8,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    force: Annotated[bool, typer.Option(help="Allow very large per-token (--pooling none) outputs.")] = False,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed windows or regions of a genome into a safetensors file (rows + coordinates + metadata)."""

    def work():
        from genomelm.commands import embed as command

        return command.run(
            command.EmbedOptions(
                fasta=fasta,
                output=output,
                model=model,
                regions=regions,
                window=window,
                stride=stride,
                pooling=pooling,
                layer=layer,
                rc=rc,
                batch_size=batch_size,
                device=device,
                precision=precision,
                conv_backend=conv_backend,
                threads=threads,
                force=force,
                trust_checkpoint=trust_checkpoint,
            )
        )

    _execute(work, quiet)


# ---------------------------------------------------------------- convert


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help="Checkpoint directory: official Lightning, Hugging Face or genomelm.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output directory (genomelm native format).")],
    filter_shift: Annotated[
        Optional[float], typer.Option(help="Override the filter modulation shift (Lightning 0.0, HF 0.05).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert an official HyenaDNA checkpoint to the native genomelm format."""

    def work():
        from genomelm.commands import convert as command

        summary = command.run(command.ConvertOptions(source, output, trust_checkpoint, filter_shift, force))
        typer.echo(f"{summary.output}: {summary.parameters:,} parameters, from {summary.source_layout}", err=True)
        return summary

    _execute(work, quiet)


def main() -> None:
    app()
