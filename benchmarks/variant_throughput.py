"""Variant scoring throughput: shared-window llr vs one forward pass per variant, side by side.

On the same random genome, the same SNVs (~1 per kb by default), the same model, device and
precision, this script times

- shared: `score_llr_shared`, the path `genomelm score-variants --method llr` uses: genome-fixed
  windows, one pass per window and strand scores every variant inside;
- naive: `score_llr_naive`, one forward pass per variant and strand over exactly that variant's
  context (what per-variant tools do), on the first --naive-variants variants;
- command: `score_variants.run()` end to end (VCF in, annotated VCF out, reference reads included),
- model only: just the device work of the command's own passes (the same (batch, length) forward
  passes and head rows, recorded from a warm-up run of the command, inputs already on the device;
  CUDA events, wall clock on the CPU), so that end to end / model-only says how much of the device's
  time the host costs (issue 15: >= 85% at 1 SNV/kb),

asserts that shared and naive scores agree (fp32), and prints variants/s and the ratios.
Random weights (throughput does not depend on them). Times are wall-clock seconds of the whole
call (CPU preparation included) after a warm-up, with the GPU synchronised; shared and command:
median of --repeats runs.

    python benchmarks/variant_throughput.py --preset small-32k --genome-bp 2000000 --per-kb 1 --tiling 8192:24577
    python benchmarks/variant_throughput.py --model default --genome-bp 10000000 --precision bf16 --end-to-end-only
    python benchmarks/variant_throughput.py --model default --fasta GRCh37_chrX_1-70M.fa.gz --precision bf16 \
        --end-to-end-only --repeats 1

Measured (CPU, 2 cores, 2026-12-02, torch 2.13.0+cpu; --preset tiny-1k --genome-bp 1000000 --precision fp32):
command 16.42 s vs model only 14.92 s over the same 1,560 passes: end to end at 91% of model-only (on the
CPU nothing overlaps; on a GPU the host work of a chunk runs while the device runs the chunks in flight).

Measured (NVIDIA H200, 2026-11-22, torch 2.11.0+cu130, triton 3.6.0, fused conv backend; table in README):
default tiling 16384:16384, shared vs naive 19.2x in fp32 (1,079 vs 56 variants/s), 43x in bf16;
tiling 8192:24577, 26.6x in fp32, 60x in bf16.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam
import torch

from genomelm import variants
from genomelm.commands import score_variants as command  # the end-to-end timing only: run() and its Options
from genomelm.formats.checkpoint import load_model, save_model
from genomelm.formats.fasta import FastaSource
from genomelm.kernels import resolve_backend
from genomelm.model import HyenaDNA, preset
from genomelm.runtime import autocast
from genomelm.variants import llr


def make_genome(directory: Path, length: int, seed: int) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    seq = "".join(np.array(list("ACGT"))[rng.integers(0, 4, length)])
    path = directory / "genome.fa"
    with open(path, "w") as handle:
        handle.write(">chr1\n")
        for i in range(0, length, 80):
            handle.write(seq[i : i + 80] + "\n")
    return path, seq


def make_queries(seq: str, per_kb: float, seed: int) -> list[variants.SnvQuery]:
    rng = np.random.default_rng(seed + 1)
    positions = np.sort(rng.choice(len(seq), size=int(len(seq) * per_kb / 1000), replace=False))
    queries = []
    for pos in positions.tolist():
        ref = seq[pos]
        queries.append(variants.SnvQuery("chr1", pos, ref, [rng.choice([b for b in "ACGT" if b != ref])]))
    return queries


def fasta_queries(fasta_path: str, per_kb: float, seed: int) -> tuple[list[variants.SnvQuery], dict[str, int]]:
    """~``per_kb`` SNVs per kb at random A/C/G/T positions of every contig of a real FASTA; contig lengths."""
    rng = np.random.default_rng(seed + 1)
    queries = []
    with FastaSource(fasta_path) as fasta:
        lengths = fasta.contig_lengths()
        for contig, length in lengths.items():
            seq = np.frombuffer(fasta.fetch(contig, 0, length).upper().encode(), dtype=np.uint8)
            acgt = np.flatnonzero(np.isin(seq, np.frombuffer(b"ACGT", dtype=np.uint8)))
            chosen = np.sort(rng.choice(acgt, size=min(len(acgt), int(length * per_kb / 1000)), replace=False))
            for pos in chosen.tolist():
                ref = chr(seq[pos])
                queries.append(variants.SnvQuery(contig, pos, ref, [rng.choice([b for b in "ACGT" if b != ref])]))
    return queries, lengths


def write_vcf(path: Path, queries: list[variants.SnvQuery], lengths: dict[str, int]) -> Path:
    header = pysam.VariantHeader()
    for contig, length in lengths.items():
        header.contigs.add(contig, length=length)
    with pysam.VariantFile(str(path), "w", header=header) as handle:
        for q in queries:
            handle.write(handle.new_record(contig=q.contig, start=q.pos, alleles=(q.ref, *q.alts)))
    return path


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def run_paths(model, fasta_path, queries, tiling, device, precision, args):
    """(shared seconds, shared results, passes), (naive seconds, naive results, passes)."""

    def shared():
        with FastaSource(fasta_path) as fasta:
            reference = variants.Reference(fasta)
            return variants.score_llr_shared(model, reference, queries, tiling, device, precision, args.batch_size)

    def naive():
        with FastaSource(fasta_path) as fasta:
            return variants.score_llr_naive(
                model, variants.Reference(fasta), queries[: args.naive_variants], tiling, device, precision
            )

    with FastaSource(fasta_path) as fasta:
        reference = variants.Reference(fasta)
        variants.score_llr_shared(model, reference, queries[:20], tiling, device, precision, args.batch_size)
        variants.score_llr_naive(model, reference, queries[:4], tiling, device, precision)  # warm-up: both paths once
    shared_runs = [timed(shared, device) for _ in range(args.repeats)]
    shared_seconds = statistics.median(s for s, _ in shared_runs)
    naive_seconds, naive_out = timed(naive, device)
    return (shared_seconds, *shared_runs[0][1]), (naive_seconds, *naive_out)


def max_difference(shared, naive) -> float:
    worst = 0.0
    for a, b in zip(shared, naive):
        for x, y in ((a.forward, b.forward), (a.reverse, b.reverse)):
            both = ~(np.isnan(x) & np.isnan(y))
            if np.any(np.isnan(x[both]) | np.isnan(y[both])):
                return float("inf")
            if both.any():
                worst = max(worst, float(np.max(np.abs(x[both] - y[both]))))
    return worst


def command_seconds(model_dir, fasta_path, vcf_path, tiling, precision, device, args, out_dir) -> tuple[float, list]:
    """Median seconds of ``score_variants.run()`` over --repeats runs, after one warm-up run that
    records the (batch, length, picked rows) of every batch of passes it runs (for model_only_seconds)."""

    def once():
        opts = command.ScoreVariantsOptions(
            str(vcf_path),
            str(fasta_path),
            str(out_dir / "out.vcf.gz"),
            model=str(model_dir),
            context=tiling.context,
            stride=tiling.stride,
            batch_size=args.batch_size,
            device=str(device),
            precision=precision,
            conv_backend=args.backend,
        )
        return command.run(opts).seconds

    shapes: list[tuple[int, int, int]] = []
    original = llr._queue_batch
    llr._queue_batch = functools.partial(_recording_batch, original, shapes)
    try:
        once()  # warm-up (Triton compilation, caches) and the shapes of the passes
    finally:
        llr._queue_batch = original
    return statistics.median(once() for _ in range(args.repeats)), shapes


def _recording_batch(original, shapes: list, model, batch, *rest):
    shapes.append((len(batch), max(len(p.ids) for p in batch), sum(len(p.positions) for p in batch)))
    return original(model, batch, *rest)


@torch.no_grad()
def model_only_seconds(model, shapes: list, device: torch.device, precision: str, repeats: int) -> float:
    """Seconds of just the device work of the command's batches: the same (B, L) forward passes and
    the head on the same number of picked rows, inputs already on the device, no host work in between.
    CUDA events around the whole run (wall clock on the CPU), after a warm-up over the same shapes;
    median of ``repeats``."""
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for b, length, k in shapes:
        tokens = torch.randint(7, 11, (b, length), generator=generator).to(device)  # (B, L) A/C/G/T ids
        rows, cols = torch.randint(0, b, (k,)).to(device), torch.randint(0, length, (k,)).to(device)  # (K,)
        inputs.append((tokens, rows, cols))

    def once() -> float:
        if device.type != "cuda":
            started = time.perf_counter()
            run_all()
            return time.perf_counter() - started
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_all()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000

    def run_all() -> None:
        for tokens, rows, cols in inputs:
            with autocast(device, precision):
                hidden = model.hidden_states(tokens)  # (B, L, D)
            model.lm_head(hidden[rows, cols].float())  # (K, V)

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small-32k")
    parser.add_argument("--genome-bp", type=int, default=2_000_000)
    parser.add_argument("--per-kb", type=float, default=1.0, help="variants per kb")
    parser.add_argument("--tiling", action="append", help="CONTEXT:STRIDE (repeatable; default: the command's)")
    parser.add_argument("--naive-variants", type=int, default=200, help="variants timed on the naive path")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", action="append", help="fp32 and/or bf16 (default both)")
    parser.add_argument("--backend", default=None, help="conv backend (default: auto)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-command", action="store_true", help="skip the end-to-end command timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="a checkpoint ('default': the shipped one; else --preset)")
    parser.add_argument("--fasta", default=None, help="a real genome instead of the random one (every contig)")
    parser.add_argument(
        "--end-to-end-only", action="store_true", help="only the command and model-only rows (skip shared, naive)"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    model = (load_model(args.model) if args.model else HyenaDNA(preset(args.preset))).eval().to(device)
    model.set_conv_backend(args.backend)
    default = variants.llr_tiling(None, None, model.l_max)
    tilings = [default] + [variants.LlrTiling(*map(int, t.split(":"))) for t in args.tiling or []]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.fasta:
            fasta_path = Path(args.fasta)
            queries, lengths = fasta_queries(args.fasta, args.per_kb, args.seed)
        else:
            fasta_path, seq = make_genome(tmp, args.genome_bp, args.seed)
            queries, lengths = make_queries(seq, args.per_kb, args.seed), {"chr1": len(seq)}
        model_dir = save_model(model.cpu(), tmp / "model")
        model.to(device)
        vcf_path = write_vcf(tmp / "in.vcf", queries, lengths)
        print_header(device, args, model, len(queries), sum(lengths.values()))
        for tiling in tilings:
            for precision in args.precision or ["fp32", "bf16"]:
                if args.end_to_end_only:
                    end_to_end(
                        model, model_dir, fasta_path, vcf_path, len(queries), tiling, device, precision, args, tmp
                    )
                else:
                    measure(model, model_dir, fasta_path, vcf_path, queries, tiling, device, precision, args, tmp)


def measure(model, model_dir, fasta_path, vcf_path, queries, tiling, device, precision, args, tmp) -> None:
    (s_sec, s_res, s_passes), (n_sec, n_res, n_passes) = run_paths(
        model, fasta_path, queries, tiling, device, precision, args
    )
    n_naive = min(len(queries), args.naive_variants)
    diff = max_difference(s_res[:n_naive], n_res)
    if precision == "fp32":
        assert diff <= 1e-4, f"shared and naive llr differ by {diff}"
    shared_rate, naive_rate = len(queries) / s_sec, n_naive / n_sec
    label = f"{tiling.context}:{tiling.stride}"
    print(
        f"| {label} | {precision} | shared windows | {len(queries)} | {s_passes} | {s_sec:.2f} | "
        f"{shared_rate:,.0f} | {shared_rate / naive_rate:.1f}x | {diff:.1e} |"
    )
    print(
        f"| {label} | {precision} | naive, 1 pass/variant/strand | {n_naive} | {n_passes} | {n_sec:.2f} | "
        f"{naive_rate:,.0f} | 1.0x | |"
    )
    if not args.no_command:
        end_to_end(
            model, model_dir, fasta_path, vcf_path, len(queries), tiling, device, precision, args, tmp, naive_rate
        )


def end_to_end(model, model_dir, fasta_path, vcf_path, n, tiling, device, precision, args, tmp, naive_rate=None):
    """The command (VCF in/out) and model-only over the same passes, and their ratio, from one run."""
    c_sec, shapes = command_seconds(model_dir, fasta_path, vcf_path, tiling, precision, device, args, tmp)
    m_sec = model_only_seconds(model, shapes, device, precision, args.repeats)
    passes = sum(b for b, _, _ in shapes)
    label = f"{tiling.context}:{tiling.stride}"
    for path, seconds in (("command (VCF in/out)", c_sec), ("model only (the command's passes)", m_sec)):
        rate = n / seconds
        versus = f"{rate / naive_rate:.1f}x" if naive_rate else ""
        print(f"| {label} | {precision} | {path} | {n} | {passes} | {seconds:.2f} | {rate:,.0f} | {versus} | |")
    print(
        f"# {label} {precision}: end to end {c_sec:.2f} s vs model only {m_sec:.2f} s over the same {passes} passes "
        f"in {len(shapes)} batches: end to end at {m_sec / c_sec:.0%} of model-only throughput",
        flush=True,
    )


def print_header(device: torch.device, args, model, n_variants: int, genome_bp: int) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    backend = resolve_backend(args.backend, device)
    print(
        f"# variant throughput — device: {name}; date: {datetime.date.today()}; torch {torch.__version__}; "
        f"triton {triton_version}; conv backend {backend}"
    )
    print(
        f"# {args.model or args.preset} ({'checkpoint' if args.model else 'random weights'}, l_max {model.l_max}), "
        f"{genome_bp:,} bp {'genome ' + args.fasta if args.fasta else 'random genome'}, "
        f"{n_variants} SNVs ({args.per_kb:g}/kb), batch {args.batch_size}; tiling = context:stride "
        f"(pass length context + stride - 1)"
    )
    print("| tiling | precision | path | variants | passes | seconds | variants/s | vs naive | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")


if __name__ == "__main__":
    main()
