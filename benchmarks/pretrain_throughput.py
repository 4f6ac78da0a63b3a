"""Pretraining throughput: forward+backward tokens/s per preset and context, the longest trainable sequence,
and multi-GPU scaling of `genomelm pretrain`.

    # tokens/s of forward + backward (bf16 autocast, FFT in fp32), every available conv backend, side by side;
    # then the longest sequence of large-1m that trains at batch 1 with gradient checkpointing
    python benchmarks/pretrain_throughput.py bench

    # `genomelm pretrain` on 1 process, then on N processes (torchrun), same per-GPU batch: tokens/s and ratio
    python benchmarks/pretrain_throughput.py scaling --gpus 2

Timing: CUDA events (perf_counter on CPU) after warm-up, median of --repeats runs. Random weights and random
tokens: throughput does not depend on them. Each line names the device, date, torch and triton versions.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import seconds

from genomelm.kernels import resolve_backend
from genomelm.model import HyenaDNA, preset

BENCH_SHAPES = [
    ("small-32k", 1024),
    ("small-32k", 32768),
    ("medium-160k", 1024),
    ("medium-160k", 32768),
    ("medium-160k", 160000),
]
LONGEST_CANDIDATES = [131072, 262144, 524288, 1_000_000]


def parse_shape(text: str) -> tuple[str, int]:
    """'small-32k:32768' -> ('small-32k', 32768)."""
    name, length = text.split(":")
    return name, int(length)


def environment() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    date = datetime.date.today().isoformat()
    return f"{device}; {date}; torch {torch.__version__}; triton {triton_version}"


def train_step_fn(model: HyenaDNA, ids: torch.Tensor, device: torch.device, bf16: bool):
    """One forward + next-token loss + backward (what pretraining spends its time on, optimiser aside)."""

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids[:, :-1])  # (B, L, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def measure(name: str, length: int, batch: int, backend: str, device, args, checkpointing=False) -> float:
    """Median seconds of one training step of ``batch`` x ``length`` tokens."""
    torch.manual_seed(0)
    model = HyenaDNA(preset(name)).to(device).train()
    model.set_conv_backend(backend)
    model.set_gradient_checkpointing(checkpointing)
    ids = torch.randint(7, 11, (batch, length + 1), device=device)
    step = train_step_fn(model, ids, device, args.precision == "bf16")
    for _ in range(args.warmup):
        step()
    return statistics.median(seconds(step, device) for _ in range(args.repeats))


def backends(device: torch.device) -> list[str]:
    found = ["torch"]
    if device.type == "cuda" and resolve_backend("auto", device) == "cuda":
        found.append("cuda")
    return found


def bench(args) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# pretrain throughput, forward+backward, {args.precision}: {environment()}", flush=True)
    print("| preset | context | batch | backend | step ms | tokens/s | peak GiB |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, length in args.shapes:
        batch = max(1, args.tokens // length)
        for backend in backends(device):
            _reset_peak(device)
            try:
                seconds = measure(name, length, batch, backend, device, args)
            except torch.OutOfMemoryError:
                print(f"| {name} | {length:,} | {batch} | {backend} | OOM | | |", flush=True)
                continue
            rate = batch * length / seconds
            print(
                f"| {name} | {length:,} | {batch} | {backend} | {seconds * 1e3:.1f} | {rate / 1e6:.3f} M "
                f"| {_peak(device):.1f} |",
                flush=True,
            )
    if device.type == "cuda" and not args.skip_longest:
        longest(args, device)


def longest(args, device: torch.device) -> None:
    """The longest sequence of large-1m that trains at batch 1 with gradient checkpointing."""
    print(f"\n# large-1m, batch 1, --grad-checkpointing, {args.precision}: {environment()}")
    print("| tokens | backend | step s | tokens/s | peak GiB |")
    print("|---:|---|---:|---:|---:|")
    args_one = argparse.Namespace(**{**vars(args), "warmup": 1, "repeats": 2})
    for length in LONGEST_CANDIDATES:
        backend = backends(device)[-1]
        _reset_peak(device)
        try:
            seconds = measure("large-1m", length, 1, backend, device, args_one, checkpointing=True)
        except torch.OutOfMemoryError:
            print(f"| {length:,} | {backend} | OOM | | |", flush=True)
            break
        print(
            f"| {length:,} | {backend} | {seconds:.2f} | {length / seconds / 1e6:.3f} M | {_peak(device):.1f} |",
            flush=True,
        )


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


# --------------------------------------------------------------------------- multi-GPU scaling


def scaling(args) -> None:
    """`genomelm pretrain` with 1 process, then ``--gpus`` processes (torchrun), same per-process batch."""
    work = Path(tempfile.mkdtemp(prefix="genomelm-scaling-"))
    fasta = _synthetic_genome(work / "genome.fa.gz", args.genome_mb * 1_000_000)
    print(f"# genomelm pretrain scaling, {args.preset} seq_len {args.seq_len} batch {args.batch}/GPU: {environment()}")
    print("| processes | tokens/step | tokens/s (steady) | ratio |")
    print("|---:|---:|---:|---:|")
    base = None
    for procs in (1, args.gpus):
        rate = _scaling_run(args, fasta, work / f"run{procs}", procs)
        base = base or rate
        print(
            f"| {procs} | {args.batch * procs * args.seq_len:,} | {rate / 1e6:.3f} M | {rate / base:.2f} |", flush=True
        )


def _scaling_run(args, fasta: Path, run_dir: Path, procs: int) -> float:
    """Steady tokens/s of one run: the median of metrics.jsonl's rates after the first logged interval."""
    worker = [
        __file__,
        "worker",
        "--fasta",
        str(fasta),
        "--out",
        str(run_dir),
        "--preset",
        args.preset,
        "--seq-len",
        str(args.seq_len),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
    ]
    if procs == 1:
        command = [sys.executable, *worker]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), *worker]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "4"})
    rates = [
        json.loads(line)["tokens_per_s"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "tokens_per_s" in line
    ]
    return statistics.median(rates[1:] or rates)


def worker(args) -> None:
    """One `genomelm pretrain` process (called through the Python API: the CLI needs typer)."""
    from genomelm.commands import pretrain
    from genomelm.log import setup_logging

    setup_logging()
    pretrain.run(
        pretrain.PretrainOptions(
            fasta=args.fasta,
            output=args.out,
            preset=args.preset,
            seq_len=args.seq_len,
            batch_size=args.batch,
            steps=args.steps,
            warmup_steps=10,
            log_every=10,
            eval_every=10**9,
            save_every=10**9,
            force=True,
        )
    )


def _synthetic_genome(path: Path, length: int) -> Path:
    rng = random.Random(0)
    # Plain gzip: read by streaming into memory, which needs no pyfaidx (absent on some GPU images).
    with gzip.open(path, "wt", compresslevel=1) as handle:
        handle.write(">synthetic\n")
        for start in range(0, length, 100_000):
            text = "".join(rng.choices("ACGT", k=min(100_000, length - start)))
            handle.write("\n".join(text[i : i + 80] for i in range(0, len(text), 80)) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--tokens", type=int, default=1 << 18, help="tokens per step (batch = tokens // context)")
    b.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--skip-longest", action="store_true")
    b.add_argument("--shapes", type=parse_shape, nargs="+", default=BENCH_SHAPES, help="PRESET:CONTEXT ...")
    s = sub.add_parser("scaling")
    s.add_argument("--gpus", type=int, default=2)
    s.add_argument("--preset", default="small-32k")
    s.add_argument("--seq-len", type=int, default=32768)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--genome-mb", type=int, default=20)
    w = sub.add_parser("worker")
    for flag in ("--fasta", "--out", "--preset"):
        w.add_argument(flag, required=True)
    for flag in ("--seq-len", "--batch", "--steps"):
        w.add_argument(flag, type=int, required=True)
    args = parser.parse_args()
    {"bench": bench, "scaling": scaling, "worker": worker}[args.mode](args)


if __name__ == "__main__":
    main()
