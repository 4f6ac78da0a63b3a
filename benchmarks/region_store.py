"""`genomelm score-genome --regions`: store size and wall time of this checkout against an older commit, side by
side in one run (store format 3 keeps the lookup arrays of partly scored contigs to their spans).

Each code runs in a fresh process (PYTHONPATH chooses it; the old tree comes from `git archive`), alternating
--repeats times; the table gives the median seconds and the store's bytes.

    python benchmarks/region_store.py --fasta GRCh37_chrX_1-70M.fa --baseline a8d2992 \\
        [--region X:66763466-66765465] [--context 1024 --stride 1024] [--repeats 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lookup_vs_commit import REPO, checkout


def store_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def timed_run(code: Path, args, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "genomelm", "score-genome", args.fasta, "-o", str(out), "-r", args.region]
    command += ["--context", str(args.context), "--stride", str(args.stride), "--model", args.model, "-q"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(code)}, cwd=out.parent)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", required=True, help="an uncompressed FASTA")
    parser.add_argument("--baseline", required=True, help="the older commit")
    parser.add_argument("--region", default="X:66763466-66765465", help="the README's AR promoter window")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=1024)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    args.fasta = os.path.abspath(args.fasta)
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {datetime.date.today()}, score-genome -r {args.region}")
    print("| code | wall s (median) | store bytes |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        codes = {args.baseline: checkout(args.baseline, Path(tmp) / "old"), "this checkout": REPO}
        seconds: dict[str, list[float]] = {label: [] for label in codes}
        sizes: dict[str, int] = {}
        for _ in range(args.repeats):
            for label, code in codes.items():
                out = Path(tmp) / f"store-{len(sizes)}-{label.replace(' ', '-')}"
                seconds[label].append(timed_run(code, args, out))
                sizes[label] = store_bytes(out)
                shutil.rmtree(out)
        for label in codes:
            print(f"| {label} | {statistics.median(seconds[label]):.1f} | {sizes[label]:,} |")


if __name__ == "__main__":
    main()
