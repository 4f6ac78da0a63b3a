"""The MLP's first projection with bias + GELU(tanh) in the cuBLASLt epilogue vs the reference (Linear, then GELU).

Two tables, side by side in one run: the op alone (inference and training forward + backward) at the MLP shapes
of the embed benchmark, and the whole model (cuda backend) with the MLP through the dispatcher (the epilogue in bf16
inference only: kernels.use_gemm_epilogue) vs the MLP through the reference (linear_gelu_ref for those rows).
Timing: CUDA events after warm-up, median of --repeats runs. Random weights.

    python benchmarks/mlp_fusion.py

Measured (NVIDIA H200, 2026-12-02, torch 2.11.0+cu130, triton 3.6.0; the model rows with the epilogue on every
CUDA call, before the dispatcher kept it to bf16 inference): op, 2^19 rows, bf16 forward 1.156 -> 0.697 ms (1.66x),
bf16 fwd+bwd 0.97x, fp32 forward 0.97x, fp32 fwd+bwd 0.77x; model, bf16 forward small-32k 8x32,768 14.60 -> 13.50 ms
(1.08x), medium-160k 4x131,072 55.80 -> 52.35 ms (1.07x); fp32 forward 0.98-0.99x; bf16 training step 1.00x.
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

import torch
from _timing import seconds
from embed_throughput import parse_config, print_header

from genomelm.kernels import linear_gelu_ref
from genomelm.kernels.mlp_cuda import linear_gelu as epilogue  # the epilogue itself, whatever the dispatcher picks
from genomelm.model import HyenaDNA, preset


def median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    return statistics.median(seconds(fn, torch.device("cuda")) for _ in range(repeats)) * 1e3


def op_step(fn, x, w, b, bf16: bool, train: bool):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(train):
            out = fn(x, w, b)
        if train:
            out.backward(torch.ones_like(out))

    return step


def op_table(rows_list, args) -> None:
    print("| rows x K -> N | precision | pass | reference ms | epilogue ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for rows in rows_list:
        w = torch.randn(1024, 256, device="cuda", requires_grad=True)
        b = torch.randn(1024, device="cuda", requires_grad=True)
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"
            x = torch.randn(rows, 256, device="cuda", dtype=torch.bfloat16 if bf16 else torch.float32)
            for train in (False, True):
                x.requires_grad_(train)
                ref = median_ms(op_step(linear_gelu_ref, x, w, b, bf16, train), args.warmup, args.repeats)
                fused = median_ms(op_step(epilogue, x, w, b, bf16, train), args.warmup, args.repeats)
                label = "fwd+bwd" if train else "forward"
                print(
                    f"| {rows:,} x 256 -> 1024 | {precision} | {label} | {ref:.3f} | {fused:.3f} | {ref / fused:.2f}x |"
                )


def model_step(model, ids, bf16: bool, train: bool):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(train):
            hidden = model.hidden_states(ids)
        if train:
            hidden.float().square().mean().backward()

    return step


def model_table(configs, args) -> None:
    print("| model | batch x length | precision | pass | reference MLP ms | dispatched MLP ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    reference = mock.patch("genomelm.model.hyena.linear_gelu", lambda x, w, b, backend=None: linear_gelu_ref(x, w, b))
    for name, batch, length in configs:
        torch.manual_seed(0)
        model = HyenaDNA(preset(name)).eval().cuda()
        model.set_conv_backend("cuda")
        ids = torch.randint(7, 11, (batch, length), device="cuda")
        for precision, train in (("fp32", False), ("bf16", False), ("bf16", True)):
            step = model_step(model, ids, precision == "bf16", train)
            with reference:
                ref = median_ms(step, args.warmup, args.repeats)
            fused = median_ms(step, args.warmup, args.repeats)
            label = "fwd+bwd" if train else "forward"
            print(f"| {name} | {batch} x {length:,} | {precision} | {label} | {ref:.2f} | {fused:.2f} | "
                  f"{ref / fused:.3f}x |", flush=True)  # fmt: skip
        del model
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="PRESET:BATCHxLENGTH for the model table (repeatable)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    configs = [parse_config(c) for c in (args.config or ["small-32k:8x32768", "medium-160k:4x131072"])]
    print_header(torch.device("cuda"))
    op_table([b * length for _, b, length in configs], args)
    model_table(configs, args)


if __name__ == "__main__":
    main()
