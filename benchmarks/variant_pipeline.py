"""Where `score-variants` end to end loses time against model-only, by chunks in flight (issue 15).

In one process, on one genome and one VCF (~1 SNV/kb at random A/C/G/T positions, as
variant_throughput.py), this script

1. runs the command once (warm-up: Triton compilation, caches) recording the shapes of its batches,
2. times model-only over those shapes (variant_throughput.model_only_seconds),
3. times the command (`score_variants.run`, VCF in and out) for each --in-flight value
   (engine.CHUNKS_IN_FLIGHT: chunks queued on the device while the host finishes an older one; "2:freeze"
   = 2 with gc.freeze() before the run, so that no full garbage collection walks the objects of torch and
   the model) and checks that every output has the same bytes (md5 of the whole file) and prints the md5 of
   its records alone (the ## lines name the temporary paths), which runs of other code can be compared with,
4. profiles one more run at --profile-in-flight: host stages (profile_variants.STAGES, plus the waits
   for the device and the model load) and, on a GPU, the device's idle time between batches (CUDA
   events around every batch: gaps before the first batch of a chunk and inside chunks, the largest),
5. with --trace-mb M: runs the command on the SNVs of the first M Mb of the first contig under
   torch.profiler and prints the host calls that took the most time (a CUDA call that waits for the
   device shows there: cudaStreamSynchronize, a copy from pageable memory, ...).

    python benchmarks/variant_pipeline.py --model default --fasta /tmp/chrX.fa --precision bf16 \
        --in-flight 1 --in-flight 2 --in-flight 3 --profile-in-flight 2
    python benchmarks/variant_pipeline.py --preset tiny-1k --genome-bp 300000 --precision fp32   # CPU check
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import gzip
import hashlib
import tempfile
from pathlib import Path

import torch
from profile_genome import TIMES, timed
from profile_variants import STAGES
from variant_throughput import fasta_queries, make_genome, make_queries, model_only_seconds, write_vcf

from genomelm.commands import score_variants as command
from genomelm.formats.checkpoint import load_model, save_model
from genomelm.model import HyenaDNA, preset
from genomelm.variants import engine, llr

EXTRA_STAGES = {
    "wait for device": (llr, "wait_for_device"),
    "load model": (command, "load_inference_model"),
    "VCF commit (bgzip)": (command.vcf.VariantWriter, "commit"),
}


def run_command(args, model_dir, fasta, vcf_path, out: Path, setting: str) -> tuple[float, str]:
    """(seconds of score_variants.run, md5 of its output file, md5 of its records) with ``setting`` ("N" or
    "N:freeze")."""
    in_flight, _, freeze = str(setting).partition(":")
    engine.CHUNKS_IN_FLIGHT = int(in_flight)
    opts = command.ScoreVariantsOptions(
        str(vcf_path), str(fasta), str(out), model=str(model_dir), batch_size=args.batch_size,
        device=args.device, precision=args.precision,
    )  # fmt: skip
    if freeze:
        gc.collect()
        gc.freeze()
    try:
        seconds = command.run(opts).seconds
    finally:
        gc.unfreeze()
    data = out.read_bytes()
    records = b"".join(line for line in gzip.decompress(data).splitlines(True) if not line.startswith(b"##"))
    return seconds, hashlib.md5(data).hexdigest(), hashlib.md5(records).hexdigest()


def record_shapes(run):
    """run() while recording the (batch, length, picked rows) of every batch it queues."""
    shapes: list[tuple[int, int, int]] = []
    original = llr._queue_batch

    def recording(model, batch, *rest):
        shapes.append((len(batch), max(len(p.ids) for p in batch), sum(len(p.positions) for p in batch)))
        return original(model, batch, *rest)

    llr._queue_batch = recording
    try:
        run()
    finally:
        llr._queue_batch = original
    return shapes


class BatchEvents:
    """CUDA events before and after every queued batch: the device's busy time in batches and its idle
    gaps between them (before the first batch of a chunk: k == 0; inside a chunk: k > 0)."""

    def __init__(self):
        self.rows: list[tuple[int, torch.cuda.Event, torch.cuda.Event]] = []

    def wrap(self, original):
        @functools.wraps(original)
        def queue(model, batch, k, *rest):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = original(model, batch, k, *rest)
            end.record()
            self.rows.append((k, start, end))
            return out

        return queue

    def report(self) -> None:
        torch.cuda.synchronize()
        busy = sum(s.elapsed_time(e) for _, s, e in self.rows) / 1000
        gaps = [(k, prev_end.elapsed_time(s) / 1000) for (_, _, prev_end), (k, s, _) in zip(self.rows, self.rows[1:])]
        first = [g for k, g in gaps if k == 0]
        inside = [g for k, g in gaps if k > 0]
        print(f"# device: {len(self.rows)} batches, busy {busy:.2f} s inside batches, idle between batches "
              f"{sum(first):.2f} s before a chunk's first batch ({len(first)} gaps, "
              f"{sum(g > 1e-3 for g in first)} over 1 ms) + {sum(inside):.2f} s inside chunks ({len(inside)} gaps, "
              f"{sum(g > 1e-3 for g in inside)} over 1 ms); largest gaps (s): "
              f"{', '.join(f'{g:.3f}' for g in sorted((g for _, g in gaps), reverse=True)[:8])}")  # fmt: skip


def profiled(run, cuda: bool) -> float:
    """Seconds of run() with every stage of STAGES + EXTRA_STAGES timed (and batch events on a GPU)."""
    originals = {(owner, name): getattr(owner, name) for owner, name in {**STAGES, **EXTRA_STAGES}.values()}
    events = BatchEvents() if cuda else None
    for stage, (owner, name) in {**STAGES, **EXTRA_STAGES}.items():
        setattr(owner, name, timed(stage, getattr(owner, name)))
    if events is not None:
        llr._queue_batch = events.wrap(llr._queue_batch)
    try:
        wall = run()
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)
    if events is not None:
        events.report()
    return wall


def trace(once, cuda: bool) -> None:
    """once() under torch.profiler: the host calls (ops and CUDA runtime calls) by total host time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    in_flight = getattr(engine, "CHUNKS_IN_FLIGHT", 1)
    with profile(activities=activities) as prof:
        seconds, *_ = once(str(in_flight))
    print(f"# torch.profiler over {seconds:.2f} s (in flight {in_flight}), by host time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))


def print_stages(wall: float, passes: int) -> None:
    print(f"# profiled run: wall {wall:.2f} s (score_variants.run's own seconds), {passes} passes")
    print("| stage | seconds | calls | ms per pass | share of wall |")
    print("|---|---|---|---|---|")
    rows = sorted(((stage, *value) for (_, stage), value in TIMES.items()), key=lambda row: -row[1])
    rows.append(("untimed (VCF reading, chunking, loop)", wall - sum(row[1] for row in rows), 0))
    for stage, seconds, calls in rows:
        print(f"| {stage} | {seconds:.2f} | {calls} | {1000 * seconds / max(passes, 1):.3f} | {seconds / wall:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a checkpoint ('default': the shipped one; else --preset)")
    parser.add_argument("--preset", default="small-32k")
    parser.add_argument("--fasta", default=None, help="a real genome (plain or bgzip FASTA) instead of a random one")
    parser.add_argument("--genome-bp", type=int, default=2_000_000)
    parser.add_argument("--per-kb", type=float, default=1.0)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--in-flight", action="append", help="N or N:freeze, chunks in flight to time (repeatable)")
    parser.add_argument("--profile-in-flight", default=None, help="profile one run with this setting")
    parser.add_argument("--repeats", type=int, default=1, help="model-only repeats")
    parser.add_argument("--no-model-only", action="store_true", help="skip model-only (ratios then read n/a)")
    parser.add_argument("--trace-mb", type=float, default=None, help="torch.profiler over the first M Mb")
    args = parser.parse_args()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    torch.manual_seed(0)
    model = (load_model(args.model) if args.model else HyenaDNA(preset(args.preset))).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.fasta:
            fasta = Path(args.fasta)
            queries, lengths = fasta_queries(args.fasta, args.per_kb, 0)
        else:
            fasta, seq = make_genome(tmp, args.genome_bp, 0)
            queries, lengths = make_queries(seq, args.per_kb, 0), {"chr1": len(seq)}
        model_dir = save_model(model, tmp / "model")
        vcf_path = write_vcf(tmp / "in.vcf", queries, lengths)
        out = tmp / "out.vcf.gz"
        once = functools.partial(run_command, args, model_dir, fasta, vcf_path, out)
        print_header(args, len(queries), sum(lengths.values()))
        shapes = record_shapes(lambda: once(getattr(engine, "CHUNKS_IN_FLIGHT", 1)))  # 1: code before it
        passes = sum(b for b, _, _ in shapes)
        model_only = float("nan")
        if not args.no_model_only:
            model_only = model_only_seconds(model.to(args.device), shapes, torch.device(args.device), args.precision,
                                            args.repeats)  # fmt: skip
        print(f"# model only: {model_only:.2f} s over {passes} passes in {len(shapes)} batches")
        compare(once, args.in_flight or [str(getattr(engine, "CHUNKS_IN_FLIGHT", 1))], model_only)
        if args.profile_in_flight is not None:
            wall = profiled(lambda: once(args.profile_in_flight)[0], cuda)
            print_stages(wall, passes)
        if args.trace_mb is not None:
            contig = next(iter(lengths))
            head = [q for q in queries if q.contig == contig and q.pos < args.trace_mb * 1e6]
            small = write_vcf(tmp / "head.vcf", head, lengths)
            trace(functools.partial(run_command, args, model_dir, fasta, small, tmp / "head.vcf.gz"), cuda)


def print_header(args, n_variants: int, genome_bp: int) -> None:
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    now = datetime.datetime.now(datetime.UTC)
    print(
        f"# score-variants pipeline — device {name}; date {now:%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; "
        f"{args.model or args.preset}; {genome_bp:,} bp {args.fasta or 'random genome'}; {n_variants} SNVs; "
        f"batch {args.batch_size}; {args.precision}"
    )


def compare(once, settings: list[str], model_only: float) -> None:
    """The command once per setting: seconds, ratio to model-only, md5 of the output (file; records)."""
    print("| chunks in flight | end to end (s) | model only (s) | end to end / model-only | md5 file | md5 records |")
    print("|---|---|---|---|---|---|")
    digests = set()
    for setting in settings:
        seconds, digest, records = once(setting)
        digests.add(digest)
        print(f"| {setting} | {seconds:.2f} | {model_only:.2f} | {model_only / seconds:.1%} | {digest[:12]} | "
              f"{records[:12]} |", flush=True)  # fmt: skip
    print(f"# outputs byte-identical across settings: {len(digests) == 1}")


if __name__ == "__main__":
    main()
