"""Fast mode's backward pass against precise mode's, side by side in one run: training throughput and gradients.

Decides whether `auto` should train in fast mode (genomelm/kernels/__init__.py: use_fast_mode). Both modes
run the same genomelm model (cuda backend), the training step of benchmarks/official_anchor.py (forward +
next-token loss + backward + fused AdamW, bf16 autocast, 2^18 tokens per step), over its training shapes:

    python benchmarks/fast_backward.py [--training small-32k:1024 ...] [--repeats 7]

Then, for one batch per shape, how far fast mode's gradients are from precise mode's: relative RMS difference
over all parameters (the fast forward pass alone is 3e-3 to 4e-3 from float64, fftconv_monarch). CUDA only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
from official_anchor import TRAINING_SHAPES, TRAINING_TOKENS, genomelm_model, run_one, training_rate
from pretrain_throughput import environment, parse_shape

from genomelm.kernels import MODE_ENV_VAR

MODES = ("precise", "fast")


def in_mode(mode: str, fn, *args):
    """fn(*args) with the cuda backend's convolution forced into ``mode`` (read at every call)."""
    os.environ[MODE_ENV_VAR] = mode
    try:
        return fn(*args)
    finally:
        os.environ.pop(MODE_ENV_VAR, None)


def parameter_grads(name: str, length: int) -> torch.Tensor:
    """All parameter gradients of one bf16-autocast training batch, flattened (fp64), same weights and tokens."""
    torch.manual_seed(0)
    model = genomelm_model(name, False).cuda().train()
    ids = torch.randint(7, 11, (max(1, TRAINING_TOKENS // length), length + 1), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids[:, :-1])
    F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()).backward()
    grads = torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])
    del model
    torch.cuda.empty_cache()
    return grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training", nargs="*", type=parse_shape, default=[parse_shape(s) for s in TRAINING_SHAPES])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("fast_backward.py needs a CUDA GPU")
    started = time.perf_counter()
    print(f"# genomelm training, precise vs fast mode (cuda backend): {environment()}")
    print(f"\n## Training (forward + backward + AdamW, bf16 autocast, {TRAINING_TOKENS:,} tokens/step), M tokens/s")
    print("| shape | batch | precise | fast | fast / precise | grad rel. RMS difference |\n|---|---|---|---|---|---|")
    for name, length in args.training:
        measure = partial(training_rate, length=length, args=args)
        rates = [in_mode(mode, run_one, partial(genomelm_model, name, False), measure, True) for mode in MODES]
        precise, fast = (in_mode(mode, parameter_grads, name, length) for mode in MODES)
        difference = ((fast - precise).norm() / precise.norm()).item()
        batch = max(1, TRAINING_TOKENS // length)
        cells = [f"{name} @ {length:,}", str(batch), f"{rates[0]:.2f}", f"{rates[1]:.2f}"]
        cells += [f"{rates[1] / rates[0]:.2f}x", f"{difference:.1e}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n# total {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
