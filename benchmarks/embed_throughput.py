"""Embedding throughput (bp/s) of a HyenaDNA preset on the current device, forward without grad.

Measures what `genomelm embed` spends its time on: the model forward over full windows plus mean pooling,
in fp32 and bf16 autocast, per long-convolution backend. Random weights: throughput does not depend on them.
Timing: CUDA events (or perf_counter on CPU) after warm-up, median of --repeats runs.

    python benchmarks/embed_throughput.py --config small-32k:8x32768 --config medium-160k:4x131072

Reference (official HyenaDNA standalone model, H100, forward no grad, same shapes): small-32k 8x32,768:
3.35 Mbp/s fp32 / 5.60 Mbp/s bf16 autocast; medium-160k 4x131,072: 1.52 / 2.43 Mbp/s.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics

import torch
from _timing import seconds

from genomelm.kernels import resolve_backend
from genomelm.model import HyenaDNA, preset

OFFICIAL_H100 = {("small-32k", 8, 32768): (3.35, 5.60), ("medium-160k", 4, 131072): (1.52, 2.43)}


def parse_config(text: str) -> tuple[str, int, int]:
    """'small-32k:8x32768' -> ('small-32k', 8, 32768)."""
    name, shape = text.split(":")
    batch, length = shape.lower().split("x")
    return name, int(batch), int(length)


def measure(model, ids, device, precision: str, warmup: int, repeats: int) -> float:
    """Median seconds of one forward + mean pooling over the batch."""

    @torch.no_grad()
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            hidden = model.hidden_states(ids)
        return hidden.float().mean(dim=1)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return statistics.median(seconds(step, device) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="PRESET:BATCHxLENGTH (repeatable)")
    parser.add_argument("--backend", action="append", help="conv backend(s) to compare (default: torch, +cuda on GPU)")
    parser.add_argument("--precision", action="append", help="fp32 and/or bf16 (default both)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configs = [parse_config(c) for c in (args.config or ["small-32k:8x32768", "medium-160k:4x131072"])]
    backends = args.backend or available_backends(device)
    precisions = args.precision or ["fp32", "bf16"]
    print_header(device)
    print("| preset | batch x length | backend | precision | ms / batch | Mbp/s | official H100 Mbp/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, batch, length in configs:
        run_config(name, batch, length, backends, precisions, device, args)


def available_backends(device: torch.device) -> list[str]:
    backends = ["torch"]
    if device.type == "cuda":
        try:
            resolve_backend("cuda", device)
            backends.append("cuda")
        except RuntimeError:
            pass
    return backends


def run_config(name, batch, length, backends, precisions, device, args) -> None:
    torch.manual_seed(0)
    model = HyenaDNA(preset(name)).eval().to(device)
    ids = torch.randint(7, 11, (batch, length), device=device)
    official = OFFICIAL_H100.get((name, batch, length))
    for backend in backends:
        model.set_conv_backend(backend)
        for precision in precisions:
            seconds = measure(model, ids, device, precision, args.warmup, args.repeats)
            mbps = batch * length / seconds / 1e6
            ref = official[0 if precision == "fp32" else 1] if official else None
            ratio = f"{mbps / ref:.2f}x" if ref else "-"
            print(
                f"| {name} | {batch} x {length:,} | {backend} | {precision} | {seconds * 1e3:.1f} | {mbps:.2f} | "
                f"{ref if ref else '-'} | {ratio} |",
                flush=True,
            )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def print_header(device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    print(
        f"# embed throughput — device: {name}; date: {datetime.date.today()}; torch {torch.__version__}; "
        f"triton {triton_version}"
    )


if __name__ == "__main__":
    main()
