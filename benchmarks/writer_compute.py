"""score-genome's writer processes: the per-segment compute of each track and of the lookup rows, this checkout
against an older commit, side by side in one run.

CPU only, no model. A synthetic segment of 2^20 positions (random llr, 0 at the reference base, 1 % NaN, a run of N)
is saved with `genome_store.write_segment`; then, in a fresh process per code and run (old, new, old, new, ...;
PYTHONPATH chooses the code), each writer's work is timed as a writer process does it: a new `SegmentScores` over
the memory-mapped segment per track (`track(name)`) and for the lookup rows (`lookup_rows()`). The outputs of the
two codes are compared bit for bit.

    python benchmarks/writer_compute.py --baseline 5b8391d [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from lookup_vs_commit import REPO, checkout

WORK = ("llr_A", "llr_C", "llr_G", "llr_T", "llr_min", "surprise", "lookup rows")


def make_segment(directory: Path) -> str:
    from genomelm.formats import genome_store as store

    rng = np.random.default_rng(0)
    n = 1 << 20
    ref = rng.integers(7, 11, n + 2).astype(np.uint8)  # A, C, G, T ids
    ref[5000:6000] = 11  # an N run
    arrays = {"ref": ref}
    for strand in ("forward", "reverse"):
        llr = rng.normal(-1, 1, (n, 4)).astype(np.float32)
        llr[np.arange(n), np.minimum(ref[1:-1], 10) - 7] = 0.0
        llr[rng.random(n) < 0.01] = np.nan
        llr[4999:5999] = np.nan
        arrays[f"{strand}_llr"] = llr
        arrays[f"{strand}_ref"] = rng.normal(-1.4, 0.5, n).astype(np.float32)
    store.write_segment(str(directory), 0, (0, 64), 0, arrays)
    return store.segment_path(str(directory), 0, 0)


def child(segment_path: str, out: str) -> None:
    """Seconds of each writer's work on the segment (each from a fresh SegmentScores); outputs saved to ``out``."""
    from genomelm.formats import genome_store as store
    from genomelm.variants.genome_tracks import SegmentScores

    seconds, outputs = {}, {}
    for name in WORK:
        scores = SegmentScores(store.Segment(segment_path))
        started = time.perf_counter()
        outputs[name] = scores.lookup_rows() if name == "lookup rows" else scores.track(name)
        seconds[name] = time.perf_counter() - started
    np.savez(out, **{k.replace(" ", "_"): v for k, v in outputs.items()})
    print(json.dumps(seconds))


def timed(code: Path, segment_path: str, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, __file__, "--child", segment_path, str(out)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def same_bits(a: Path, b: Path) -> dict[str, bool]:
    with np.load(a) as old, np.load(b) as new:
        return {k: old[k].dtype == new[k].dtype and old[k].tobytes() == new[k].tobytes() for k in old.files}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the older commit (any git revision)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each code (median)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        segment = make_segment(work)
        codes = {"old": checkout(args.baseline, work / "baseline"), "new": REPO}
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        for _ in range(args.repeat):
            for name, code in codes.items():
                runs[name].append(timed(code, segment, work / f"{name}.npz"))
        same = same_bits(work / "old.npz", work / "new.npz")
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {datetime.date.today()}; ", end="")
    print(f"one segment of 2^20 positions; median of {args.repeat} runs, old/new alternating; old {args.baseline}")
    print("| work | old s per Mbp | new s per Mbp | speed-up | same bits |\n|---|---|---|---|---|")
    for name in WORK:
        old, new = (float(np.median([r[name] for r in runs[k]])) * 1e6 / (1 << 20) for k in ("old", "new"))
        print(f"| {name} | {old:.4f} | {new:.4f} | {old / new:.2f}x | {same[name.replace(' ', '_')]} |")


if __name__ == "__main__":
    main()
