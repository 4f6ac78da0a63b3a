"""score-variants --precomputed --calibration: variants per second on one CPU core, general vs fast path.

CPU only, no data needed: a random genome of --mbp Mbp (one contig), a tiny random model, a store
written by `score_genome.run()` (its disk bytes per Mbp are printed, per file kind), then
`score_variants.run()` with --precomputed and --calibration on one thread over VCFs of random SNVs at
1 per --spacing bp (sparse) and 1 per 10 bp (dense), each through the general engine (the per-record
path, `score_variants.FAST_LOOKUP = False`) and the batched fast path, in the same run, the fast path also
writing plain VCF (no final bgzip pass). The general and fast outputs are compared byte for byte.

    python benchmarks/lookup_throughput.py --mbp 4 [--profile general|fast]
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


def lookup(vcf: Path, fasta: Path, store: Path, out: Path, fast: bool, profile: bool) -> float:
    """Seconds of score_variants.run (one thread) through the fast or the general path."""
    score_variants.FAST_LOOKUP = fast
    opts = score_variants.ScoreVariantsOptions(
        input=str(vcf), fasta=str(fasta), output=str(out), precomputed=str(store), calibration=str(store), threads=1
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
    """The VCF's lines but the command line (which names the output path)."""
    with gzip.open(path, "rt") as handle:
        return [line for line in handle if not line.startswith("##genomelm_command=")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbp", type=float, default=4.0)
    parser.add_argument("--spacing", type=int, default=350)
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
        startup = lookup(empty, fasta, store, work / "empty-out.vcf.gz", True, False)
        print(f"start-up (a VCF without records): {startup:.3f} s")
        rows = []
        for label, spacing in ((f"1 SNV / {args.spacing} bp", args.spacing), ("dense, 1 SNV / 10 bp", 10)):
            vcf = work / f"snvs-{spacing}.vcf.gz"
            records = write_vcf(vcf, fasta, spacing)
            times, outputs = {}, {}
            for path in ("general", "fast"):
                outputs[path] = work / path / f"{spacing}.vcf.gz"
                outputs[path].parent.mkdir(exist_ok=True)
                times[path] = lookup(vcf, fasta, store, outputs[path], path == "fast", args.profile == path)
            # the same fast path writing plain VCF: what the lookup costs without the final bgzip pass
            # (pipelines can pipe `-o -` into a multi-threaded `bgzip -@ N`)
            times["plain"] = lookup(vcf, fasta, store, work / "fast" / f"{spacing}.vcf", True, False)
            same = text(outputs["general"]) == text(outputs["fast"])
            rows.append((label, records, times, same))
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 thread, {datetime.date.today()}")
    print(
        "| VCF | records | general variants/s | fast variants/s | speed-up | fast without start-up | "
        "fast, plain .vcf out | same bytes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, records, times, same in rows:
        general, fast = records / times["general"], records / times["fast"]
        steady = records / max(times["fast"] - startup, 1e-9)
        plain = records / times["plain"]
        print(
            f"| {label} | {records:,} | {general:,.0f} | {fast:,.0f} | {fast / general:.1f}x | {steady:,.0f} | "
            f"{plain:,.0f} | {same} |"
        )


if __name__ == "__main__":
    main()
