"""The lookup path on one thread, this checkout against an older commit, side by side in one run.

CPU only. Builds what benchmarks/lookup_throughput.py builds (a random genome of --mbp Mbp, a tiny random
model, its score-genome store, a sparse and a dense VCF of SNVs), extracts --baseline with `git archive`,
then runs `score-variants IN.vcf.gz --precomputed STORE --calibration STORE --threads 1 -o out.vcf.gz`
through each code in turn (old, new, old, new, ...: --repeat runs each, median), each run in a fresh
process whose PYTHONPATH is that checkout (the time is that of `score_variants.run`, imports excluded).
Both codes write the same relative output name from a directory of their own, so the command line in
the header is the same and the two .vcf.gz files are compared byte for byte.

    python benchmarks/lookup_vs_commit.py --baseline 5b8391d --mbp 4 [--repeat 3] [--work DIR]

--work keeps the genome, store and VCFs in DIR between runs (built once).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def child(vcf: str, fasta: str, store: str, warm: str) -> None:
    """One run of the lookup path in this process (PYTHONPATH chooses the code), after an untimed run
    over ``warm`` (lazy imports, the store's first reads); prints its seconds."""
    from genomelm.commands import score_variants

    for path in (warm, vcf):
        opts = score_variants.ScoreVariantsOptions(
            input=path, fasta=fasta, output="out.vcf.gz", precomputed=store, calibration=store, threads=1
        )
        started = time.perf_counter()
        score_variants.run(opts)
    print(time.perf_counter() - started)


def prepare(work: Path, mbp: float, spacing: int) -> tuple[Path, Path, dict[str, tuple[Path, int]]]:
    """(fasta, store, {label: (vcf, records)}), built once per --work directory."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))
    from lookup_throughput import build, write_vcf

    fasta, store = work / "genome.fa", work / "store"
    if not (store / "manifest.json").exists():
        build(work, mbp)
    vcfs = {}
    for label, every in ((f"1 SNV / {spacing} bp", spacing), ("dense, 1 SNV / 10 bp", 10)):
        path, count = work / f"snvs-{every}.vcf.gz", work / f"snvs-{every}.count"
        if not count.exists():
            count.write_text(str(write_vcf(path, fasta, every)))
        vcfs[label] = (path, int(count.read_text()))
    return fasta, store, vcfs


def checkout(revision: str, into: Path) -> Path:
    """The tree of ``revision`` (git archive) under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def timed(code: Path, out: Path, vcf: Path, fasta: Path, store: Path, warm: Path) -> float:
    """Seconds of one run of ``code`` (a checkout) writing ``out``/out.vcf.gz (after one over ``warm``)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, __file__, "--child", str(vcf), str(fasta), str(store), str(warm)]
    done = subprocess.run(command, cwd=out, env=env, check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def compare(baseline: Path, work: Path, fasta: Path, store: Path, vcfs: dict, repeat: int) -> list[tuple]:
    """Per VCF: (label, records, old seconds, new seconds, same bytes); runs alternate old, new."""
    rows, warm = [], next(iter(vcfs.values()))[0]  # the sparse VCF
    for label, (vcf, records) in vcfs.items():
        seconds: dict[str, list[float]] = {"old": [], "new": []}
        outs = {"old": work / "out-old" / vcf.stem, "new": work / "out-new" / vcf.stem}
        for _ in range(repeat):
            for name, code in (("old", baseline), ("new", REPO)):
                seconds[name].append(timed(code, outs[name], vcf, fasta, store, warm))
        same = (outs["old"] / "out.vcf.gz").read_bytes() == (outs["new"] / "out.vcf.gz").read_bytes()
        rows.append((label, records, float(np.median(seconds["old"])), float(np.median(seconds["new"])), same))
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the older commit (any git revision)")
    parser.add_argument("--mbp", type=float, default=4.0)
    parser.add_argument("--spacing", type=int, default=350)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each code per VCF (median)")
    parser.add_argument("--work", default=None, help="keep the genome, store and VCFs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        fasta, store, vcfs = prepare(work, args.mbp, args.spacing)
        baseline = checkout(args.baseline, Path(tmp) / "baseline")
        load = os.getloadavg()[0]
        rows = compare(baseline, Path(tmp), fasta, store, vcfs, args.repeat)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {datetime.date.today()}, ", end="")
    print(f"load average {load:.2f} at the start; {args.mbp} Mbp; median of {args.repeat} runs, old/new alternating")
    print(f"score-variants --precomputed --calibration --threads 1 -o out.vcf.gz; old {args.baseline}, new ", end="")
    print(f"{head.stdout.strip()} (working tree)")
    print("| VCF | records | old variants/s | new variants/s | speed-up | same bytes |")
    print("|---|---|---|---|---|---|")
    for label, records, old, new, same in rows:
        print(f"| {label} | {records:,} | {records / old:,.0f} | {records / new:,.0f} | {old / new:.2f}x | {same} |")


if __name__ == "__main__":
    main()
