"""Genome-wide scores as tracks: values derived from segments, written by background processes.

A segment (written by the scoring loop) holds, for consecutive positions of one contig, the token
ids of the reference (with one flanking base each side) and the model's log-probabilities of A, C,
G, T from each strand: ``forward`` (n, 4) from the left context, ``reverse`` (n, 4) from the right
context (reverse-complement pass, already mapped back onto forward-strand bases). NaN rows have no
value (no context on that strand, an N-heavy context, outside --regions).

Writer processes (forked, numpy + pyBigWig only) read the segments in genome order as they appear
and append to the bigWig files, so compressing and writing overlap the model's work. Each process
owns some tracks; one of them also counts the calibration table.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from genomelm.errors import GenomelmError
from genomelm.formats import genome_store as store
from genomelm.formats.lookup_store import LookupWriter, lookup_rows
from genomelm.formats.tracks import BigWigWriter
from genomelm.variants.calibration import CalibrationCounter

_A_ID = 7
_LN2 = float(np.log(2.0))
CALIBRATION_JOB = "calibration"
CALIBRATION_PROCESSES = 2  # the calibration counts, split by segment over this many processes
LOOKUP_JOB = "lookup"  # the lookup arrays (genomelm.formats.lookup_store)
POLL_SECONDS = 0.02
WRITER_NICENESS = 5  # writer processes run at a lower priority than the scoring process


class SegmentScores:
    """Track values of one segment (NaN = no value), each computed from the arrays it needs.

    Segment arrays: see genomelm.variants.genome (``ref`` with flanks, per-strand llr and log P(ref)).
    A writer process owns one or a few tracks: reading and computing only what those need is what
    keeps the writers ahead of the model. The strand means are taken in float32: the same bits as in
    float64 then rounded (a sum of two float32 rounds once either way; halving is exact), at half the cost.
    """

    def __init__(self, segment):
        self.segment = segment
        self.start = int(segment["start"])

    @cached_property
    def ref(self) -> np.ndarray:
        return np.asarray(self.segment["ref"])  # (n + 2,) token ids with the flanking bases

    @cached_property
    def mean_llr(self) -> np.ndarray:
        """(n, 4) float32: llr of changing each position to A, C, G, T, mean of the strands that have one."""
        forward, reverse = np.asarray(self.segment["forward_llr"]), np.asarray(self.segment["reverse_llr"])
        return _strand_mean(forward, reverse)

    def mean_llr_of(self, column: int) -> np.ndarray:
        """(n,) float32: column ``column`` of mean_llr (the same bits), computed alone unless mean_llr is."""
        if "mean_llr" in self.__dict__:
            return self.mean_llr[:, column]
        forward, reverse = (np.asarray(self.segment[f"{s}_llr"])[:, column] for s in ("forward", "reverse"))
        return _strand_mean(forward, reverse)

    def track(self, name: str) -> np.ndarray:
        """Values of track ``name`` (genome_store.TRACKS) at the segment's positions; (n,)."""
        if name == "surprise":  # -log2 P(reference base), mean of both strands
            forward, reverse = (
                -np.asarray(self.segment[f"{s}_ref"], np.float64) / _LN2 for s in ("forward", "reverse")
            )
            return _strand_mean(forward, reverse)
        if name == "llr_min":
            return self._lowest_alternative()
        return self.mean_llr_of(store.BASES.index(name[-1]))

    def _lowest_alternative(self) -> np.ndarray:
        """(n,) the lowest llr of the 3 alternative bases (NaN when one has none), one column at a time:
        numpy's min along a row of 4 and a scatter of the reference bases cost this track's writer
        process 5x the others' (benchmarks/profile_genome.py, H200 host, 2026-12-02)."""
        code = self.ref[1:-1].astype(np.int8) - np.int8(_A_ID)  # (n,) 0-3 for A/C/G/T
        lowest = np.full(len(code), np.inf, np.float32)
        for column in range(4):  # the reference base's column does not count
            np.minimum(lowest, np.where(code == column, np.float32(np.inf), self.mean_llr_of(column)), out=lowest)
        return np.where(np.isfinite(lowest), lowest, np.float32(np.nan))

    def lookup_rows(self) -> np.ndarray:
        """(n, 6) float32 rows of the lookup arrays: mean and forward llr of the 3 alternative bases."""
        forward = np.asarray(self.segment["forward_llr"])  # (n, 4) float32
        return lookup_rows(self.ref[1:-1].astype(np.int64) - _A_ID, self.mean_llr, forward)


def _strand_mean(forward: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """Mean of the strands that have a value (NaN where neither has), as LlrResult.mean."""
    both = (forward + reverse) * forward.dtype.type(0.5)  # exact halving: float32 stays float32
    return np.where(np.isnan(forward), reverse, np.where(np.isnan(reverse), forward, both))


# --------------------------------------------------------------------------- writer processes


@dataclass
class WriterJob:
    """What one writer process does (picklable: it is sent to a spawned process)."""

    work_dir: str  # the run's OUTDIR.partial
    contigs: list[tuple[str, int]]  # the bigWig header: (name, length) in genome order
    plan: list[tuple[int, int, int]]  # (contig index in ``contigs``, first block, end block) in order
    tracks: list[str] = field(default_factory=list)  # genome_store.TRACKS names; CALIBRATION_JOB too
    zoom_levels: int = 0
    threads: int = 1  # compression threads of each bigWig file
    shard: tuple[int, int] = (0, 1)  # calibration: this process counts segment i when i % shard[1] == shard[0]
    lookup_spans: list[list[tuple[int, int]]] | None = None  # per contig: what its lookup array covers (None: all)


def run_writer_job(job: WriterJob, cancel) -> None:
    """Write the job's tracks from every planned segment, waiting for each to appear; stops early
    (leaving unfinished files) when ``cancel`` is set. Errors are reported through an error file."""
    # Ctrl-C reaches the whole process group and schedulers signal it too: the parent decides when
    # the writers stop (through ``cancel``), so that it can stop at a block boundary first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Below the scoring process, which feeds the GPU: when the host's cores are busy, it goes first.
    os.nice(WRITER_NICENESS)
    try:
        _write_tracks(job, cancel)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, GenomelmError):
            message += "\n" + traceback.format_exc()
        with open(_error_file(job), "w") as handle:
            handle.write(message)
        raise SystemExit(1) from None


def _error_file(job: WriterJob) -> str:
    return os.path.join(job.work_dir, store.TRACK_DIR, f"error-{'-'.join(job.tracks)}.txt")


def _write_tracks(job: WriterJob, cancel) -> None:
    track_dir = os.path.join(job.work_dir, store.TRACK_DIR)
    names = [t for t in job.tracks if t not in (CALIBRATION_JOB, LOOKUP_JOB)]
    writers = {
        t: BigWigWriter(store.track_file(track_dir, t), job.contigs, job.zoom_levels, job.threads) for t in names
    }
    counter = CalibrationCounter() if CALIBRATION_JOB in job.tracks else None
    lookup = LookupWriter(track_dir, job.contigs, job.lookup_spans) if LOOKUP_JOB in job.tracks else None
    for i, (contig, segment) in enumerate(_segments_in_order(job, cancel)):
        scores = SegmentScores(segment)
        for name, writer in writers.items():
            writer.add(contig, scores.start, scores.track(name))
        if counter is not None and i % job.shard[1] == job.shard[0]:
            counter.add(scores.mean_llr, scores.ref)
        if lookup is not None:
            lookup.add(contig, scores.start, scores.lookup_rows())
    if cancel.is_set():
        for writer in writers.values():
            writer.abort()
        return
    for writer in [*writers.values(), *([lookup] if lookup is not None else [])]:
        writer.close()
    if counter is not None:
        np.save(_shard_file(job), counter.counts)


def _shard_file(job: WriterJob) -> str:
    return os.path.join(job.work_dir, store.TRACK_DIR, f"calibration-{job.shard[0]}.npy")


def _save_calibration(jobs: list[WriterJob]) -> None:
    """Sum the calibration shards' counts (integers: the sum is the same however they were split)."""
    counter = CalibrationCounter()
    for job in jobs:
        if CALIBRATION_JOB in job.tracks:
            counter.counts += np.load(_shard_file(job))
            os.unlink(_shard_file(job))
    path = os.path.join(jobs[0].work_dir, store.TRACK_DIR, store.CALIBRATION)
    store.save_arrays(path, calibration_arrays(counter), compress=True)


def calibration_arrays(counter: CalibrationCounter) -> dict[str, np.ndarray]:
    from genomelm.variants import calibration

    return {
        "counts": counter.counts,
        "llr_low": np.float64(calibration.LLR_LOW),
        "llr_high": np.float64(calibration.LLR_HIGH),
        "bin_width": np.float64(calibration.BIN_WIDTH),
        "contexts": np.array(calibration.CONTEXTS),
    }


def _segments_in_order(job: WriterJob, cancel):
    """(contig name, segment arrays) of every planned block range, in order, as they appear on disk."""
    segment_dir = os.path.join(job.work_dir, store.SEGMENTS)
    parent = os.getppid()
    for contig_index, first, end in job.plan:
        cursor = first
        while cursor < end:
            path = store.segment_path(segment_dir, contig_index, cursor)
            while not os.path.exists(path):
                if cancel.is_set() or os.getppid() != parent:  # cancelled, or the parent was killed
                    return
                time.sleep(POLL_SECONDS)
            segment = store.Segment(path)
            yield job.contigs[contig_index][0], segment
            cursor = int(segment["blocks"][1])


def compression_threads(track_processes: int) -> int:
    """Compression threads per bigWig file: the CPUs left by the scoring process, its saver and the
    calibration and lookup writers, shared among the track processes (1 to 4 each). zlib of per-base
    floats is the largest host cost of a run (H200 host: ~0.25 s per Mbp and track on one core)."""
    spare = (os.cpu_count() or 2) - 2
    return max(1, min(4, spare // max(1, track_processes)))


class TrackWriterPool:
    """Background processes that turn segments into bigWig files and the calibration table."""

    def __init__(self, base: WriterJob, processes: int, calibration_processes: int = CALIBRATION_PROCESSES):
        threads = compression_threads(processes)
        self.jobs = [
            WriterJob(base.work_dir, base.contigs, base.plan, list(tracks), base.zoom_levels, threads)
            for tracks in (store.TRACKS[i::processes] for i in range(processes))
        ]
        # processes of their own: counting a segment costs more than writing a track's values of it
        self.jobs += [
            WriterJob(base.work_dir, base.contigs, base.plan, [CALIBRATION_JOB], shard=(i, calibration_processes))
            for i in range(calibration_processes)
        ]
        # and the lookup arrays (24 bytes a base, no compression)
        lookup = WriterJob(base.work_dir, base.contigs, base.plan, [LOOKUP_JOB], lookup_spans=base.lookup_spans)
        self.jobs.append(lookup)
        # fork, as torch's DataLoader workers: no re-import of torch; the children use numpy and
        # pyBigWig only, never CUDA, so a parent holding CUDA state is fine.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._cancel = context.Event()
        self._processes = [context.Process(target=run_writer_job, args=(job, self._cancel)) for job in self.jobs]

    def start(self) -> None:
        os.makedirs(os.path.join(self.jobs[0].work_dir, store.TRACK_DIR), exist_ok=True)
        for process in self._processes:
            process.start()

    def check(self) -> None:
        """Raise the first writer's error as soon as one has failed (instead of scoring on for nothing)."""
        for job, process in zip(self.jobs, self._processes):
            if process.exitcode not in (None, 0):
                raise WriterError(_failure(job, process.exitcode))

    def finish(self) -> None:
        """Wait for every writer to complete its files."""
        for process in self._processes:
            process.join()
        self.check()
        _save_calibration(self.jobs)

    def cancel(self) -> None:
        """Stop the writers (their unfinished files stay in the work directory, to be discarded)."""
        self._cancel.set()
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()


class WriterError(GenomelmError):
    """A track writer process failed (disk full, unwritable directory, ...)."""


def _failure(job: WriterJob, exitcode: int) -> str:
    path = _error_file(job)
    if os.path.exists(path):
        with open(path) as handle:
            return f"track writer failed: {handle.read().strip().splitlines()[0]}"
    return f"track writer for {', '.join(job.tracks)} died (exit code {exitcode})"
