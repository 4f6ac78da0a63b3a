"""Batch size on a CPU: wall time and peak resident memory of `genomelm embed`, `score-variants` (llr, 1 SNV per
kb of the embed region) and `score-genome`, batch 1 against batch 8 (and the default), side by side in one run,
with the outputs compared.

Why: the CPU default of --batch-size (runtime.default_batch_size) fits a token budget instead of 8 windows.
Each command runs in a fresh process (its peak resident set size from wait4), alternating the batch sizes
--repeats times; the table gives the median wall time and the largest peak.

    python benchmarks/cpu_batch_memory.py --fasta GRCh37_chrX_1-70M.fa --region X:20000001-20300000 \\
        [--genome-region X:20000001-20100000] [--model default] [--repeats 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam
from safetensors.numpy import load_file


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident GB) of one command in a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1e6  # ru_maxrss is in kB on Linux


def embed_command(args, out: Path, batch: str | None) -> list[str]:
    command = [sys.executable, "-m", "genomelm", "embed", args.fasta, "-r", args.region, "-o", str(out), "-q"]
    return command + ["--model", args.model] + (["-b", batch] if batch else [])


def genome_command(args, out: Path, batch: str | None) -> list[str]:
    command = [sys.executable, "-m", "genomelm", "score-genome", args.fasta, "-r", args.genome_region, "-o", str(out)]
    return command + ["-q", "--force", "--model", args.model] + (["-b", batch] if batch else [])


def variants_command(args, out: Path, batch: str | None) -> list[str]:
    vcf = Path(out).parent / "snvs.vcf.gz"
    if not vcf.exists():
        write_snvs(args.fasta, args.region, vcf)
    command = [sys.executable, "-m", "genomelm", "score-variants", str(vcf), "--fasta", args.fasta, "-o", str(out)]
    return command + ["-q", "--model", args.model] + (["-b", batch] if batch else [])


def write_snvs(fasta: str, region: str, path: Path) -> None:
    """One SNV per kb of ``region`` (chr:start-end, 1-based), ALT the next base after REF in ACGT."""
    contig, span = region.split(":")
    start, end = (int(x.replace(",", "")) for x in span.split("-"))
    with pysam.FastaFile(fasta) as reference:
        length = reference.get_reference_length(contig)
        bases = reference.fetch(contig, start - 1, end).upper()
    header = pysam.VariantHeader()
    header.contigs.add(contig, length=length)
    with pysam.VariantFile(str(path), "wz", header=header) as out:
        for offset in range(500, len(bases), 1000):
            ref = bases[offset]
            if ref in "ACGT":
                alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
                out.write(out.new_record(contig=contig, start=start - 1 + offset, alleles=(ref, alt)))


def compare_with(kind: str, output: Path, baseline: Path) -> str:
    """How ``output`` compares with ``baseline`` (batch 8's, the old default)."""
    if kind == "score-variants":
        values = [
            np.array([r.info.get("GLM_LLR", (np.nan,))[0] for r in pysam.VariantFile(str(p))], dtype=float)
            for p in (output, baseline)
        ]
        worst = np.nanmax(np.abs(values[0] - values[1]))
        return "same values" if worst == 0 else f"llr differs by up to {worst:.1e}"
    if kind == "embed":
        worst = float(np.abs(load_file(str(output))["embeddings"] - load_file(str(baseline))["embeddings"]).max())
        return "identical" if worst == 0 else f"max abs difference {worst:.1e}"
    files = [sorted(p.rglob("*.bw")) + sorted(p.rglob("*.npy")) for p in (output, baseline)]
    same = [f.read_bytes() for f in files[0]] == [f.read_bytes() for f in files[1]]
    return "identical tracks and lookup arrays" if same else "tracks differ (float rounding)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", required=True, help="an uncompressed FASTA")
    parser.add_argument("--region", default="X:20000001-20300000", help="embed's region")
    parser.add_argument("--genome-region", default="X:20000001-20100000", help="score-genome's region")
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {datetime.date.today()}, model {args.model}")
    print("| command | batch | wall s (median) | peak resident GB | outputs vs batch 8 |\n|---|---|---|---|---|")
    pysam.set_verbosity(0)  # no htslib notes about outputs without an index
    with tempfile.TemporaryDirectory() as tmp:
        commands = (
            ("embed", embed_command, ".safetensors"),
            ("score-variants", variants_command, ".vcf.gz"),
            ("score-genome", genome_command, ""),
        )
        for kind, make, suffix in commands:
            batches = [None, "1", "8"]
            times: dict = {b: [] for b in batches}
            peaks: dict = {b: 0.0 for b in batches}
            outputs = {b: Path(tmp) / f"{kind}-{b or 'default'}{suffix}" for b in batches}
            for _ in range(args.repeats):
                for batch in batches:
                    seconds, peak = run_once(make(args, outputs[batch], batch))
                    times[batch].append(seconds)
                    peaks[batch] = max(peaks[batch], peak)
            for batch in batches:
                label = batch or "default"
                verdict = compare_with(kind, outputs[batch], outputs["8"])
                print(f"| {kind} | {label} | {statistics.median(times[batch]):.1f} | {peaks[batch]:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
