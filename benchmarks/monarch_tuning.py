"""Tile-size sweep of fast mode (genomelm.kernels.fftconv_monarch): time, error, registers and spills per config.

For whoever tunes the Monarch kernels next: each row times one configuration of ``fftconv_monarch.TUNING``
(plan split and tile sizes) against precise mode and the reference on bf16 u, checks its relative RMS error
against float64 on a few channels, and prints the compiled kernels' register and spill counts (spills were the
first bottleneck: register tiles larger than 128 x 64 spill on an H200).

    python benchmarks/monarch_tuning.py       # a GPU with Triton; about 30 s plus compilation
"""

from __future__ import annotations

import statistics

import torch

from genomelm.kernels import fftconv_cuda as fc
from genomelm.kernels import fftconv_monarch as fm
from genomelm.kernels.fftconv_ref import fftconv_ref

DEVICE = "cuda"
H = 256
CASES = [  # (L, B*H, configurations of fftconv_monarch.TUNING to compare; {} = the defaults)
    (2048, 2048, [{}, {"register_warps": 8}]),
    (4096, 2048, [{}, {"register_warps": 4}]),
    (16384, 2048, [{}, {"max_one_pass": 32768}]),
    (65536, 2048, [{}, {"inner": 2048}, {"register_warps": 8}]),
    (131072, 1024, [{}, {"inner": 2048}]),
    (1048576, 256, [{}]),
]


def median_ms(fn, repeats: int = 10) -> float:
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rel_rms(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm()).item()


def sweep(L: int, bh: int, configs: list[dict]) -> None:
    u = torch.randn(bh // H, H, L, device=DEVICE).bfloat16()
    k = torch.randn(H, L, device=DEVICE) * torch.exp(-4 * torch.linspace(0, 1, L, device=DEVICE))
    D = torch.randn(H, device=DEVICE)
    with torch.no_grad():
        fc.clear_spectrum_cache()
        t_precise = median_ms(lambda: fc.fftconv(u, k, D))
        t_ref = median_ms(lambda: fftconv_ref(u, k, D))
    want = fftconv_ref(u[:1, :4].double(), k[:4].double(), D[:4].double())
    print(f"L={L:,} B*H={bh}: reference {t_ref:.3f} ms, precise {t_precise:.3f} ms", flush=True)
    for config in configs:
        fm.TUNING.clear()
        fm.TUNING.update(config)
        plan = fm.plan(L)
        spectrum = fm.filter_spectrum(k, plan)
        try:
            t_fast = median_ms(lambda s=spectrum, p=plan: fm.monarch_conv(u, s, p, D, u.dtype))
        except Exception as exc:  # e.g. triton's OutOfResources: too large tiles for shared memory
            print(f"  {config}: plan {plan.outer} x {plan.rows} x {plan.cols}: failed: {str(exc)[:160]}", flush=True)
            continue
        counts = [(kernel.n_regs, kernel.n_spills) for kernel in fm.LAST_KERNELS]
        err = rel_rms(fm.monarch_conv(u, spectrum, plan, D, u.dtype)[:1, :4], want)
        print(
            f"  {config or 'defaults'}: plan {plan.outer} x {plan.rows} x {plan.cols}, {t_fast:.3f} ms "
            f"({t_precise / t_fast:.2f}x precise, {t_ref / t_fast:.2f}x reference), rel RMS {err:.1e}, "
            f"registers/spills per kernel {counts}",
            flush=True,
        )
    fm.TUNING.clear()


def main() -> None:
    print(f"# Monarch tuning sweep — {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for L, bh, configs in CASES:
        sweep(L, bh, configs)


if __name__ == "__main__":
    main()
