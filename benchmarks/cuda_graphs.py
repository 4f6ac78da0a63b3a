"""CUDA graphs for fixed-shape inference: eager forward vs a replayed graph of it, per shape (bf16 and fp32).

What `genomelm embed` and score-variants run per batch: hidden states of a (B, L) batch, no grad, cuda backend.
The graphed rows go through Backbone.graphs (model/cuda_graphs.py, what GENOMELM_CUDA_GRAPHS=1 enables), output
copy included. Timing: CUDA events after warm-up (the capture is done in the warm-up), median of --repeats runs;
the events include the GPU's idle gaps while Python launches kernels, which is what graphs remove.

    python benchmarks/cuda_graphs.py --config small-32k:8x32768 --config small-32k:8x1024

Measured (NVIDIA H200, 2026-12-02, torch 2.11.0+cu130, triton 3.6.0), eager -> graph ms, bf16 / fp32: small-32k
8x32,768 13.21 -> 13.45 (0.98x) / 0.99x; 8x8,192 5.87 -> 3.94 (1.49x) / 1.01x; 8x2,048 3.62x / 1.35x; 8x1,024
4.21 -> 0.82 (5.16x) / 1.83x; 1x1,024 8.39x / 4.01x; tiny-1k 32x1,024 2.60 -> 0.68 (3.84x) / 2.89x; 1x1,024
10.8x / 9.0x. Hence opt-in: no gain at the commands' default 32k windows, large gains for short windows.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import seconds
from embed_throughput import parse_config, print_header

from genomelm.model import HyenaDNA, preset

DEFAULT_CONFIGS = ["small-32k:8x32768", "small-32k:8x8192", "small-32k:8x2048", "small-32k:8x1024",
                   "small-32k:1x1024", "tiny-1k:32x1024", "tiny-1k:1x1024"]  # fmt: skip


def median_ms(model, ids, bf16: bool, args) -> float:
    @torch.no_grad()
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            return model.hidden_states(ids)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    return statistics.median(seconds(step, torch.device("cuda")) for _ in range(args.repeats)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="PRESET:BATCHxLENGTH (repeatable)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print_header(torch.device("cuda"))
    print("| model | batch x length | precision | eager ms | graph ms | speed-up | eager Mbp/s | graph Mbp/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, batch, length in (parse_config(c) for c in args.config or DEFAULT_CONFIGS):
        torch.manual_seed(0)
        model = HyenaDNA(preset(name)).eval().cuda()
        model.set_conv_backend("cuda")
        ids = torch.randint(7, 11, (batch, length), device="cuda")
        for precision in ("bf16", "fp32"):
            model.set_cuda_graphs(False)
            eager = median_ms(model, ids, precision == "bf16", args)
            model.set_cuda_graphs(True)
            graph = median_ms(model, ids, precision == "bf16", args)
            assert model.backbone.graphs._graphs, "no graph was captured"
            mbp = batch * length / 1e3
            print(f"| {name} | {batch} x {length:,} | {precision} | {eager:.3f} | {graph:.3f} | {eager / graph:.2f}x | "
                  f"{mbp / eager:.2f} | {mbp / graph:.2f} |", flush=True)  # fmt: skip
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
