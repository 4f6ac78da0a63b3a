"""Where the GPU time of a genomelm forward (or training step) goes: torch.profiler, kernels grouped by kind.

    python benchmarks/profile_model.py --config medium-160k:4x131072 --precision bf16
    python benchmarks/profile_model.py --config small-32k:8x32768 --train          # forward + backward + AdamW
    python benchmarks/profile_model.py --config medium-160k:4x131072 --compile     # torch.compile'd blocks

Prints one table per run: kernel group, GPU ms per step, share of the step's GPU time, kernel launches, and the
top kernels. Random weights and tokens; warm-up first (compilation and caches stay out of the profile).
"""

from __future__ import annotations

import argparse
import collections
import re

import torch
import torch.nn.functional as F
from embed_throughput import parse_config
from pretrain_throughput import environment
from torch.profiler import ProfilerActivity, profile

from genomelm.model import HyenaDNA, preset

# First match wins: kernel names (lower case) -> group.
GROUPS = [
    ("fused add+LayerNorm", r"add_ln"),
    ("LayerNorm (torch)", r"layer_norm|layernorm"),
    ("Monarch FFT conv (fast mode)", r"_inner_kernel|_outer_forward|_outer_inverse|_one_pass_kernel"),
    ("Hyena mix pre/post/backward", r"_mix_|_short_conv_bwd|_pad_rows|_skip_rows|_cross_spectrum"),
    ("cuFFT", r"fft|radix|regular_fft|vector_fft"),
    ("GEMM", r"gemm|nvjet|sm90_xmma|cutlass|cublas|matmul|_mm_|mm_kernel|splitk"),
    ("GELU", r"gelu"),
    ("filter MLP (sin, exp)", r"sin_|exp_"),
    ("inductor fused (triton_)", r"^triton_"),
    ("reductions", r"reduce|sum_|mean"),
    ("casts, copies, elementwise", r"copy|cast|elementwise|vectorized|fill|cat"),
    ("optimizer", r"adam|foreach|multi_tensor"),
]


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, pattern in GROUPS:
        if re.search(pattern, lowered):
            return group
    return "other"


def make_step(model, ids, precision: str, train: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True) if train else None

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if not train:
                with torch.no_grad():
                    return model.hidden_states(ids).float().mean(dim=1)
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def kernel_times(prof, steps: int) -> list[tuple[str, float, int]]:
    """(kernel name, GPU ms per step, launches per step) of every device kernel in the profile."""
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and event.device_time > 0:
            totals[event.name][0] += event.device_time / 1e3
            totals[event.name][1] += 1
    return [(name, ms / steps, int(count) // steps) for name, (ms, count) in totals.items()]


def report(kernels: list[tuple[str, float, int]], title: str, top: int) -> None:
    total = sum(ms for _, ms, _ in kernels)
    groups: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for name, ms, count in kernels:
        groups[group_of(name)][0] += ms
        groups[group_of(name)][1] += count
    print(f"\n### {title}: {total:.2f} ms of GPU kernels per step\n")
    print("| kernel group | ms / step | share | launches / step |\n|---|---:|---:|---:|")
    for group, (ms, count) in sorted(groups.items(), key=lambda item: -item[1][0]):
        print(f"| {group} | {ms:.2f} | {100 * ms / total:.0f}% | {count} |")
    print(f"\ntop {top} kernels:\n")
    for name, ms, count in sorted(kernels, key=lambda item: -item[1])[:top]:
        print(f"- {ms:.3f} ms x{count} [{group_of(name)}] {name[:110]}")


def profile_one(text: str, args) -> None:
    name, batch, length = parse_config(text)
    torch.manual_seed(0)
    model = HyenaDNA(preset(name)).cuda().train(args.train)
    model.set_conv_backend("cuda")
    if args.compile:
        model.set_compile(True)
    ids = torch.randint(7, 11, (batch, length + int(args.train)), device="cuda")
    step = make_step(model, ids, args.precision, args.train)
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    kind = "training step" if args.train else "inference forward"
    title = f"{name} {batch} x {length:,} {args.precision} {kind}{' (compiled)' if args.compile else ''}"
    report(kernel_times(prof, args.steps), title, args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="PRESET:BATCHxLENGTH (repeatable)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--train", action="store_true", help="forward + backward + AdamW instead of inference")
    parser.add_argument("--compile", action="store_true", help="torch.compile the blocks")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    print(f"# genomelm GPU time by kernel group (torch.profiler): {environment()}")
    for text in args.config or ["medium-160k:4x131072"]:
        profile_one(text, args)


if __name__ == "__main__":
    main()
