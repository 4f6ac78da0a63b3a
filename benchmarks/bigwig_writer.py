"""bigWig writing: libBigWig (pyBigWig's addEntries) against genomelm's writer (formats.bigwig), in one run.

Per-base float32 values like score-genome's tracks: by default standard normal values (nearly incompressible,
the worst case), or with --store the values of a track of a score-genome OUTDIR (tiled to --mbp). Prints seconds
per Mbp for libBigWig and for genomelm's writer at each zlib level and thread count, file bytes per base, and
checks that every file reads back (pyBigWig) to the same values.

    python benchmarks/bigwig_writer.py --mbp 4
    python benchmarks/bigwig_writer.py --store OUTDIR --track llr_A
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyBigWig

from genomelm.formats import bigwig
from genomelm.formats.tracks import BigWigWriter

CHUNK = 1 << 20  # values handed over per call, as score-genome's segments


def sample_values(args) -> np.ndarray:
    bases = int(args.mbp * 1e6)
    if args.store is None:
        return np.random.default_rng(0).standard_normal(bases).astype(np.float32)
    with pyBigWig.open(str(Path(args.store) / f"{args.track}.bw")) as track:
        values = np.concatenate([track.values(name, 0, size, numpy=True) for name, size in track.chroms().items()])
    values = values[np.isfinite(values)].astype(np.float32)
    return np.resize(values, bases)


def with_libbigwig(path: str, values: np.ndarray) -> None:
    out = pyBigWig.open(path, "w")
    out.addHeader([("chr1", len(values))], maxZooms=0)
    for start in range(0, len(values), 1 << 16):
        out.addEntries("chr1", start, values=values[start : start + (1 << 16)].astype(np.float64), span=1, step=1)
    out.close()


def with_genomelm(path: str, values: np.ndarray, threads: int) -> None:
    with BigWigWriter(path, [("chr1", len(values))], 0, threads) as writer:
        for start in range(0, len(values), CHUNK):
            writer.add("chr1", start, values[start : start + CHUNK])


def timed(write, path: str, values: np.ndarray) -> tuple[float, float, bool]:
    """(seconds per Mbp, bytes per base, values read back equal)."""
    started = time.perf_counter()
    write(path)
    seconds = time.perf_counter() - started
    with pyBigWig.open(path) as track:
        same = np.array_equal(track.values("chr1", 0, len(values), numpy=True), values)
    return seconds / len(values) * 1e6, os.path.getsize(path) / len(values), same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbp", type=float, default=4.0)
    parser.add_argument("--store", default=None, help="a score-genome OUTDIR whose track values to write")
    parser.add_argument("--track", default="llr_A")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 6])
    args = parser.parse_args()
    values = sample_values(args)
    source = "N(0, 1) values" if args.store is None else f"{args.track} of {args.store}"
    print(f"# {platform.node()}, {os.cpu_count()} CPUs, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
          f"{len(values) / 1e6:.1f} Mbp of {source}")  # fmt: skip
    print("| writer | zlib level | threads | s per Mbp | bytes per base | reads back |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "t.bw")
        row = timed(lambda p: with_libbigwig(p, values), path, values)
        print(f"| libBigWig (pyBigWig) | 6 | 1 | {row[0]:.3f} | {row[1]:.2f} | {row[2]} |")
        default_level = bigwig.COMPRESSION
        try:
            for level in args.levels:
                bigwig.COMPRESSION = level
                for threads in args.threads:
                    row = timed(lambda p, t=threads: with_genomelm(p, values, t), path, values)
                    print(f"| genomelm | {level} | {threads} | {row[0]:.3f} | {row[1]:.2f} | {row[2]} |")
        finally:
            bigwig.COMPRESSION = default_level


if __name__ == "__main__":
    main()
