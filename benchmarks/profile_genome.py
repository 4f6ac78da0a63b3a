"""Where `score-genome`'s wall time goes: one run, every stage of the main process timed, and the
saver thread and the track-writer processes beside it.

The main process should spend its time waiting for the GPU (the device is the bottleneck); every
other line of the table is host work the device may wait for. Stages are wrapped functions:

- prepare: FASTA tiles, token ids, reverse complement, padding into pinned memory (GenomeScorer._prepare)
- queue: kernel launches of the passes, head, llr and the copies (GenomeScorer._queue)
- wait for device: the host blocked on a batch's results (_Batch.wait)
- lay out / finish: values into the segment arrays, spans, reference flanks (_Part.place / finish)
- hand to saver: the loop blocked because 2 segments already wait to be saved (SegmentSaver.save)
- writers: start, error checks, waiting for them after the last segment (TrackWriterPool)

The saver thread (np.save of segments) and each writer process (compute, bigWig add, close,
calibration; the rest of its time it waits for segments) are reported on their own lines.

    python benchmarks/profile_genome.py --fasta GRCh37_chrX_1-70M.fa.gz --precision bf16 --out $OUT
    python benchmarks/profile_genome.py --stub --regions X:20000001-28000000   # host cost, any machine
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import tempfile
import threading
import time
import types
from collections import defaultdict
from pathlib import Path

import torch
from genome_throughput import DEFAULT_FASTA, plain_fasta

from genomelm.commands import score_genome
from genomelm.formats import genome_store
from genomelm.formats.lookup_store import LookupWriter
from genomelm.formats.tracks import BigWigWriter
from genomelm.variants import genome, genome_tracks
from genomelm.variants.calibration import CalibrationCounter

TIMES: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])  # (thread, stage) -> [s, calls]
ENDED: dict[tuple[str, str], float] = {}  # (thread, stage) -> wall clock (time.time) at the end of its last call

MAIN_STAGES = {
    "load model": (score_genome, "load_inference_model"),
    "prepare inputs": (genome.GenomeScorer, "_prepare"),
    "queue device work": (genome.GenomeScorer, "_queue"),
    "wait for device": (genome._Batch, "wait"),
    "lay out values": (genome._Part, "place"),
    "finish segment": (genome._Part, "finish"),
    "hand to saver": (genome.SegmentSaver, "save"),
    "wait for last saves": (genome.SegmentSaver, "flush"),
    "start writers": (genome_tracks.TrackWriterPool, "start"),
    "check writers": (genome_tracks.TrackWriterPool, "check"),
    "wait for writers (end)": (genome_tracks.TrackWriterPool, "finish"),
    "finish store": (score_genome, "_finish_store"),
}
OTHER_STAGES = {
    "np.save segment": (genome_store, "write_segment"),  # on the saver thread
    "compute track values": (genome_tracks.SegmentScores, "track"),  # in writer processes
    "bigWig add": (BigWigWriter, "add"),
    "bigWig close": (BigWigWriter, "close"),
    "calibration counts": (CalibrationCounter, "add"),
    "lookup rows": (genome_tracks.SegmentScores, "lookup_rows"),
    "lookup write": (LookupWriter, "add"),
}


def timed(stage: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = TIMES[(threading.current_thread().name, stage)]
            entry[0] += time.perf_counter() - started
            entry[1] += 1
            ENDED[(threading.current_thread().name, stage)] = time.time()  # comparable across processes

    return wrapper


def instrument(profile_dir: Path) -> None:
    for stage, (owner, name) in {**MAIN_STAGES, **OTHER_STAGES}.items():
        setattr(owner, name, timed(stage, getattr(owner, name)))
    original = genome_tracks.run_writer_job

    def writer_job(job, cancel):  # in the forked writer: its own totals, dumped as JSON at the end
        TIMES.clear()
        ENDED.clear()
        started = time.perf_counter()
        try:
            original(job, cancel)
        finally:
            row = {stage: s for (_, stage), (s, _) in TIMES.items()}
            row.update(tracks=job.tracks, wall=time.perf_counter() - started)
            row.update(ended_at=time.time(), last_work_at=max(ENDED.values(), default=time.time()))
            (profile_dir / f"writer-{os.getpid()}.json").write_text(json.dumps(row))

    genome_tracks.run_writer_job = writer_job  # TrackWriterPool looks it up when it creates processes


class StubModel(torch.nn.Module):
    """A near-free 'model' (zero hidden states of width 4, zero head): what remains is host cost."""

    def __init__(self, l_max: int = 32770):
        super().__init__()
        self.l_max = l_max
        self.config = types.SimpleNamespace(extra={"name": "stub"})
        self.lm_head = torch.nn.Linear(4, 16, bias=False)
        torch.nn.init.zeros_(self.lm_head.weight)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, 1, 4, device=tokens.device).expand(*tokens.shape, 4)  # (B, L, 4)


def run(args, fasta: Path, work: Path) -> tuple[float, int]:
    if args.stub:
        score_genome.load_inference_model = timed("load model", lambda *a, **k: StubModel().to(args.device))
    opts = score_genome.ScoreGenomeOptions(
        fasta=str(fasta),
        output=str(work / "store"),
        model=args.model,
        regions=args.regions,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        writers=args.writers,
        threads=1 if args.device == "cpu" else None,  # the stub's head on the CPU must not fight the writers
        force=True,
    )
    if args.in_flight is not None:
        genome.GenomeScorer.in_flight = args.in_flight
    started = time.perf_counter()
    summary = score_genome.run(opts)
    return time.perf_counter() - started, summary.bases


def table(wall: float, bases: int, profile_dir: Path) -> list[dict]:
    mbp = bases / 1e6
    rows = []
    for (thread, stage), (seconds, calls) in TIMES.items():
        rows.append(
            {"where": "main" if thread == "MainThread" else thread, "stage": stage, "s": seconds, "calls": calls}
        )
    timed_main = sum(r["s"] for r in rows if r["where"] == "main")
    rows.append({"where": "main", "stage": "untimed (loop, progress, plan, FASTA index)", "s": wall - timed_main})
    for path in sorted(profile_dir.glob("writer-*.json")):
        row = json.loads(path.read_text())
        who = "writer " + "+".join(row.pop("tracks"))
        ended_at, last_work_at = row.pop("ended_at"), row.pop("last_work_at")
        busy = 0.0
        for stage, seconds in row.items():
            if stage != "wall":
                rows.append({"where": who, "stage": stage, "s": seconds})
                busy += seconds
        rows.append({"where": who, "stage": "waiting for segments", "s": row["wall"] - busy})
        rows += _finish_rows(who, ended_at, last_work_at)
    for row in rows:
        row["s_per_mbp"] = row["s"] / mbp
        row["pct_of_wall"] = 100 * row["s"] / wall
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--stub", action="store_true", help="a near-free model: measure the host cost alone")
    parser.add_argument("--regions", action="append", default=None)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--writers", type=int, default=None)
    parser.add_argument("--in-flight", type=int, default=None, help="batches queued on the device (default: 3)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.device == "cpu":
        args.precision = "fp32"
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        fasta = plain_fasta(args.fasta, work)
        profile_dir = work / "profile"
        profile_dir.mkdir()
        instrument(profile_dir)
        wall, bases = run(args, fasta, work)
        rows = table(wall, bases, profile_dir)
    report(args, wall, bases, rows)


def _finish_rows(who: str, ended_at: float, last_work_at: float) -> list[dict]:
    """When a writer ended against the main process's last batch (not busy time: the tail of the run that the GPU
    cannot overlap), and how much of that came after its last segment's work (closing its files)."""
    last_batch = ENDED.get(("MainThread", "wait for device"))
    if last_batch is None:
        return []
    return [
        {"where": who, "stage": "(ended after the last batch)", "s": ended_at - last_batch},
        {"where": who, "stage": "(of which closing, after its last segment)", "s": ended_at - last_work_at},
    ]


def report(args, wall: float, bases: int, rows: list[dict]) -> None:
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    head = {
        "device": device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "stub": args.stub,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "in_flight": genome.GenomeScorer.in_flight,
        "bases": bases,
        "wall_s": wall,
        "mbp_per_s": bases / 1e6 / wall,
    }
    print(json.dumps(head))
    print("\n| where | stage | seconds | s per Mbp | % of wall |\n|---|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['where']} | {row['stage']} | {row['s']:.2f} | {row['s_per_mbp']:.4f} | {row['pct_of_wall']:.1f} |"
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile_genome.json").write_text(json.dumps({**head, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
