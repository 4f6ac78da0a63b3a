"""Batch size on a CPU: wall time and peak resident memory of `genomelm embed` and `genomelm score-genome`, batch
1 against batch 8 (and the default), side by side in one run, with the outputs compared.

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


def same_outputs(kind: str, outputs: list[Path]) -> str:
    if kind == "embed":
        arrays = [load_file(str(p))["embeddings"] for p in outputs]
        worst = max(float(np.abs(a - arrays[0]).max()) for a in arrays)
        return "identical" if worst == 0 else f"max abs difference {worst:.1e}"
    files = [sorted(p.rglob("*.bw")) + sorted(p.rglob("*.npy")) for p in outputs]
    same = all([f.read_bytes() for f in group] == [f.read_bytes() for f in files[0]] for group in files)
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
    print("| command | batch | wall s (median) | peak resident GB | outputs |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, make, suffix in (("embed", embed_command, ".safetensors"), ("score-genome", genome_command, "")):
            batches = [None, "1", "8"]
            times: dict = {b: [] for b in batches}
            peaks: dict = {b: 0.0 for b in batches}
            outputs = {b: Path(tmp) / f"{kind}-{b or 'default'}{suffix}" for b in batches}
            for _ in range(args.repeats):
                for batch in batches:
                    seconds, peak = run_once(make(args, outputs[batch], batch))
                    times[batch].append(seconds)
                    peaks[batch] = max(peaks[batch], peak)
            verdict = same_outputs(kind, list(outputs.values()))
            for batch in batches:
                label = batch or "default"
                print(f"| {kind} | {label} | {statistics.median(times[batch]):.1f} | {peaks[batch]:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
