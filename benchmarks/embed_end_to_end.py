"""`genomelm embed` end to end vs the model alone, same model, windows, batch and precision, in one run.

End to end: commands.embed.run() on the FASTA (reading, tokenising, padding, forward, pooling, writing; the
model's loading included, and a column without it), after an in-process warm-up on a random FASTA of one batch,
so no Triton compilation is counted. Model only: the forward + mean pooling of full (batch, window) id batches,
CUDA events, median. Prints bp/s of both and the share. With --profile, a cProfile of one more end-to-end run
(host-side functions by own time) shows where the command's time goes outside the model.

    python benchmarks/embed_end_to_end.py --fasta .data/GRCh37_chrX_1-70M.fa.gz --batch-size 8 --batch-size 32

Measured (NVIDIA H200, 2026-12-02, torch 2.11.0+cu130, triton 3.6.0, chrX 1-70 Mb, default model, bf16, batch 8):
before the one-batch-in-flight loop 6.33 s, 11.06 Mbp/s vs 19.39 model-only (57%); after 3.91 s, 17.90 vs 19.44
(92%; 95% without the model's loading).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _timing import seconds
from embed_throughput import print_header
from triton_cache import write_fasta

from genomelm.commands import embed
from genomelm.commands._common import load_inference_model


def command_rate(fasta: str, out: Path, batch: int, precision: str, regions=None) -> tuple[float, int]:
    """(seconds, bases) of embed.run(), the model's loading included (the command's own figure)."""
    opts = embed.EmbedOptions(fasta, str(out), batch_size=batch, precision=precision, device="cuda", regions=regions)
    started = time.perf_counter()
    summary = embed.run(opts)
    return time.perf_counter() - started, summary.bases


def model_rate(batch: int, window: int, precision: str) -> float:
    """bp/s of forward + mean pooling on (batch, window) random ids, the command's default model."""
    model = load_inference_model(None, torch.device("cuda"), None, False)
    ids = torch.randint(7, 11, (batch, window), device="cuda")

    @torch.no_grad()
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model.hidden_states(ids).float().mean(dim=1).cpu()

    for _ in range(3):
        step()
    return batch * window / statistics.median(seconds(step, torch.device("cuda")) for _ in range(10))


def load_seconds() -> float:
    """The default model's loading time (subtracted from the command's time for the 'model excluded' column)."""
    started = time.perf_counter()
    load_inference_model(None, torch.device("cuda"), None, False)
    torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--batch-size", type=int, action="append")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--window", type=int, default=32768, help="the command's default window for the model")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print_header(torch.device("cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "emb.safetensors"
        warmup = Path(tmp) / "warmup.fa"
        write_fasta(warmup, 8 * args.window)
        command_rate(str(warmup), out, 8, args.precision)  # Triton compiled, caches warm: not counted below
        out.unlink()
        loading = load_seconds()
        print(f"# model loading {loading:.2f} s (included in 'command', excluded in 'command - load')")
        print("| batch | precision | bases | command s | command Mbp/s | command - load Mbp/s | model-only Mbp/s | "
              "share | share (load excluded) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for batch in args.batch_size or [8]:
            sec, bases = command_rate(args.fasta, out, batch, args.precision)
            out.unlink()
            model = model_rate(batch, args.window, args.precision)
            cmd, net = bases / sec, bases / (sec - loading)
            print(f"| {batch} | {args.precision} | {bases:,} | {sec:.2f} | {cmd / 1e6:.2f} | {net / 1e6:.2f} | "
                  f"{model / 1e6:.2f} | {cmd / model:.0%} | {net / model:.0%} |", flush=True)  # fmt: skip
        if args.profile:
            profile(args.fasta, out, (args.batch_size or [8])[0], args.precision)


def profile(fasta: str, out: Path, batch: int, precision: str) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(command_rate, fasta, out, batch, precision)
    print(f"# cProfile of one end-to-end run, batch {batch}: top functions by own time")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
