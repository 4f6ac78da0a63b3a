"""Cold vs warm Triton kernel cache: `genomelm embed` in two fresh processes, one after the other.

Both processes get GENOMELM_HOME=<a new empty folder> (the CLI points Triton's cache at GENOMELM_HOME/triton; any
TRITON_CACHE_DIR of the caller is removed so that it does); the first one compiles every Triton kernel it launches
into that folder, the second finds them there. Prints the wall time of each process, the command's own time (its
log line: model loading and embedding), and the cache's size.

    python benchmarks/triton_cache.py --bases 262144 --precision bf16

Measured (NVIDIA H200, 2026-12-02, torch 2.11.0+cu130, triton 3.6.0, default model, 8 x 32 kb): cold 19.77 s wall
(13.6 s in the command), warm 10.17 s (4.7 s); 71 files in GENOMELM_HOME/triton.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from embed_throughput import print_header


def write_fasta(path: Path, bases: int) -> None:
    seq = "".join(np.array(list("ACGT"))[np.random.default_rng(0).integers(0, 4, bases)])
    path.write_text(">chr1\n" + "\n".join(seq[i : i + 80] for i in range(0, bases, 80)) + "\n")


def run_once(fasta: Path, out: Path, home: Path, precision: str, extra: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_CACHE_DIR"}
    env["GENOMELM_HOME"] = str(home)
    command = [sys.executable, "-m", "genomelm", "embed", str(fasta), "-o", str(out), "--precision", precision,
               "--device", "cuda", *extra]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    out.unlink()
    match = re.search(r"in ([0-9.]+) s \(", done.stderr)
    return wall, match.group(1) if match else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", type=int, default=8 * 32768, help="FASTA length (default: one batch of 8 x 32k)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("extra", nargs="*", help="more embed options")
    args = parser.parse_args()
    print_header(torch.device("cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fasta, home = tmp / "genome.fa", tmp / "home"
        write_fasta(fasta, args.bases)
        print(f"# genomelm embed of {args.bases:,} bp, --precision {args.precision}; GENOMELM_HOME empty at first")
        print("| process | Triton cache | wall s | command s (log line) | cache files |")
        print("|---|---|---|---|---|")
        for label in ("1st", "2nd"):
            state = "cold (empty)" if label == "1st" else "warm"
            wall, logged = run_once(fasta, tmp / "out.safetensors", home, args.precision, args.extra)
            files = sum(1 for p in (home / "triton").rglob("*") if p.is_file()) if (home / "triton").exists() else 0
            print(f"| {label} | {state} | {wall:.2f} | {logged} | {files} |", flush=True)


if __name__ == "__main__":
    main()
