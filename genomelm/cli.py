"""Command line: options -> *Options dataclass -> commands.<x>.run(). The only place that exits.

torch and the command modules are imported inside each command so that `genomelm --help` and
`genomelm --version` answer quickly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
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
# embed, score-variants and score-genome: runtime.default_batch_size
BATCH_DEFAULT = "(default: 8 on a GPU; on a CPU as many as fit 32,768 tokens)"
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="fp32 or bf16 (autocast). On the cuda backend bf16 inference at 16K-262K tokens uses the fast bf16 "
        "FFT; $GENOMELM_CONV_MODE=precise|fast overrides."
    ),
]
ConvBackendOpt = Annotated[
    Optional[str],
    typer.Option(
        "--conv-backend",
        help="Long-convolution backend: torch, cuda or auto (default: $GENOMELM_CONV_BACKEND or auto).",
    ),
]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="Cap torch/OpenMP CPU threads.")]
VariantThreadsOpt = Annotated[
    Optional[int],
    typer.Option(help="Cap torch/OpenMP CPU threads; 1 also keeps a .vcf.gz output's compression on the main thread."),
]
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
    compile_blocks: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile the model's blocks (GPU; the first batch of each shape pays the compilation). "
            "Same as $GENOMELM_COMPILE=1.",
        ),
    ] = False,
) -> None:
    _state["debug"] = debug or bool(os.environ.get("GENOMELM_DEBUG"))
    if compile_blocks:
        os.environ["GENOMELM_COMPILE"] = "1"  # read where every command sets the model's kernels
    _state["quiet"] = quiet
    _use_genomelm_home()


def _use_genomelm_home() -> None:
    """With $GENOMELM_HOME set, Triton caches its compiled kernels there too (default: ~/.triton)."""
    home = os.environ.get("GENOMELM_HOME", "").strip()
    if home:
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(os.path.expanduser(home), "triton"))


def _execute(work: Callable[[], object], quiet: bool = False) -> object:
    """Run a command; map typed errors to exit codes (1 data, 2 usage, 130 interrupted, 143 SIGTERM)."""
    from genomelm.errors import GenomelmError
    from genomelm.log import setup_logging

    setup_logging(quiet=quiet or _state["quiet"], debug=_state["debug"])
    try:
        return work()
    except GenomelmError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except _Terminated:
        _ignore_sigterm()
        _fail("terminated (SIGTERM)", 143)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except MemoryError:
        _fail("out of memory; lower --batch-size or --window", 1)
    except OSError as exc:
        _fail_os_error(exc)
    except Exception as exc:  # an unexpected bug: say so in one line, traceback only with --debug
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)


def _options(cls: type, values: dict, **converted: object) -> object:
    """A command's Options dataclass from the CLI parameters named like its fields (one declaration per
    option: the Typer signature; tests/test_cli_snapshot.py checks that the dataclass defaults agree).
    ``converted`` gives the fields whose CLI form differs: another name, or a value to transform."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    if set(converted) - names:
        raise TypeError(f"{cls.__name__} has no field {sorted(set(converted) - names)}")
    return cls(**{k: v for k, v in values.items() if k in names and k not in converted}, **converted)


def _fail(message: str, code: int) -> None:
    if _state["debug"]:
        traceback.print_exc()
    typer.echo(f"genomelm: error: {message}", err=True)
    raise typer.Exit(code)


def _fail_os_error(exc: OSError) -> None:
    """A full disk or a file-size limit hit by a writer that did not name its output: still one line, exit 1."""
    from genomelm.formats.atomic import NO_ROOM

    if exc.errno in NO_ROOM:
        _fail(f"cannot write {exc.filename or 'the output'}: {NO_ROOM[exc.errno]}", 1)
    _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)


def _quiet_broken_pipe() -> None:
    # The reader of our stdout went away (e.g. `| head`): stop quietly, as Unix tools do.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


class _Terminated(BaseException):
    """SIGTERM (a scheduler cancelling or timing out the job) raised as an exception: outputs still clean up."""


def _raise_terminated(signum, frame) -> None:
    _ignore_sigterm()
    raise _Terminated()


def _ignore_sigterm() -> None:
    # Schedulers and `timeout` often signal the process and its group, so a second SIGTERM can follow
    # at once: ignore it, or it would interrupt the clean-up (checkpoint, temporary files) of the first.
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _flush_stdout_quietly() -> None:
    # Data still buffered when the reader already left (`| head`): drop it instead of a traceback at exit.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", "-b", help=f"Windows per forward pass {BATCH_DEFAULT}.")
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    force: Annotated[bool, typer.Option(help="Allow very large per-token (--pooling none) outputs.")] = False,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed windows or regions of a genome into a safetensors file (rows + coordinates + metadata)."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import embed as command

        return command.run(_options(command.EmbedOptions, options))

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
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Convert an official HyenaDNA checkpoint to the native genomelm format."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import convert as command
        from genomelm.runtime import set_threads

        set_threads(threads)

        summary = command.run(_options(command.ConvertOptions, options))
        typer.echo(f"{summary.output}: {summary.parameters:,} parameters, from {summary.source_layout}", err=True)
        return summary

    _execute(work, quiet)


# ---------------------------------------------------------------- pretrain


@app.command()
def pretrain(
    fasta: Annotated[
        Optional[str], typer.Option(help="Genome FASTA: plain, gzip or bgzip (bgzip: random access).")
    ] = None,
    output: Annotated[
        Optional[str], typer.Option("--output", "-o", help="Run directory (checkpoint/, metrics.jsonl).")
    ] = None,
    train_regions: Annotated[
        Optional[str],
        typer.Option(help="BED of training intervals (0-based); a 4th column train/valid/test splits it."),
    ] = None,
    val_regions: Annotated[
        Optional[list[str]],
        typer.Option(help="Held-out BED or region chr:start-end (1-based inclusive); repeatable."),
    ] = None,
    val_contigs: Annotated[Optional[str], typer.Option(help="Held-out contigs, comma-separated.")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Hold out the last fraction of every interval.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Architecture preset (tiny-1k, small-32k, ...).")] = None,
    d_model: Annotated[Optional[int], typer.Option(help="Model width (overrides the preset).")] = None,
    n_layer: Annotated[Optional[int], typer.Option(help="Number of Hyena blocks.")] = None,
    d_inner: Annotated[Optional[int], typer.Option(help="MLP width (default 4 x d_model).")] = None,
    l_max: Annotated[
        Optional[int], typer.Option(help="Longest input the model accepts (default: seq_len + 2).")
    ] = None,
    seq_len: Annotated[int, typer.Option(help="Bases per training window.")] = 1024,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Windows per forward pass per process.")] = 8,
    global_batch_size: Annotated[
        Optional[int], typer.Option(help="Windows per optimiser step, all processes (gradient accumulation).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", "--max-steps", help="Optimiser steps.")] = 10000,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 6e-4,
    min_lr_ratio: Annotated[float, typer.Option(help="Final lr of the cosine, as a fraction of --lr.")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="On weight matrices (not filters, biases, norms).")] = 0.1,
    warmup_steps: Annotated[int, typer.Option(help="Linear learning-rate warmup steps.")] = 1000,
    grad_clip: Annotated[float, typer.Option(help="Gradient norm clipping.")] = 1.0,
    seqlen_warmup: Annotated[
        int, typer.Option(help="Steps of sequence-length warmup (64, 128, ... < seq-len; same tokens per step).")
    ] = 0,
    rc_aug: Annotated[bool, typer.Option("--rc-aug", help="Reverse-complement half the windows.")] = False,
    max_n_frac: Annotated[float, typer.Option(help="Skip windows with a larger fraction of N.")] = 0.1,
    val_windows: Annotated[int, typer.Option(help="Held-out windows per evaluation (0: all).")] = 64,
    eval_every: Annotated[int, typer.Option(help="Validation perplexity every N steps.")] = 1000,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (and at the end).")] = 1000,
    log_every: Annotated[int, typer.Option(help="Log and metrics.jsonl line every N steps.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed (each process adds its rank).")] = 0,
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32 or bf16.")] = "auto",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", help="Recompute activations in backward (long contexts).")
    ] = False,
    resume: Annotated[Optional[str], typer.Option(help="Continue the run in this RUN_DIR with its settings.")] = None,
    time_limit: Annotated[
        Optional[float], typer.Option(help="Seconds: checkpoint and stop before this wall time (job schedulers).")
    ] = None,
    stop_at_step: Annotated[Optional[int], typer.Option(help="Checkpoint and stop after this step.")] = None,
    force: Annotated[bool, typer.Option(help="Start over in a RUN_DIR that already holds a run.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain a HyenaDNA model on a genome (next-nucleotide prediction); resumable; multi-GPU with torchrun."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import pretrain as command

        summary = command.run(
            _options(
                command.PretrainOptions,
                options,
                val_contigs=[c for c in val_contigs.split(",") if c] if val_contigs else None,
            )
        )
        val = f", validation perplexity {summary.val_ppl:.4f}" if summary.val_ppl is not None else ""
        if summary.rank == 0:
            typer.echo(
                f"{summary.run_dir}: step {summary.step}/{summary.steps}, {summary.tokens_seen:,} tokens, "
                f"loss {summary.loss if summary.loss is None else round(summary.loss, 4)}{val}, "
                f"{summary.tokens_per_second:,.0f} tokens/s",
                err=True,
            )
        if summary.stopped_by == "SIGTERM":
            raise _Terminated()
        return summary

    _execute(work, quiet)


# ---------------------------------------------------------------- score-variants


@app.command("score-variants")
def score_variants(
    input_vcf: Annotated[str, typer.Argument(metavar="INPUT", help="VCF/BCF: plain, bgzip or BCF; '-' reads stdin.")],
    fasta: Annotated[
        str, typer.Option("--fasta", "-f", help="Reference FASTA, plain or bgzip (indexed on first use).")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output .vcf, .vcf.gz (bgzip) or .bcf; '-' = VCF on stdout.")
    ] = "-",
    model: ModelOpt = None,
    method: Annotated[
        Optional[list[str]],
        typer.Option("--method", help="llr (default), delta-ll or embedding; repeatable."),
    ] = None,
    context: Annotated[
        Optional[int],
        typer.Option(help="llr: least context per strand in bases (default: half the model's window)."),
    ] = None,
    stride: Annotated[
        Optional[int],
        typer.Option(help="llr: bases scored per pass; context + stride - 1 <= model length (default: the rest)."),
    ] = None,
    window: Annotated[
        Optional[int],
        typer.Option(
            help="delta-ll/embedding: REF window centred on the variant (default: half the model's, <= 4096)."
        ),
    ] = None,
    regions: Annotated[
        Optional[list[str]],
        typer.Option(
            "--regions",
            "-r",
            help="Only records with POS in these: BED file (0-based) or chr:start-end (1-based); repeatable. "
            "Needs an indexed input.",
        ),
    ] = None,
    tsv: Annotated[Optional[str], typer.Option(help="Also write a flat table (one row per ALT allele).")] = None,
    index: Annotated[bool, typer.Option("--index", help="Write a .tbi/.csi index beside .vcf.gz/.bcf.")] = False,
    info_prefix: Annotated[str, typer.Option(help="Prefix of the INFO keys added.")] = "GLM_",
    on_ref_mismatch: Annotated[
        str, typer.Option(help="skip (flag the record and go on) or error (stop at the first).")
    ] = "skip",
    strict: Annotated[bool, typer.Option("--strict", help="Any record that cannot be scored is an error.")] = False,
    max_n_frac: Annotated[float, typer.Option(help="Skip variants whose context has a larger fraction of N.")] = 0.05,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", "-b", help=f"Sequences per forward pass {BATCH_DEFAULT}.")
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    conv_backend: ConvBackendOpt = None,
    threads: VariantThreadsOpt = None,
    precomputed: Annotated[
        Optional[str],
        typer.Option(help="llr looked up in a score-genome OUTDIR (no model, CPU) instead of computed."),
    ] = None,
    calibration: Annotated[
        Optional[str],
        typer.Option(help="Rank llr among all SNVs of the genome (score-genome OUTDIR): adds LLR_PCT, LLR_PHRED."),
    ] = None,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot variant effect scores (llr, delta-ll, embedding distance) added to a VCF's INFO column."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import score_variants as command

        return command.run(_options(command.ScoreVariantsOptions, options, input=input_vcf, methods=method or ["llr"]))

    _execute(work, quiet)


# ---------------------------------------------------------------- score-genome


def _duration(text: Optional[str]) -> Optional[float]:
    """'90', '90s', '30m', '2h', '1.5h' -> seconds; None stays None."""
    if text is None:
        return None
    scale = {"s": 1, "m": 60, "h": 3600}.get(text.strip()[-1:].lower(), 1)
    number = text.strip().rstrip("smhSMH")
    try:
        return float(number) * scale
    except ValueError:
        raise typer.BadParameter(f"expected seconds or a number with s/m/h, got {text!r}") from None


@app.command("score-genome")
def score_genome(
    fasta: Annotated[str, typer.Argument(help="Genome FASTA, plain or bgzip (indexed on first use).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output directory (bigWig tracks, manifest).")],
    model: ModelOpt = None,
    regions: Annotated[
        Optional[list[str]],
        typer.Option("--regions", "-r", help="Only these: BED file (0-based) or chr:start-end (1-based); repeatable."),
    ] = None,
    context: Annotated[
        Optional[int], typer.Option(help="llr: least context per strand in bases (as score-variants).")
    ] = None,
    stride: Annotated[Optional[int], typer.Option(help="llr: bases scored per pass (as score-variants).")] = None,
    max_n_frac: Annotated[float, typer.Option(help="No values where the context has a larger fraction of N.")] = 0.05,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", "-b", help=f"Blocks per model call (per strand) {BATCH_DEFAULT}.")
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run on OUTDIR.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTDIR (and any unfinished run on it).")] = False,
    time_limit: Annotated[
        Optional[str],
        typer.Option(help="Stop after this long (seconds, or 30m, 2h) at a block boundary; exit 0, --resume later."),
    ] = None,
    zoom_levels: Annotated[
        int, typer.Option(help="bigWig zoom levels for wide browser views (0-10; summaries of 64, 256, 1024... bases).")
    ] = 0,
    writers: Annotated[
        Optional[int], typer.Option(help="Track-writer processes (default: up to one per track).")
    ] = None,
    gather: Annotated[
        Optional[list[str]],
        typer.Option(help="Instead of scoring: gather stores of whole contigs (workflow shards) into OUTDIR."),
    ] = None,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score every possible SNV of a genome once (llr, both strands): bigWig tracks + calibration in OUTDIR.

    Exit codes: 0 done (or stopped by --time-limit), 1 input error, 2 usage error (e.g. OUTDIR exists),
    130 Ctrl-C, 143 SIGTERM; after 130/143 or a time limit, --resume continues.
    """
    options = dict(locals())  # every CLI parameter by name: the Options are built from them
    limit = _duration(time_limit)

    def work():
        from genomelm.commands import score_genome as command

        return command.run(_options(command.ScoreGenomeOptions, options, time_limit=limit))

    _execute(work, quiet)


# ---------------------------------------------------------------- finetune / predict

SequenceColumnOpt = Annotated[
    Optional[str], typer.Option(help="Table column holding the sequence (default: sequence, seq, ...).")
]
LabelColumnOpt = Annotated[
    Optional[str],
    typer.Option(help="Label column (table), header key (FASTA 'label='), or 1-based column number (BED)."),
]
IdColumnOpt = Annotated[Optional[str], typer.Option(help="Table column holding record ids (default: id, name).")]
InputFormatOpt = Annotated[str, typer.Option("--format", help="Input layout: auto, table (CSV/TSV), fasta or bed.")]
RefFastaOpt = Annotated[
    Optional[str], typer.Option("--fasta", "-f", help="Reference FASTA for BED inputs (plain, gzip or bgzip).")
]
LabelsTableOpt = Annotated[
    Optional[str], typer.Option("--labels", help="id<TAB>label table for FASTA inputs without label= headers.")
]
AutoPrecisionOpt = Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32 or bf16.")]


@app.command()
def finetune(
    train: Annotated[str, typer.Option(help="Training data: CSV/TSV (sequence,label), FASTA or BED (+ --fasta).")],
    val: Annotated[str, typer.Option(help="Validation data (early stopping, best epoch), same layouts.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output checkpoint directory.")],
    test: Annotated[Optional[str], typer.Option(help="Test data, evaluated once with the best epoch.")] = None,
    model: ModelOpt = None,
    random_init: Annotated[
        bool, typer.Option("--random-init", help="The base model's architecture from random weights (baseline).")
    ] = False,
    fasta: RefFastaOpt = None,
    labels: LabelsTableOpt = None,
    sequence_column: SequenceColumnOpt = None,
    label_column: LabelColumnOpt = None,
    id_column: IdColumnOpt = None,
    input_format: InputFormatOpt = "auto",
    pooling: Annotated[str, typer.Option(help="mean, last or first over the real tokens.")] = "mean",
    freeze_backbone: Annotated[
        bool, typer.Option("--freeze-backbone", help="Train the head only (linear probe on frozen features).")
    ] = False,
    rc_aug: Annotated[bool, typer.Option("--rc-aug", help="Reverse-complement half the training sequences.")] = False,
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping may end sooner).")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Sequences per optimiser step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warmup then cosine).")] = 6e-4,
    weight_decay: Annotated[float, typer.Option(help="On weight matrices (not filters, biases, norms).")] = 0.1,
    warmup_ratio: Annotated[float, typer.Option(help="Fraction of the steps spent warming up the lr.")] = 0.1,
    patience: Annotated[int, typer.Option(help="Stop after N epochs without improvement (0: never).")] = 3,
    metric: Annotated[str, typer.Option(help="Validation metric: mcc, accuracy, f1_macro, auroc or loss.")] = "mcc",
    max_length: Annotated[
        Optional[int], typer.Option(help="Longest input in bases (default: what the model takes).")
    ] = None,
    truncate: Annotated[
        str, typer.Option(help="Longer inputs: error, left (drop the start) or right (drop the end).")
    ] = "error",
    seed: Annotated[int, typer.Option(help="Random seed (init, shuffling, augmentation).")] = 42,
    device: DeviceOpt = "auto",
    precision: AutoPrecisionOpt = "auto",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a sequence classifier on labelled DNA; metrics on stderr and in OUTPUT/metrics.json."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import finetune as command

        summary = command.run(_options(command.FinetuneOptions, options))
        scores = summary.test or summary.val
        split = "test" if summary.test else "val"
        typer.echo(
            f"{summary.output}: best epoch {summary.best_epoch}/{summary.epochs_run}, {split} MCC "
            f"{scores['mcc']:.4f}, accuracy {scores['accuracy']:.4f}",
            err=True,
        )
        return summary

    _execute(work, quiet)


@app.command()
def predict(
    model_dir: Annotated[str, typer.Argument(metavar="MODEL", help="A `genomelm finetune` output directory.")],
    input_path: Annotated[
        str, typer.Argument(metavar="INPUT", help="CSV/TSV, FASTA or BED (+ --fasta); '-' reads a table on stdin.")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Output TSV; '-' = stdout.")] = "-",
    fasta: RefFastaOpt = None,
    labels: LabelsTableOpt = None,
    sequence_column: SequenceColumnOpt = None,
    label_column: LabelColumnOpt = None,
    id_column: IdColumnOpt = None,
    input_format: InputFormatOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Sequences per forward pass.")] = 64,
    truncate: Annotated[
        Optional[str], typer.Option(help="Longer inputs: error, left or right (default: as at training).")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="A record that cannot be predicted is an error.")] = False,
    metrics: Annotated[Optional[str], typer.Option(help="Write metrics JSON here (inputs with labels).")] = None,
    device: DeviceOpt = "auto",
    precision: Annotated[
        str, typer.Option(help="fp32 (batch-invariant) or bf16 / auto (faster on GPU; bf16 rounding varies by batch).")
    ] = "fp32",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Class probabilities for each sequence from a fine-tuned classifier (TSV: id, predicted, prob_*)."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import predict as command

        return command.run(_options(command.PredictOptions, options, model=model_dir, input=input_path))

    _execute(work, quiet)


# ---------------------------------------------------------------- evaluate


@app.command()
def evaluate(
    fasta: Annotated[str, typer.Argument(help="FASTA: plain, gzip or bgzip.")],
    model: ModelOpt = None,
    regions: Annotated[
        Optional[list[str]],
        typer.Option(
            "--regions", "-r", help="BED file (0-based) or region chr:start-end (1-based inclusive); repeatable."
        ),
    ] = None,
    window: Annotated[
        Optional[int], typer.Option(help="Context per forward pass (default: model max, capped at 32768).")
    ] = None,
    both_strands: Annotated[
        bool, typer.Option("--both-strands", help="Also score the reverse complement (right-hand context).")
    ] = False,
    max_n_frac: Annotated[float, typer.Option(help="Skip windows with a larger fraction of N.")] = 0.1,
    json_output: Annotated[
        Optional[str], typer.Option("--json", help="Write the results as JSON to this file ('-': stdout).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Windows per forward pass.")] = 8,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Perplexity and bits per base of a model on a genome or regions (A/C/G/T targets; N windows skipped)."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import evaluate as command

        return command.run(_options(command.EvaluateOptions, options))

    _execute(work, quiet)


# ---------------------------------------------------------------- in-context


@app.command("in-context")
def in_context(
    test: Annotated[str, typer.Option(help="Sequences to classify: CSV/TSV (sequence[,label]) or FASTA.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output directory.")],
    method: Annotated[str, typer.Option(help="soft-prompt, k-shot or instruction.")] = "soft-prompt",
    train: Annotated[
        Optional[str], typer.Option(help="Labelled demonstrations / training data (sequence,label).")
    ] = None,
    dev: Annotated[
        Optional[str], typer.Option(help="Labelled dev set for the soft prompt's schedule (default: 10% of --train).")
    ] = None,
    model: ModelOpt = None,
    prompt: Annotated[
        Optional[str], typer.Option(help="A trained soft prompt (prompt.safetensors) to reuse without training.")
    ] = None,
    prompt_tokens: Annotated[
        Optional[int], typer.Option("--prompt-tokens", "-P", help="Soft prompt length P (default 32; 0: none).")
    ] = None,
    shots: Annotated[
        Optional[int],
        typer.Option("--shots", "-k", help="Demonstrations per class (default: 0 soft-prompt, 2 otherwise)."),
    ] = None,
    tune_samples: Annotated[int, typer.Option("--tune-samples", "-N", help="Prompts for instruction tuning.")] = 16,
    label_tokens: Annotated[
        Optional[str], typer.Option(help="Token of each class, in class order (default A,N for two classes).")
    ] = None,
    epochs: Annotated[
        Optional[int], typer.Option(help="Training epochs (default: 20 soft-prompt, 1 instruction).")
    ] = None,
    lr: Annotated[
        Optional[float], typer.Option(help="Learning rate (default: 1e-3 soft-prompt, 1e-4 instruction).")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", "-b", help="Training batch (default: 16 soft-prompt, 2 instruction)."),
    ] = None,
    eval_batch_size: Annotated[int, typer.Option(help="Prompts per forward pass when predicting.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed: prompt init, demonstrations, shuffling.")] = 0,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on any flagged record or on a prompt cut to fewer shots.")
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    conv_backend: ConvBackendOpt = None,
    threads: ThreadsOpt = None,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify sequences by next-token prediction: soft prompting, k-shot or instruction-tuned in-context
    learning (HyenaDNA paper). Metrics on stderr and in OUTPUT/metrics.json; OUTPUT/predictions.tsv."""
    options = dict(locals())  # every CLI parameter by name: the Options are built from them

    def work():
        from genomelm.commands import in_context as command

        summary = command.run(_options(command.InContextOptions, options))
        if not (quiet or _state["quiet"]):
            typer.echo(summary.table, err=True)
        return summary

    _execute(work, quiet)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        app()
    except SystemExit as stop:
        if isinstance(stop.code, int | None):
            _leave_without_teardown(stop.code or 0)
        raise
    finally:
        _flush_stdout_quietly()


def _leave_without_teardown(code: int) -> None:
    """Exit now, once the work is done, without Python's module teardown.

    Why: tearing down torch's modules and objects at interpreter exit cost the quick start 0.4-0.9 s (2 cores),
    up to a tenth of its run (benchmarks/cpu_quickstart.py). The atexit handlers still run (logging, temporary
    files, coverage) and the streams are flushed; the outputs are complete and renamed before the command returns.
    Left to the normal exit: runs without torch (--help, --version: nothing to gain), under a profiler or tracer
    (they report at exit), and while a thread other than the Hyena mix's idle workers is alive.
    """
    if "torch" not in sys.modules or sys.getprofile() or sys.gettrace() or _foreign_threads():
        return
    atexit._run_exitfuncs()
    _flush_stdout_quietly()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


def _foreign_threads() -> bool:
    """True while a non-daemon thread runs besides this one and the Hyena mix's pool (kernels/fftconv_cpu.py)."""
    return any(
        not t.daemon and t is not threading.current_thread() and not t.name.startswith("genomelm-mix")
        for t in threading.enumerate()
    )
