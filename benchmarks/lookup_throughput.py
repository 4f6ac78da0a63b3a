"""score-variants --precomputed --calibration: variants per second on one CPU core, general vs fast path.

CPU only, no data needed: a random genome of --mbp Mbp (one contig), a tiny random model, a store
written by `score_genome.run()` (its disk bytes per Mbp are printed, per file kind), then
`score_variants.run()` with --precomputed and --calibration over VCFs of random SNVs at 1 per --spacing
bp (sparse) and 1 per 10 bp (dense), each through the general engine (the per-record path,
`score_variants.FAST_LOOKUP = False`, once) and the batched fast path (median of --repeat runs), in the
same run. The fast path runs on one thread (--threads 1: everything, bgzip compression included, on one
core), then with --threads 2 (the .vcf.gz compressed on a second thread), then writing plain VCF (no
compression). The general and fast outputs are compared byte for byte, and so are the fast outputs on
one and two threads.

    python benchmarks/lookup_throughput.py --mbp 4 [--repeat 5] [--profile general|fast]

To compare the fast path of this checkout with an older commit's in one run, see
benchmarks/lookup_vs_commit.py (it reuses build() and write_vcf() from here).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gzip
import os
import platform
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam
import torch

from genomelm.commands import score_genome, score_variants
from genomelm.formats.checkpoint import save_model
from genomelm.model import HyenaConfig, HyenaDNA


def build(work: Path, mbp: float) -> tuple[Path, Path, dict]:
    """A random genome, a tiny random model and its score-genome store; (fasta, store, bytes per Mbp)."""
    rng = np.random.default_rng(0)
    sequence = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, int(mbp * 1e6))].tobytes().decode()
    fasta = work / "genome.fa"
    with open(fasta, "w") as handle:
        handle.write(">chr1\n" + "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60)) + "\n")
    pysam.faidx(str(fasta))
    torch.manual_seed(0)
    config = HyenaConfig(d_model=16, n_layer=2, d_inner=64, l_max=1026, filter_order=16)
    model = save_model(HyenaDNA(config).eval(), work / "tiny")
    out = work / "store"
    score_genome.run(score_genome.ScoreGenomeOptions(fasta=str(fasta), output=str(out), model=str(model), force=True))
    sizes: dict[str, int] = {}
    for path in (p for p in out.rglob("*") if p.is_file()):
        kind = "lookup/*.npy" if path.parent.name == "lookup" else path.name
        sizes[kind] = sizes.get(kind, 0) + path.stat().st_size
    return fasta, out, {kind: size / mbp for kind, size in sorted(sizes.items())}


def write_vcf(path: Path, fasta: Path, spacing: int) -> int:
    """SNVs at random positions, one per ``spacing`` bp on average (a third of them bi-allelic)."""
    sequence = pysam.FastaFile(str(fasta)).fetch("chr1")
    rng = np.random.default_rng(spacing)
    positions = np.sort(rng.choice(len(sequence), size=len(sequence) // spacing, replace=False))
    header = pysam.VariantHeader()
    header.contigs.add("chr1", length=len(sequence))
    with pysam.VariantFile(str(path), "wz", header=header) as handle:
        for pos in positions.tolist():
            ref = sequence[pos]
            others = [b for b in "ACGT" if b != ref]
            alts = tuple(others[: 1 + (pos % 3 == 0)])
            handle.write(handle.new_record(contig="chr1", start=pos, stop=pos + 1, alleles=(ref, *alts)))
    return len(positions)


def lookup(vcf: Path, fasta: Path, store: Path, out: Path, fast: bool, profile: bool, threads: int = 1) -> float:
    """Seconds of score_variants.run through the fast or the general path."""
    score_variants.FAST_LOOKUP = fast
    opts = score_variants.ScoreVariantsOptions(
        input=str(vcf),
        fasta=str(fasta),
        output=str(out),
        precomputed=str(store),
        calibration=str(store),
        threads=threads,
    )
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    score_variants.run(opts)
    seconds = time.perf_counter() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return seconds


def text(path: Path) -> list[str]:
    """The VCF's lines but the command line (which names the output path and the options)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [line for line in handle if not line.startswith("##genomelm_command=")]


def fast_runs(vcf: Path, fasta: Path, store: Path, out: Path, repeat: int, profile: bool) -> dict[str, float]:
    """Median seconds of the fast path: one thread to .vcf.gz, two threads to .vcf.gz, one thread to .vcf."""
    runs = {"fast": (".vcf.gz", 1), "threads": (".2.vcf.gz", 2), "plain": (".vcf", 1)}
    times = {}
    for kind, (suffix, threads) in runs.items():
        seconds = []
        for r in range(repeat):
            seconds.append(
                lookup(vcf, fasta, store, out.with_suffix(suffix), True, profile and kind == "fast" and not r, threads)
            )
        times[kind] = float(np.median(seconds))
    return times


def measure(work: Path, fasta: Path, store: Path, spacing: int, args) -> tuple[int, dict, bool]:
    """Records of the VCF, seconds per path, whether every output holds the same lines."""
    vcf = work / f"snvs-{spacing}.vcf.gz"
    records = write_vcf(vcf, fasta, spacing)
    out = work / "out" / f"{spacing}"
    out.parent.mkdir(exist_ok=True)
    general = out.with_suffix(".general.vcf.gz")
    times = {"general": lookup(vcf, fasta, store, general, False, args.profile == "general")}
    times.update(fast_runs(vcf, fasta, store, out, args.repeat, args.profile == "fast"))
    outputs = [general, out.with_suffix(".vcf.gz"), out.with_suffix(".2.vcf.gz"), out.with_suffix(".vcf")]
    same = all(text(path) == text(general) for path in outputs)
    return records, times, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbp", type=float, default=4.0)
    parser.add_argument("--spacing", type=int, default=350)
    parser.add_argument("--repeat", type=int, default=5, help="runs of the fast path per setting (median)")
    parser.add_argument("--profile", choices=("general", "fast"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        fasta, store, bytes_per_mbp = build(work, args.mbp)
        print(f"store of {args.mbp} Mbp built in {time.perf_counter() - started:.0f} s; bytes per Mbp:")
        for kind, size in bytes_per_mbp.items():
            print(f"  {kind:20s} {size / 1e6:8.2f} MB")
        print(f"  {'total':20s} {sum(bytes_per_mbp.values()) / 1e6:8.2f} MB")
        empty = work / "empty.vcf.gz"
        write_vcf(empty, fasta, 10**9)  # no record: the fixed start-up (store, calibration, FASTA, files)
        startup = float(
            np.median([lookup(empty, fasta, store, work / "empty-out.vcf.gz", True, False) for _ in range(3)])
        )
        print(f"start-up (a VCF without records): {startup:.3f} s")
        rows = []
        for label, spacing in ((f"1 SNV / {args.spacing} bp", args.spacing), ("dense, 1 SNV / 10 bp", 10)):
            rows.append((label, *measure(work, fasta, store, spacing, args)))
    print_table(rows, startup, args.repeat)


def print_table(rows: list, startup: float, repeat: int) -> None:
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {datetime.date.today()}")
    print(f"fast path: median of {repeat} runs; .vcf.gz unless said; 1 thread unless said")
    print(
        "| VCF | records | general variants/s | fast variants/s | speed-up | fast without start-up | "
        "fast, 2 threads (1 compressing) | fast, plain .vcf out | same bytes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, records, times, same in rows:
        general, fast = records / times["general"], records / times["fast"]
        steady = records / max(times["fast"] - startup, 1e-9)
        print(
            f"| {label} | {records:,} | {general:,.0f} | {fast:,.0f} | {fast / general:.1f}x | {steady:,.0f} | "
            f"{records / times['threads']:,.0f} | {records / times['plain']:,.0f} | {same} |"
        )


if __name__ == "__main__":
    main()
