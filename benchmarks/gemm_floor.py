"""How fast inference could be if everything but the matrix multiplies took no time: the GEMM floor.

Issue 15 asks for >= 2x the official model in fp32 inference and >= 4x in bf16. Both models run the same linear
layers (in_proj, out_proj, fc1, fc2 per block) in the same precision, and neither enables TF32, so in fp32 their
GEMMs run on the plain FP32 units. This script says what a target demands of those GEMMs:

    python benchmarks/gemm_floor.py                         # GEMM FLOPs per token, from the model (any machine)
    python benchmarks/gemm_floor.py --rates small-32k:8x32768:fp32:3.61:5.22 ...
        # + what the targets demand, from official/genomelm Mbp/s measured by official_anchor.py
    python benchmarks/gemm_floor.py --measure [--official PATH]   # CUDA: time the GEMMs alone (the floor), and
        # with --official the official model's rate in the same run: the best ratio any implementation could reach

FLOPs are counted by torch.utils.flop_counter over one forward pass of the preset (checked against the formula
2 * tokens * (3d^2 + d^2 + 2 d d_inner) per block; the implicit filter's MLP is per call, not per token, and left
out). --peak gives the device's datasheet peaks (TFLOP/s) used to express the demand as a fraction of the peak.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import median_seconds
from embed_throughput import parse_config
from pretrain_throughput import environment
from torch.utils.flop_counter import FlopCounterMode

from genomelm.model import HyenaDNA, preset

INFERENCE_SHAPES = ["small-32k:8x32768", "medium-160k:4x131072", "large-1m:1x1000000"]
TARGETS = {"bf16": 4.0, "fp32": 2.0}  # issue 15: inference >= 4x the official model in bf16, >= 2x in fp32
# NVIDIA H100/H200 SXM datasheet peaks, dense, TFLOP/s: FP32 on the FP32 units (what fp32 GEMMs without TF32
# use) and BF16 on the tensor cores.
DATASHEET_PEAKS = {"fp32": 66.9, "bf16": 989.4}


def block_gemms(name: str) -> list[tuple[int, int]]:
    """(in_features, out_features) of every token-stream linear layer of one forward pass, in order."""
    config = preset(name)
    d, inner = config.d_model, config.d_inner
    return [(d, 3 * d), (d, d), (d, inner), (inner, d)] * config.n_layer


def formula_flops_per_token(name: str) -> int:
    return sum(2 * k * n for k, n in block_gemms(name))


def counted_flops_per_token(name: str, length: int = 1024) -> int:
    """GEMM FLOPs per token of model.hidden_states, counted by torch (CPU, one sequence), filter MLP excluded."""
    model = HyenaDNA(preset(name)).eval()
    model.set_conv_backend("torch")
    ids = torch.randint(7, 11, (1, length))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.hidden_states(ids)
    per_module = counter.get_flop_counts()
    total = sum(per_module["Global"].values())
    filters = sum(
        sum(counts.values())
        for module, counts in per_module.items()
        if module.endswith("filter_fn.implicit_filter")  # each block's filter MLP, once (not its sub-layers)
    )
    return (total - filters) // length


def gemm_seconds(name: str, batch: int, length: int, precision: str, repeats: int) -> float:
    """Median CUDA seconds of the forward pass's GEMMs alone (with bias), on random activations."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    device = torch.device("cuda")
    shapes = block_gemms(name)
    widths = {k for k, _ in shapes}
    inputs = {k: torch.randn(batch * length, k, device=device, dtype=dtype) for k in widths}
    layers = [(torch.randn(n, k, device=device, dtype=dtype), torch.randn(n, device=device, dtype=dtype))
              for k, n in shapes]  # fmt: skip

    def step():
        for (k, _), (weight, bias) in zip(shapes, layers):
            F.linear(inputs[k], weight, bias)

    return median_seconds(step, device, repeats)


def parse_rates(text: str) -> tuple[str, str, float, float]:
    """'small-32k:8x32768:fp32:3.61:5.22' -> ('small-32k:8x32768', 'fp32', official Mbp/s, genomelm Mbp/s)."""
    name, shape, precision, official, genomelm = text.split(":")
    return f"{name}:{shape}", precision, float(official), float(genomelm)


def demand_row(shape: str, precision: str, official: float, genomelm: float, per_token: dict, peaks: dict) -> str:
    """What the issue's target asks of the GEMMs, from measured rates (Mbp/s = 1e6 tokens/s)."""
    name = parse_config(shape)[0]
    flops = per_token[name]
    target = TARGETS[precision] * official
    needed = target * 1e6 * flops / 1e12  # TFLOP/s of GEMM work at the target rate, if nothing else took time
    today = genomelm * 1e6 * flops / 1e12
    peak = peaks[precision]
    cells = [shape, precision, f"{official:.2f}", f"{genomelm:.2f}", f"{today:.1f}", f"{target:.2f}"]
    cells += [f"{needed:.1f}", f"{100 * needed / peak:.0f} %"]
    return "| " + " | ".join(cells) + " |"


def measured_row(shape: str, precision: str, per_token: dict, official_rate, args) -> str:
    name, batch, length = parse_config(shape)
    floor = gemm_seconds(name, batch, length, precision, args.repeats)
    tflops = batch * length * per_token[name] / floor / 1e12
    ceiling = batch * length / floor / 1e6
    cells = [shape, precision, f"{1e3 * floor:.2f}", f"{tflops:.1f}", f"{ceiling:.2f}"]
    if official_rate is not None:
        official = official_rate(shape, precision)
        cells += [f"{official:.2f}", f"{ceiling / official:.2f}x", f"{TARGETS[precision]:.0f}x"]
    return "| " + " | ".join(cells) + " |"


def official_rate_fn(path, args):
    """shape, precision -> the official model's inference Mbp/s, measured as official_anchor.py does."""
    from functools import partial

    from official_anchor import OfficialLM, inference_rate, load_official, run_one

    official = load_official(path)
    anchor_args = argparse.Namespace(warmup=3, repeats=args.repeats)

    def rate(shape: str, precision: str) -> float:
        name, batch, length = parse_config(shape)
        measure = partial(inference_rate, batch=batch, length=length, precision=precision, args=anchor_args)
        return run_one(lambda: OfficialLM(official, name), measure, False)

    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inference", nargs="*", default=INFERENCE_SHAPES, help="PRESET:BATCHxLENGTH ...")
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=("bf16", "fp32"))
    parser.add_argument("--rates", nargs="*", type=parse_rates, default=[], help="SHAPE:PRECISION:OFFICIAL:GENOMELM")
    parser.add_argument("--peak", nargs=2, type=float, default=None, metavar=("FP32", "BF16"),
                        help="datasheet peak TFLOP/s (default: H100/H200 SXM, 66.9 and 989.4)")  # fmt: skip
    parser.add_argument("--measure", action="store_true", help="time the GEMMs alone on the GPU")
    parser.add_argument("--official", default=None, help="with --measure: the official standalone model file")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    peaks = dict(zip(("fp32", "bf16"), args.peak)) if args.peak else DATASHEET_PEAKS
    names = sorted({parse_config(s)[0] for s in args.inference} | {parse_config(r[0])[0] for r in args.rates})
    print(f"# GEMM floor of inference: {environment()}")
    print("\n## GEMM FLOPs per token (forward pass, token-stream linear layers)")
    print("| preset | counted by torch | formula |\n|---|---|---|")
    per_token = {}
    for name in names:
        per_token[name] = counted_flops_per_token(name)
        print(f"| {name} | {per_token[name]:,} | {formula_flops_per_token(name):,} |")
    if args.rates:
        print(f"\n## What the targets ask of the GEMMs (peaks: fp32 {peaks['fp32']}, bf16 {peaks['bf16']} TFLOP/s)")
        print("Rates in Mbp/s as given (official_anchor.py); 'GEMM TFLOP/s' = the GEMM work per second at a rate.")
        print("| shape | precision | official | genomelm | GEMM TFLOP/s today | target rate | GEMM TFLOP/s at target "
              "| of peak |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
        for shape, precision, official, genomelm in args.rates:
            print(demand_row(shape, precision, official, genomelm, per_token, peaks))
    if args.measure:
        if not torch.cuda.is_available():
            raise SystemExit("--measure needs a CUDA GPU")
        official_rate = official_rate_fn(args.official, args) if args.official else None
        extra = " | official Mbp/s | GEMM-only / official | target" if official_rate else ""
        print(f"\n## The GEMMs alone (median of {args.repeats}, CUDA events)")
        print(f"| shape | precision | GEMM ms/batch | GEMM TFLOP/s | GEMM-only Mbp/s{extra} |")
        print("|" + "---|" * (5 + (3 if official_rate else 0)))
        for shape in args.inference:
            for precision in args.precision:
                print(measured_row(shape, precision, per_token, official_rate, args), flush=True)


if __name__ == "__main__":
    main()
