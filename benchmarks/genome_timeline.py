"""Where score-genome's end-to-end time goes against the GPU's: a timeline of the scoring loop, per run.

genome_throughput.py says how far end to end falls behind the model; this script says why. Each batch's
device work is bracketed by CUDA events (recorded before its first launch and after its copy back), so the
run splits into:

- before the first batch (model load, plan, writer processes started);
- the loop: GPU busy (sum of the batches' event spans) and GPU idle between batches (the host was late);
- after the last batch (segments saved, writer processes finishing their files, calibration, manifest):
  work the GPU could not overlap, which a long genome amortises but a 70 Mb run does not.

One warm-up run on a small region first (Triton kernels compiled and loaded), then --runs runs of the whole
FASTA in the same process.

    python benchmarks/genome_timeline.py --fasta chrX.fa [--runs 2] [--regions X:1-30000000] [--eager-too]

--eager-too alternates runs without CUDA graphs (GENOMELM_CUDA_GRAPHS=0) and with them (score-genome's
default on a GPU), in the same process.

Measured (NVIDIA H200, 2026-12-02, bf16, default model, chrX 1-70 Mb) with the development copy of this
script's instrumentation (the same CUDA events; eager and graphed runs were two processes of one device call,
not one run, hence --eager-too now): eager, loop 15.9 s with the GPU idle 1.05 s between batches, 4.22 Mbp/s;
graphed, idle 0.21 s, 4.65 Mbp/s. Later, graphed: loop 15.7 / 13.8 s with the GPU idle < 0.4 s; after the
last batch 0.4 / 2.6 s; 4.30 / 4.20 Mbp/s end to end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from genome_throughput import DEFAULT_FASTA, plain_fasta

from genomelm.commands import score_genome
from genomelm.model.cuda_graphs import GRAPHS_ENV_VAR
from genomelm.variants import genome

MARKS: dict[str, list] = {"queue": [], "events": [], "wait": []}


def instrument() -> None:
    """Bracket GenomeScorer._queue with CUDA events and host clocks; time _Batch.wait."""
    queue, wait = genome.GenomeScorer._queue, genome._Batch.wait

    def timed_queue(self, index, blocks, prepared, stage):
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        began = time.perf_counter()
        batch = queue(self, index, blocks, prepared, stage)
        MARKS["queue"].append((began, time.perf_counter()))
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        MARKS["events"].append((start, end))
        return batch

    def timed_wait(self):
        began = time.perf_counter()
        wait(self)
        MARKS["wait"].append((began, time.perf_counter()))

    genome.GenomeScorer._queue, genome._Batch.wait = timed_queue, timed_wait


def one_run(fasta: Path, regions, work: Path, precision: str, graphs: bool = True) -> dict:
    for marks in MARKS.values():
        marks.clear()
    os.environ[GRAPHS_ENV_VAR] = "" if graphs else "0"  # read by score-genome when it loads the model
    opts = score_genome.ScoreGenomeOptions(
        fasta=str(fasta), output=str(work / "store"), regions=regions, precision=precision, force=True
    )
    started = time.perf_counter()
    summary = score_genome.run(opts)
    ended = time.perf_counter()
    torch.cuda.synchronize()
    events = MARKS["events"]
    busy = [a.elapsed_time(b) / 1e3 for a, b in events]
    idle = [events[i][1].elapsed_time(events[i + 1][0]) / 1e3 for i in range(len(events) - 1)]
    loop_start, loop_end = MARKS["queue"][0][0], MARKS["wait"][-1][1]
    return {
        "mbp": summary.bases / 1e6,
        "wall": ended - started,
        "before": loop_start - started,
        "loop": loop_end - loop_start,
        "after": ended - loop_end,
        "gpu_busy": sum(busy),
        "gpu_idle": sum(idle),
        "batch_ms": statistics.median(busy) * 1e3,
        "host_queue": sum(b - a for a, b in MARKS["queue"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--regions", action="append", default=None)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--eager-too", action="store_true", help="alternate runs without CUDA graphs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("genome_timeline.py needs a CUDA GPU (the timeline is made of CUDA events)")
    instrument()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fasta = plain_fasta(args.fasta, work)
        name, length = max(_contig_lengths(fasta).items(), key=lambda item: item[1])
        one_run(fasta, [f"{name}:1-{min(length, 400_000)}"], work, args.precision)  # warm-up: Triton, filters
        print(
            f"{torch.cuda.get_device_name()}, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {args.precision}"
        )
        print(
            "| run | graphs | Mbp | wall s | Mbp/s | before s | loop s | GPU busy s | GPU idle s | after s | batch ms "
            "| host queue s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for run in range(args.runs):
            graphs = not (args.eager_too and run % 2 == 0)
            r = one_run(fasta, args.regions, work, args.precision, graphs)
            print(
                f"| {run + 1} | {'yes' if graphs else 'no'} | {r['mbp']:.1f} | {r['wall']:.2f} | "
                f"{r['mbp'] / r['wall']:.2f} | {r['before']:.2f} | "
                f"{r['loop']:.2f} | {r['gpu_busy']:.2f} | {r['gpu_idle']:.2f} | {r['after']:.2f} | "
                f"{r['batch_ms']:.1f} | {r['host_queue']:.2f} |"
            )


def _contig_lengths(fasta: Path) -> dict[str, int]:
    from genomelm.formats.fasta import FastaSource

    with FastaSource(str(fasta)) as source:
        return source.contig_lengths()


if __name__ == "__main__":
    main()
