"""Variant scoring throughput: shared-window llr vs one forward pass per variant, side by side.

On the same random genome, the same SNVs (~1 per kb by default), the same model, device and
precision, this script times

- shared: `score_llr_shared`, the path `genomelm score-variants --method llr` uses: genome-fixed
  windows, one pass per window and strand scores every variant inside;
- naive: `score_llr_naive`, one forward pass per variant and strand over exactly that variant's
  context (what per-variant tools do), on the first --naive-variants variants;
- command: `score_variants.run()` end to end (VCF in, annotated VCF out, reference reads included),

asserts that shared and naive scores agree (fp32), and prints variants/s and the ratio.
Random weights (throughput does not depend on them). Times are wall-clock seconds of the whole
call (CPU preparation included) after a warm-up, with the GPU synchronised; shared and command:
median of --repeats runs.

    python benchmarks/variant_throughput.py --preset small-32k --genome-bp 2000000 --per-kb 1 --tiling 8192:24577

Measured (NVIDIA H200, 2026-11-22, torch 2.11.0+cu130, triton 3.6.0, fused conv backend; table in README):
default tiling 16384:16384, shared vs naive 19.2x in fp32 (1,079 vs 56 variants/s), 43x in bf16;
tiling 8192:24577, 26.6x in fp32, 60x in bf16.
"""

from __future__ import annotations

import argparse
import datetime
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
from genomelm.formats.checkpoint import save_model
from genomelm.formats.fasta import FastaSource
from genomelm.kernels import resolve_backend
from genomelm.model import HyenaDNA, preset


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


def write_vcf(path: Path, queries: list[variants.SnvQuery], length: int) -> Path:
    header = pysam.VariantHeader()
    header.contigs.add("chr1", length=length)
    with pysam.VariantFile(str(path), "w", header=header) as handle:
        for q in queries:
            handle.write(handle.new_record(contig="chr1", start=q.pos, alleles=(q.ref, *q.alts)))
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


def command_seconds(model_dir, fasta_path, vcf_path, tiling, precision, device, args, out_dir) -> float:
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

    return statistics.median(once() for _ in range(args.repeats))


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
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    model = HyenaDNA(preset(args.preset)).eval().to(device)
    model.set_conv_backend(args.backend)
    default = variants.llr_tiling(None, None, model.l_max)
    tilings = [default] + [variants.LlrTiling(*map(int, t.split(":"))) for t in args.tiling or []]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fasta_path, seq = make_genome(tmp, args.genome_bp, args.seed)
        queries = make_queries(seq, args.per_kb, args.seed)
        model_dir = save_model(model.cpu(), tmp / "model")
        model.to(device)
        vcf_path = write_vcf(tmp / "in.vcf", queries, len(seq))
        print_header(device, args, model, len(queries))
        for tiling in tilings:
            for precision in args.precision or ["fp32", "bf16"]:
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
        c_sec = command_seconds(model_dir, fasta_path, vcf_path, tiling, precision, device, args, tmp)
        rate = len(queries) / c_sec
        print(
            f"| {label} | {precision} | command (VCF in/out) | {len(queries)} | {s_passes} | {c_sec:.2f} | "
            f"{rate:,.0f} | {rate / naive_rate:.1f}x | |",
            flush=True,
        )


def print_header(device: torch.device, args, model, n_variants: int) -> None:
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
        f"# {args.preset} (random weights, l_max {model.l_max}), {args.genome_bp:,} bp random genome, "
        f"{n_variants} SNVs ({args.per_kb:g}/kb), batch {args.batch_size}; tiling = context:stride "
        f"(pass length context + stride - 1)"
    )
    print("| tiling | precision | path | variants | passes | seconds | variants/s | vs naive | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")


if __name__ == "__main__":
    main()
