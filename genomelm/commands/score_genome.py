"""`genomelm score-genome`: the llr of every possible SNV of a genome, written once as bigWig tracks.

For every A/C/G/T position the llr of the 3 other bases, from the very passes `score-variants
--method llr` runs (same tiling, same values), on both strands. The store (genomelm.formats.
genome_store) holds browser tracks, a calibration table and manifest.json; `score-variants
--precomputed OUTDIR` annotates VCFs from it by lookup, `--calibration OUTDIR` ranks scores.

Work happens in ``OUTDIR.partial/``: segments of scores (kept for --resume) and the tracks, which
background processes write while the model runs. Ctrl-C, SIGTERM and --time-limit stop after the
current batch of blocks, keep what is done and exit 130 / 143 / 0; --resume continues, and the
tracks are byte-identical to an uninterrupted run's. Only a complete run renames the work
directory to OUTDIR.

Under torchrun, ranks score disjoint segments (segment i goes to rank i mod world size) into the
shared work directory; rank 0 writes the tracks and finishes the store.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace

from genomelm import __version__
from genomelm.commands._common import load_inference_model, model_label, select_device, set_threads
from genomelm.commands._provenance import model_sha256
from genomelm.errors import Interrupted, UsageError
from genomelm.formats import genome_store as store
from genomelm.formats.fasta import parse_regions
from genomelm.formats.lookup_store import LOOKUP_DIR
from genomelm.formats.tracks import check_track_contigs
from genomelm.log import get_logger, progress
from genomelm.model.cuda_graphs import cuda_graphs_refused
from genomelm.runtime import (
    PRECISIONS,
    barrier,
    check_batch_size,
    check_max_n_frac,
    default_batch_size,
    distributed,
    rank_device,
)
from genomelm.training import StopRequest
from genomelm.variants import Reference, llr_tiling, open_fasta
from genomelm.variants.genome import SEGMENT_BASES, GenomePlan, GenomeScorer, SegmentSaver, plan_genome
from genomelm.variants.genome_gather import gather_stores
from genomelm.variants.genome_tracks import TrackWriterPool, WriterJob

log = get_logger(__name__)

TRACK_DESCRIPTIONS = {
    **{
        f"llr_{b}": f"llr of changing the position to {b}, mean of both strands (0 at the reference base)"
        for b in "ACGT"
    },
    "llr_min": "lowest llr of the 3 alternative bases (the most damaging SNV at the position)",
    "surprise": "-log2 P(reference base), mean of both strands (bits)",
}


@dataclass
class ScoreGenomeOptions:
    fasta: str  # FASTA with random access (plain or bgzip)
    output: str  # OUTDIR
    model: str | None = None
    regions: list[str] | None = None  # BED paths and/or samtools-style regions (1-based inclusive)
    context: int | None = None  # llr tiling, as score-variants
    stride: int | None = None
    max_n_frac: float = 0.05
    batch_size: int | None = None  # default: runtime.default_batch_size (8 on a GPU; 32k tokens on a CPU)
    device: str = "auto"
    precision: str = "fp32"
    conv_backend: str | None = None
    threads: int | None = None
    resume: bool = False
    force: bool = False
    time_limit: float | None = None  # seconds: stop (resumable) after this long
    zoom_levels: int = 0  # bigWig summary levels (built when a track is closed)
    writers: int | None = None  # track-writer processes (default: one per track, up to the CPU count)
    trust_checkpoint: bool = False
    gather: list[str] | None = None  # stores of whole contigs (a workflow's shards) to gather into OUTDIR


@dataclass
class ScoreGenomeSummary:
    output: str
    complete: bool = False
    bases: int = 0  # positions planned (whole genome or --regions)
    segments: int = 0
    segments_done: int = 0  # by this process
    stopped: str | None = None  # why an incomplete run stopped
    seconds: float = 0.0
    bytes_written: int = 0
    settings: dict = field(default_factory=dict)

    @property
    def bases_per_second(self) -> float:
        return self.bases / self.seconds if self.complete and self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- stopping at a safe point


class StopFlag(StopRequest):
    """SIGINT / SIGTERM (training's StopRequest: a second Ctrl-C stops at once) or --time-limit."""

    def __init__(self, time_limit: float | None):
        super().__init__()
        self.deadline = None if time_limit is None else time.monotonic() + time_limit

    def __call__(self) -> bool:
        if self.signal_name is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.signal_name = "time-limit"
        return self.requested

    @property
    def reason(self) -> str | None:
        return self.signal_name


# --------------------------------------------------------------------------- the command


def run(opts: ScoreGenomeOptions) -> ScoreGenomeSummary:
    started = time.perf_counter()
    _check_options(opts)
    rank, world = distributed()
    set_threads(opts.threads)
    device = select_device(rank_device(opts.device, rank, world))
    outdir = os.path.normpath(opts.output)
    summary = ScoreGenomeSummary(outdir)
    if _already_complete(opts, outdir):
        summary.complete = True
        return summary
    if opts.gather:
        return _gather(opts, outdir, summary, started)
    with open_fasta(opts.fasta, "score-genome") as fasta:
        reference = Reference(fasta)
        model = load_inference_model(opts.model, device, opts.conv_backend, opts.trust_checkpoint)
        _use_cuda_graphs(model, device)
        tiling = llr_tiling(opts.context, opts.stride, model.l_max)
        opts = replace(opts, batch_size=opts.batch_size or default_batch_size(device, tiling.pass_length))
        regions = [r for spec in opts.regions for r in parse_regions(spec)] if opts.regions else None
        plan = plan_genome(reference.lengths, regions, tiling, max(1, SEGMENT_BASES // tiling.stride))
        check_track_contigs(plan.contigs)
        identity = _identity(opts, model, tiling, reference.lengths, plan)
        work = _prepare_work_dir(opts, outdir, identity, rank, world)
        scorer = GenomeScorer(model, reference, tiling, device, opts.precision, opts.batch_size, opts.max_n_frac)
        summary.bases, summary.segments, summary.settings = plan.bases, len(plan.segments), identity["settings"]
        with StopFlag(opts.time_limit) as stop:
            _score_and_write(opts, plan, scorer, work, stop, summary, rank, world)
    if rank == 0 and summary.complete:
        summary.bytes_written = _finish_store(work, outdir, identity, started)
    summary.seconds = time.perf_counter() - started
    _report(summary)
    return summary


def _use_cuda_graphs(model, device) -> None:
    """CUDA graphs by default on a GPU (GENOMELM_CUDA_GRAPHS=0: off). Every full batch has one shape, and the host
    has segments to lay out besides launching ~150 kernels per pass: eager, it fell behind the GPU (chrX 70 Mb,
    H200, 2026-12-02: GPU idle 1.05 s of a 15.9 s loop, 4.22 Mbp/s; graphed: 0.21 s idle, 4.65 Mbp/s; see
    benchmarks/genome_timeline.py --eager-too)."""
    if device.type == "cuda" and not cuda_graphs_refused():
        model.set_cuda_graphs(True)


def _gather(opts: ScoreGenomeOptions, outdir: str, summary: ScoreGenomeSummary, started: float):
    """--gather: one store from shard stores of whole contigs (no model)."""
    _check_parent_writable(outdir)
    with open_fasta(opts.fasta, "score-genome") as fasta:
        manifest = gather_stores(opts.gather, outdir, fasta.contig_lengths())
    summary.complete, summary.settings = True, manifest["settings"]
    summary.bases = sum(length for _, length in manifest["genome"]["track_contigs"])
    summary.seconds = time.perf_counter() - started
    log.info("gathered %d stores -> %s", len(opts.gather), outdir)
    return summary


def _check_options(opts: ScoreGenomeOptions) -> None:
    check_batch_size(opts.batch_size)
    check_max_n_frac(opts.max_n_frac)
    if opts.time_limit is not None and opts.time_limit <= 0:
        raise UsageError(f"--time-limit must be > 0 seconds, got {opts.time_limit}")
    if not 0 <= opts.zoom_levels <= 10:
        raise UsageError(f"--zoom-levels must be between 0 and 10, got {opts.zoom_levels}")
    if opts.writers is not None and opts.writers < 1:
        raise UsageError(f"--writers must be >= 1, got {opts.writers}")
    if opts.resume and opts.force:
        raise UsageError("--resume continues a run and --force starts over: give one of them")
    if opts.output in ("", "-"):
        raise UsageError("score-genome writes a directory: give -o OUTDIR")
    if opts.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {opts.precision!r}")


def _already_complete(opts: ScoreGenomeOptions, outdir: str) -> bool:
    """OUTDIR exists: fine to --force over it, done already with --resume, else an error."""
    if not os.path.exists(outdir) or opts.force:
        return False
    if opts.resume and os.path.exists(store.partial_dir(outdir)):
        return False  # a --force run over an older OUTDIR was interrupted: the older one stays till the end
    if opts.resume and os.path.isfile(os.path.join(outdir, store.MANIFEST)):
        log.info("%s is complete already: nothing to resume", outdir)
        return True
    raise UsageError(f"{outdir} exists: choose another -o, or pass --force to replace it")


def _identity(opts: ScoreGenomeOptions, model, tiling, lengths: dict[str, int], plan: GenomePlan) -> dict:
    """What makes two runs the same run: model, settings, genome (the manifest without provenance)."""
    return {
        "model": {
            "name": model_label(opts.model, model),
            "sha256": model_sha256(opts.model, model),
            "l_max": model.l_max,
        },
        "settings": {
            "context": tiling.context,
            "stride": tiling.stride,
            "max_n_frac": opts.max_n_frac,
            "precision": opts.precision,
            "batch_size": opts.batch_size,
            "regions": {name: spans for name, spans in plan.regions.items() if spans is not None} or None,
            "zoom_levels": opts.zoom_levels,
        },
        "genome": {
            "fasta": os.path.abspath(opts.fasta),
            "contigs": [[name, length] for name, length in lengths.items()],
            "track_contigs": [[name, length] for name, length in plan.contigs],
            **_lookup_spans(plan, tiling.stride),
        },
    }


def _lookup_spans(plan: GenomePlan, stride: int) -> dict:
    """{"lookup_spans": {contig: spans}} for the contigs whose lookup arrays cover only part of them
    (lookup_store); nothing when every array covers its whole contig (a whole-genome run)."""
    partial = {
        name: [[start, end] for start, end in spans]
        for (name, length), spans in zip(plan.contigs, plan.covered_spans(stride))
        if spans != [(0, length)]
    }
    return {"lookup_spans": partial} if partial else {}


def _prepare_work_dir(opts, outdir: str, identity: dict, rank: int, world: int) -> str:
    """The run's OUTDIR.partial: new (or emptied with --force), or kept with --resume after checking
    that it belongs to the same run. Its unfinished tracks are always started over."""
    work = store.partial_dir(outdir)
    if rank == 0:
        _check_parent_writable(outdir)
        journal = os.path.join(work, store.JOURNAL)
        if opts.resume:
            _check_resumable(work, journal, identity)
        elif os.path.exists(work):
            if not opts.force:
                raise UsageError(f"{work} holds an unfinished run: continue it with --resume, or --force to start over")
            shutil.rmtree(work)
        shutil.rmtree(os.path.join(work, store.TRACK_DIR), ignore_errors=True)
        os.makedirs(os.path.join(work, store.SEGMENTS), exist_ok=True)
        store.write_json(journal, {**identity, "genomelm_version": __version__})
    barrier(world)
    return work


def _check_parent_writable(outdir: str) -> None:
    parent = os.path.dirname(os.path.abspath(outdir))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {outdir}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {outdir}: directory {parent} is not writable")


def _check_resumable(work: str, journal: str, identity: dict) -> None:
    if not os.path.isfile(journal):
        raise UsageError(f"--resume: no unfinished run in {work} (no {store.JOURNAL})")
    before = store.read_json(journal, "score-genome journal")
    for part in ("model", "settings", "genome"):
        if before.get(part) != identity[part]:
            raise UsageError(f"--resume: the {part} differs from the interrupted run's ({journal}); use the same")


# --------------------------------------------------------------------------- scoring and writing


def _score_and_write(opts, plan: GenomePlan, scorer: GenomeScorer, work: str, stop: StopFlag, summary, rank, world):
    """Score this rank's segments (those not on disk yet); rank 0's writers turn all into tracks."""
    pool = _writer_pool(opts, plan, work, scorer.tiling.stride) if rank == 0 else None
    try:
        if pool is not None:
            pool.start()
        _score_segments(plan, scorer, work, stop, summary, rank, world, pool)
        if stop.reason is None and pool is not None:
            pool.finish()
    except BaseException:
        if pool is not None:
            pool.cancel()
        raise
    if stop.reason is not None:
        if pool is not None:
            pool.cancel()
        _note_stop(work, stop.reason, rank)
        _stopped(summary, stop.reason, opts.output)
    summary.complete = stop.reason is None


def _writer_pool(opts, plan: GenomePlan, work: str, stride: int) -> TrackWriterPool:
    processes = opts.writers or max(1, min(len(store.TRACKS), (os.cpu_count() or 2) - 1))
    spans = plan.covered_spans(stride)
    job = WriterJob(work, plan.contigs, plan.segments, zoom_levels=opts.zoom_levels, lookup_spans=spans)
    return TrackWriterPool(job, min(processes, len(store.TRACKS)))


def _score_segments(plan, scorer: GenomeScorer, work: str, stop, summary, rank: int, world: int, pool) -> None:
    """Score this rank's missing block ranges (at most one per segment) and save each as a segment."""
    segment_dir = os.path.join(work, store.SEGMENTS)
    mine = [s for i, s in enumerate(plan.segments) if i % world == rank]
    jobs = [(index, lo, hi) for index, first, end in mine for lo, hi in _missing_ranges(segment_dir, index, first, end)]
    summary.segments_done = len(mine) - len(jobs)
    ranges = [(plan.contigs[i][0], range(lo, hi), plan.regions[plan.contigs[i][0]]) for i, lo, hi in jobs]
    stride = scorer.tiling.stride
    with progress("bp") as bar, SegmentSaver(segment_dir) as saver:
        task = bar.add_task("score-genome", total=sum(_segment_bases(plan, s, stride) for s in mine))
        for job, done, arrays in scorer.score_ranges(ranges, stop):
            index, lo, hi = jobs[job]
            saver.save(index, (lo, done), lo * stride, arrays)
            bar.advance(task, (done - lo) * stride)
            summary.segments_done += done == hi
            if pool is not None:
                pool.check()


def _segment_bases(plan: GenomePlan, segment, stride: int) -> int:
    index, first, end = segment
    return min(end * stride, plan.contigs[index][1]) - first * stride


def _missing_ranges(segment_dir: str, contig_index: int, first: int, end: int) -> list[tuple[int, int]]:
    """Block ranges of [first, end) not saved yet (a resumed run follows the chain of saved segments)."""
    cursor = first
    while cursor < end:
        path = store.segment_path(segment_dir, contig_index, cursor)
        if not os.path.exists(path):
            return [(cursor, end)]
        cursor = store.segment_blocks(path)[1]
    return []


def _note_stop(work: str, reason: str, rank: int) -> None:
    """Record in the journal why and where the run stopped (the saved segments are the truth for --resume)."""
    if rank != 0:
        return
    journal = os.path.join(work, store.JOURNAL)
    state = store.read_json(journal, "score-genome journal")
    segments = [name for name in os.listdir(os.path.join(work, store.SEGMENTS)) if not name.startswith(".")]
    state["stopped"] = {
        "reason": reason,
        "segments_saved": len(segments),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_json(journal, state)


def _stopped(summary: ScoreGenomeSummary, reason: str, outdir: str) -> None:
    summary.stopped = reason
    message = f"stopped ({reason}) at a block boundary; the work so far is kept: continue with --resume -o {outdir}"
    if reason == "time-limit":
        log.warning("%s", message)
        return
    raise Interrupted(message, 130 if reason == "SIGINT" else 143)


# --------------------------------------------------------------------------- finishing the store


def _finish_store(work: str, outdir: str, identity: dict, started: float) -> int:
    """Move the tracks and calibration into place, write the manifest, rename the work dir to OUTDIR."""
    track_dir = os.path.join(work, store.TRACK_DIR)
    for name in [f"{t}.bw" for t in store.TRACKS] + [store.CALIBRATION, LOOKUP_DIR]:
        os.replace(os.path.join(track_dir, name), os.path.join(work, name))
    shutil.rmtree(os.path.join(work, store.SEGMENTS))
    shutil.rmtree(track_dir)
    os.unlink(os.path.join(work, store.JOURNAL))
    store.write_json(os.path.join(work, store.MANIFEST), _manifest(identity, started))
    size = sum(os.path.getsize(os.path.join(top, name)) for top, _, names in os.walk(work) for name in names)
    _replace_dir(work, outdir)
    return size


def _manifest(identity: dict, started: float) -> dict:
    import platform

    import torch

    return {
        "format": store.FORMAT,
        "format_version": store.FORMAT_VERSION,
        **identity,
        "tracks": {name: {"file": f"{name}.bw", "description": TRACK_DESCRIPTIONS[name]} for name in store.TRACKS},
        "calibration": store.CALIBRATION,
        "lookup": LOOKUP_DIR,
        "coordinates": "bigWig: 0-based half-open; positions without a value are absent",
        "provenance": {
            "command": "genomelm score-genome",
            "genomelm_version": __version__,
            "torch_version": torch.__version__,
            "host": platform.node(),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - started, 3),
        },
    }


def _replace_dir(work: str, outdir: str) -> None:
    """Rename ``work`` to ``outdir``; an older OUTDIR (there only with --force) is removed after."""
    old = None
    if os.path.exists(outdir):
        old = f"{outdir}.old-{os.getpid()}"
        os.rename(outdir, old)
    os.rename(work, outdir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _report(summary: ScoreGenomeSummary) -> None:
    if summary.complete:
        log.info(
            "scored %s positions (%d segment%s) in %.1f s (%.0f bp/s), %.1f MB -> %s",
            f"{summary.bases:,}",
            summary.segments,
            "" if summary.segments == 1 else "s",
            summary.seconds,
            summary.bases_per_second,
            summary.bytes_written / 1e6,
            summary.output,
        )
