"""`genomelm embed`: embeddings of windows of a genome, streamed to a safetensors file.

Rows are windows (pooling mean/last) or tokens (pooling none). Each row carries its coordinates:
contig index, 0-based half-open start/end, and strand (1 forward, 0 both strands averaged).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from genomelm import __version__
from genomelm.commands._common import load_inference_model, model_label, select_device
from genomelm.commands._provenance import command_line, model_line
from genomelm.errors import InputError, UsageError
from genomelm.formats.atomic import check_output_file, refuse_overwriting_inputs
from genomelm.formats.embeddings import EmbeddingWriter
from genomelm.formats.fasta import FastaSource, Window, parse_regions
from genomelm.log import get_logger, progress
from genomelm.runtime import (
    autocast,
    barrier,
    batched,
    check_batch_size,
    default_batch_size,
    distributed,
    pad_right,
    rank_device,
    set_threads,
)
from genomelm.tokenizer import PAD_ID, CharTokenizer, reverse_complement_ids

log = get_logger(__name__)

POOLINGS = ("mean", "last", "none")
DEFAULT_WINDOW_CAP = 32768
PER_TOKEN_LIMIT_BYTES = 2 * 1024**3  # --pooling none refuses larger outputs unless --force


@dataclass
class EmbedOptions:
    fasta: str
    output: str
    model: str | None = None
    regions: list[str] | None = None  # BED paths and/or samtools-style regions (1-based inclusive)
    window: int | None = None  # default: the model's max length, capped at 32k
    stride: int | None = None  # default: the window (non-overlapping tiles)
    pooling: str = "mean"
    layer: int = -1  # -1 = final normalised output
    rc: bool = False  # average forward and reverse-complement strands
    batch_size: int | None = None  # default: runtime.default_batch_size (8 on a GPU; 32k tokens on a CPU)
    device: str = "auto"
    precision: str = "fp32"
    conv_backend: str | None = None
    threads: int | None = None
    force: bool = False
    trust_checkpoint: bool = False


@dataclass
class EmbedSummary:
    output: str
    rows: int
    windows: int
    bases: int
    dim: int
    seconds: float

    @property
    def bases_per_second(self) -> float:
        return self.bases / self.seconds if self.seconds > 0 else 0.0


def run(opts: EmbedOptions) -> EmbedSummary:
    _check_options(opts)
    set_threads(opts.threads)
    rank, world = distributed()
    device = select_device(rank_device(opts.device, rank, world))
    regions = _regions(opts.regions)
    started = time.perf_counter()
    # Open the input before loading the model: a missing or malformed FASTA fails fast, with exit code 1.
    with FastaSource(opts.fasta) as fasta:
        model = load_inference_model(opts.model, device, opts.conv_backend, opts.trust_checkpoint)
        window, stride = _window_and_stride(opts, model.l_max)
        expected = _expected_bases(fasta, regions, window, stride)
        _check_output_size(opts, expected, model.config.d_model)
        metadata = _metadata(opts, model, window, stride)  # the command as asked: before the default batch size
        opts = replace(opts, batch_size=opts.batch_size or default_batch_size(device, window))
        all_windows = fasta.windows(window, stride, regions)
        if world > 1:  # torchrun: this rank's batches to a part file, rank 0 interleaves them
            rows, windows, bases = _embed_rank(opts, model, device, all_windows, metadata, expected, (rank, world))
            if rank == 0:
                _merge_parts(opts, metadata, world, json.dumps(fasta.contig_names))
            barrier(world)
        else:
            with EmbeddingWriter(opts.output, metadata) as writer:
                _declare(writer, opts.pooling, model.config.d_model)
                rows, windows, bases = _embed_all(opts, model, device, all_windows, writer, expected)
                writer.set_metadata("contigs", json.dumps(fasta.contig_names))
    seconds = time.perf_counter() - started
    summary = EmbedSummary(opts.output, rows, windows, bases, model.config.d_model, seconds)
    log.info(
        "embedded %d windows (%s bp) into %d rows in %.1f s (%.0f bp/s) -> %s",
        windows,
        f"{bases:,}",
        rows,
        seconds,
        summary.bases_per_second,
        opts.output,
    )
    return summary


def _check_options(opts: EmbedOptions) -> None:
    if opts.pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, got {opts.pooling!r}")
    if opts.output == "-":
        raise UsageError("embed writes a binary safetensors file: give -o PATH (not '-')")
    check_batch_size(opts.batch_size)
    refuse_overwriting_inputs({"--output": opts.output}, [opts.fasta, opts.model, *(opts.regions or [])])
    check_output_file(opts.output)


def _window_and_stride(opts: EmbedOptions, l_max: int) -> tuple[int, int]:
    window = opts.window if opts.window is not None else min(l_max, DEFAULT_WINDOW_CAP)
    if window < 1:
        raise UsageError(f"--window must be >= 1, got {window}")
    if window > l_max:
        raise UsageError(f"--window {window} is longer than the model's maximum length {l_max}")
    stride = opts.stride if opts.stride is not None else window
    if stride < 1:
        raise UsageError(f"--stride must be >= 1, got {stride}")
    return window, stride


def _regions(specs: list[str] | None):
    if not specs:
        return None
    return [region for spec in specs for region in parse_regions(spec)]


def _expected_bases(fasta: FastaSource, regions, window: int, stride: int) -> int | None:
    """Bases that will be embedded (tokens, counting overlaps), when known without reading the sequence."""
    if not fasta.indexed:
        return None
    lengths = fasta.contig_lengths()
    spans = (
        [(0, n) for n in lengths.values()]
        if regions is None
        else [(r.start, r.end if r.end is not None else lengths.get(r.contig, 0)) for r in regions]
    )
    return sum(_tiled_bases(end - start, window, stride) for start, end in spans if end > start)


def _tiled_bases(length: int, window: int, stride: int) -> int:
    """Tokens covered by tiling ``length`` with windows of ``window`` every ``stride`` (last one clipped)."""
    if length <= window:
        return length
    full = (length - window + stride - 1) // stride  # windows that start before the last one
    return full * window + (length - full * stride)


def _check_output_size(opts: EmbedOptions, expected_bases: int | None, dim: int) -> None:
    if opts.pooling != "none" or opts.force or expected_bases is None:
        return
    size = expected_bases * dim * 4
    if size > PER_TOKEN_LIMIT_BYTES:
        raise UsageError(
            f"--pooling none would write about {size / 1024**3:.1f} GiB of per-token embeddings; "
            "narrow it with --regions, or pass --force"
        )


def _metadata(opts: EmbedOptions, model, window: int, stride: int) -> dict[str, str]:
    settings = {k: v for k, v in asdict(opts).items() if k not in ("output", "trust_checkpoint")}
    settings.update(window=window, stride=stride)
    label = model_label(opts.model, model)
    return {
        "format": "genomelm-embeddings",
        "genomelm_version": __version__,
        "genomelm_command": command_line("embed", opts, positional=("fasta",)),
        "genomelm_model": model_line(label, opts.model, model),
        "model": label,
        "model_config": model.config.to_json(),
        "settings": json.dumps(settings, sort_keys=True),
        "coordinates": "0-based half-open [start, end); strand 1 = forward, 0 = mean of both strands",
    }


def _declare(writer: EmbeddingWriter, pooling: str, dim: int) -> None:
    writer.declare("embeddings", (dim,), np.float32)
    for name, dtype in (("contig", np.int32), ("start", np.int64), ("end", np.int64), ("strand", np.int8)):
        writer.declare(name, (), dtype)


def _embed_all(opts, model, device, windows: Iterator[Window], writer, expected: int | None, share=(0, 1)):
    """Embed every batch of ``windows`` (under torchrun: batch i when i % world == rank, and each row
    gets its batch index in a 'batch' tensor for the merge).

    One batch in flight: batch i's GPU work is queued before batch i-1 is collected and written, so reading and
    tokenising the next windows and writing the last ones overlap the model (same values, same order)."""
    tokenizer = CharTokenizer()
    counts = [0, 0, 0]  # rows, windows, bases
    rank, world = share
    pending = None
    with progress("bp") as bar:
        task = bar.add_task("embed", total=expected)
        for index, batch in enumerate(batched(windows, opts.batch_size)):
            if index % world != rank:
                continue
            ids = [tokenizer.encode(w.sequence, record=w.contig, offset=w.start) for w in batch]
            launched = (index, batch, ids, start_embed_ids(model, ids, device, opts))
            if pending is not None:
                _finish_batch(writer, pending, opts, world, counts, lambda n: bar.advance(task, n))
            pending = launched
        if pending is not None:
            _finish_batch(writer, pending, opts, world, counts, lambda n: bar.advance(task, n))
    return tuple(counts)


def _finish_batch(writer, launched, opts, world: int, counts: list[int], advance) -> None:
    """Wait for a launched batch's vectors, check and write them, and add to counts (rows, windows, bases)."""
    index, batch, ids, finish = launched
    vectors = finish()
    _refuse_non_finite(vectors, batch)
    written = _write_batch(writer, batch, vectors, opts)
    if world > 1:
        writer.add("batch", np.full(written, index, dtype=np.int64))
    batch_bases = sum(len(i) for i in ids)
    counts[0] += written
    counts[1] += len(batch)
    counts[2] += batch_bases
    advance(batch_bases)


def _refuse_non_finite(vectors: list[np.ndarray], batch: list[Window]) -> None:
    """An embedding with NaN or inf is never written (it would poison every downstream distance)."""
    for vector, window in zip(vectors, batch):
        if not np.isfinite(vector).all():
            raise InputError(
                f"the model produced non-finite embeddings (NaN or inf) for {window.contig}:{window.start + 1}-"
                f"{window.end}; nothing written (try --precision fp32, or check the model)"
            )


def _part_path(output: str, rank: int) -> str:
    return f"{output}.rank{rank}.part"


def _embed_rank(opts, model, device, windows, metadata: dict, expected, share: tuple[int, int]):
    """This rank's rows into its part file (rows of its batches, each tagged with the batch index)."""
    rank, world = share
    with EmbeddingWriter(_part_path(opts.output, rank), metadata) as writer:
        _declare(writer, opts.pooling, model.config.d_model)
        writer.declare("batch", (), np.int64)
        counts = _embed_all(opts, model, device, windows, writer, expected, share)
    barrier(world)
    return counts


def _merge_parts(opts, metadata: dict, world: int, contigs: str) -> None:
    """Rank 0: the parts' rows in batch order (batch i is in part i % world) into the output, a batch
    at a time (bounded memory), then the parts are removed."""
    from safetensors import safe_open

    parts = [safe_open(_part_path(opts.output, r), "np") for r in range(world)]
    names = [k for k in parts[0].keys() if k != "batch"]
    batches = [p.get_tensor("batch") for p in parts]
    cursors = [0] * world
    with EmbeddingWriter(opts.output, metadata) as writer:
        for name in names:
            writer.declare(name, tuple(parts[0].get_slice(name).get_shape()[1:]), parts[0].get_slice(name).get_dtype())
        index = 0
        while any(cursors[r] < len(batches[r]) for r in range(world)):
            r = index % world
            end = int(np.searchsorted(batches[r], index, side="right"))  # each part's batch indices ascend
            for name in names:
                writer.add(name, parts[r].get_slice(name)[cursors[r] : end])
            cursors[r], index = end, index + 1
        writer.set_metadata("contigs", contigs)
    for r in range(world):
        os.unlink(_part_path(opts.output, r))


def embed_ids(model, ids: list[np.ndarray], device: torch.device, opts: EmbedOptions) -> list[np.ndarray]:
    """Pooled vectors (D,) or per-token matrices (L, D) for each id array; both strands averaged with rc."""
    return start_embed_ids(model, ids, device, opts)()


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def start_embed_ids(model, ids: list[np.ndarray], device: torch.device, opts: EmbedOptions) -> Callable[[], list]:
    """Queue embed_ids' GPU work and return the function that waits for it and returns embed_ids' result."""
    forward = _start_pooled(model, ids, device, opts, reverse=False)
    reverse = None
    if opts.rc:
        reverse = _start_pooled(model, [reverse_complement_ids(i) for i in ids], device, opts, reverse=True)

    def finish() -> list[np.ndarray]:
        vectors = forward()
        return vectors if reverse is None else [(f + r) / 2 for f, r in zip(vectors, reverse())]

    return finish


def _pooled(model, ids, device, opts: EmbedOptions, reverse: bool) -> list[np.ndarray]:
    """Windows of equal length run together, each length on its own: a contig's short last window costs its own
    length, not the batch's (the quick start's 15.7 kb tail was padded to 32 kb: a quarter of its work)."""
    return _start_pooled(model, ids, device, opts, reverse)()


def _start_pooled(model, ids, device, opts: EmbedOptions, reverse: bool) -> Callable[[], list[np.ndarray]]:
    """_pooled's GPU work queued; the returned function waits for it and returns _pooled's result."""
    groups = [(members, _start_pooled_padded(model, [ids[i] for i in members], device, opts, reverse))
              for members in _same_length_groups(ids)]  # fmt: skip

    def finish() -> list[np.ndarray]:
        out: list[np.ndarray] = [np.empty(0)] * len(ids)
        for members, group in groups:
            for i, vector in zip(members, group()):
                out[i] = vector
        return out

    return finish


def _same_length_groups(ids: list[np.ndarray]) -> list[list[int]]:
    """Indices of ids grouped by length, longest first (in input order within a group)."""
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        groups.setdefault(len(row), []).append(i)
    return [groups[length] for length in sorted(groups, reverse=True)]


def _pooled_padded(model, ids, device, opts: EmbedOptions, reverse: bool) -> list[np.ndarray]:
    return _start_pooled_padded(model, ids, device, opts, reverse)()


def _start_pooled_padded(model, ids, device, opts: EmbedOptions, reverse: bool) -> Callable[[], list[np.ndarray]]:
    """The forward and pooling of one right-padded batch, queued; the returned function waits and returns the
    vectors. Pooled rows go to the host in one copy, started here (no host sync until the function is called)."""
    tokens, _ = pad_right(ids, PAD_ID, device)
    lengths = [len(i) for i in ids]  # from the host: the device's copy would cost a sync
    with autocast(device, opts.precision):
        hidden = model.hidden_states(tokens, layer=opts.layer)  # (B, L, D)
    hidden = hidden.float()
    if opts.pooling == "none":  # per token; the reverse strand is flipped back onto forward coordinates
        rows = [row[:length].flip(0) if reverse else row[:length] for row, length in zip(hidden, lengths)]
        return lambda: [t.cpu().numpy() for t in rows]
    # right padding never leaks into real positions (causal model): pool each row over its real tokens
    pooled = [row[:length].mean(dim=0) if opts.pooling == "mean" else row[length - 1] for row, length in
              zip(hidden, lengths)]  # fmt: skip
    return _to_host(torch.stack(pooled))  # (B, D)


def _to_host(tensor: torch.Tensor) -> Callable[[], list[np.ndarray]]:
    """Start copying a (B, D) tensor to the host; the returned function waits for the copy and returns its rows."""
    if tensor.device.type != "cuda":
        return lambda: list(tensor.numpy())
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def wait() -> list[np.ndarray]:
        done.synchronize()
        return list(host.numpy())

    return wait


def _write_batch(writer: EmbeddingWriter, batch: list[Window], vectors, opts: EmbedOptions) -> int:
    strand = 0 if opts.rc else 1
    if opts.pooling != "none":
        writer.add("embeddings", np.stack(vectors).astype(np.float32))
        _add_coordinates(
            writer, [w.contig_index for w in batch], [w.start for w in batch], [w.end for w in batch], strand
        )
        return len(batch)
    rows = 0
    for window, matrix in zip(batch, vectors):
        positions = np.arange(window.start, window.end, dtype=np.int64)
        writer.add("embeddings", matrix.astype(np.float32))
        _add_coordinates(writer, np.full(len(positions), window.contig_index), positions, positions + 1, strand)
        rows += len(positions)
    return rows


def _add_coordinates(writer: EmbeddingWriter, contigs, starts, ends, strand: int) -> None:
    writer.add("contig", np.asarray(contigs, dtype=np.int32))
    writer.add("start", np.asarray(starts, dtype=np.int64))
    writer.add("end", np.asarray(ends, dtype=np.int64))
    writer.add("strand", np.full(len(starts), strand, dtype=np.int8))
