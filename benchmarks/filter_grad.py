"""The filter gradient's cross-spectrum: one Triton kernel against the loop over the batch it replaced.

Training's backward pass sums g_spec[b] * conj(u_spec[b]) over the batch for every Hyena layer
(fftconv_cuda._cross_spectrum). Until 2026-12-07 that was a torch loop, two kernel launches per batch row; at
small-32k @ 1,024 tokens (batch 256) that is 511 launches per layer. Side by side, same inputs, CUDA events:

    python benchmarks/filter_grad.py [--shape 256x256x1024 ...] [--repeats 20]

Shapes are BATCHxCHANNELSxLENGTH of the training shapes of benchmarks/official_anchor.py (FFT size 2 * LENGTH).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from _timing import median_seconds
from pretrain_throughput import environment

from genomelm.kernels.fftconv_ref import fft_size

SHAPES = ["256x256x1024", "8x256x32768", "2x256x131072"]


def loop_cross_spectrum(g_spec: torch.Tensor, u_spec: torch.Tensor) -> torch.Tensor:
    """The former implementation: a temporary of one batch row, accumulated row by row."""
    cross = g_spec[0] * u_spec[0].conj()
    for b in range(1, g_spec.shape[0]):
        cross += g_spec[b] * u_spec[b].conj()
    return cross


def median_ms(fn, repeats: int) -> float:
    return 1e3 * median_seconds(fn, torch.device("cuda"), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs="*", default=SHAPES)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("filter_grad.py needs a CUDA GPU")
    from genomelm.kernels.fftconv_cuda import _cross_spectrum

    print(f"# filter-gradient cross-spectrum, loop vs kernel: {environment()}")
    print("| batch x channels x length | loop ms | kernel ms | loop / kernel | max abs difference |")
    print("|---|---|---|---|---|")
    for text in args.shape:
        batch, channels, length = (int(v) for v in text.lower().split("x"))
        bins = fft_size(length) // 2 + 1
        g, u = (torch.randn(batch, channels, bins, dtype=torch.complex64, device="cuda") for _ in range(2))
        loop = median_ms(partial(loop_cross_spectrum, g, u), args.repeats)
        kernel = median_ms(partial(_cross_spectrum, g, u), args.repeats)
        difference = (loop_cross_spectrum(g, u) - _cross_spectrum(g, u)).abs().max().item()
        cells = [text, f"{loop:.3f}", f"{kernel:.3f}", f"{loop / kernel:.2f}x", f"{difference:.1e}"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
