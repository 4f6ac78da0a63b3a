"""Long convolution and Hyena operator: reference (torch) vs fused (cuda: precise fp32 mode and fast bf16 mode).

One run prints, side by side and with device, date, torch and Triton versions:
  1. fftconv (B, H, L) fp32, H = 256 channels, B*H in {256, 2048}, L from 1K to 1M: median ms of the reference
     and the fused backend, speedup, achieved GB/s and % of the HBM floor (bytes = read u + read k + write y,
     divided by the device-to-device copy bandwidth measured at the start), peak extra memory.
  1b. the same with bf16 u and y: reference vs precise mode vs fast mode (Monarch FFT on tensor cores).
  2. hyena_mix (B, L, 3H) -> (B, L, H), fp32 activations, the whole operator between in_proj and out_proj:
     forward and forward+backward, ref vs fused, % of floor (read projected + k, write out), peak extra memory;
     bf16 activations in both fused modes.
  3. end to end per backend: embed bp/s (forward without grad + mean pooling, fp32 and bf16 autocast) and
     pretrain tokens/s (forward + backward + AdamW step, bf16 autocast) for small-32k and medium-160k; the cuda
     backend in precise mode and in its default (auto: fast mode for bf16 up to L = 131,072).
Timing: CUDA events after warm-up, median of repeated runs; inputs rotate over several copies when small enough
to sit in L2, so small sizes are not measured from cache. Random weights: throughput does not depend on them.

    python benchmarks/fftconv_bench.py                # everything (about 2 minutes on an H200)
    python benchmarks/fftconv_bench.py --quick        # fewer lengths, no end to end
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from genomelm.kernels import fftconv_ref, hyena_mix_ref
from genomelm.model import HyenaDNA, preset
from genomelm.training import make_optimizer

DEVICE = "cuda"  # a module constant so that a CPU smoke run (Triton interpreter) can swap it
H = 256  # channels of every published HyenaDNA model
LENGTHS = [1024, 4096, 16384, 65536, 262144, 1048576]
BH = [256, 2048]
BREAKDOWN = [(262144, 2048), (1048576, 256)]  # (L, B*H) of the stage-by-stage table
E2E_EMBED = [("small-32k", 8, 32768), ("medium-160k", 4, 131072)]
E2E_TRAIN = [("small-32k", 4, 32768), ("medium-160k", 1, 131072)]
OFFICIAL_H100_EMBED = {"small-32k": (3.35, 5.60), "medium-160k": (1.52, 2.43)}  # Mbp/s fp32 / bf16 autocast
ROTATE_BYTES = 512 * 2**20  # rotate input copies until this many bytes: more than the L2 (50-60 MB)


def event_time(fn) -> float:
    """Seconds of one fn() on the GPU, with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000


def cuda_time(fn, warmup: int = 2, min_repeats: int = 5, budget_s: float = 0.4) -> float:
    """Median seconds of fn() after warm-up; at least min_repeats runs (3 for calls over 0.2 s), up to budget_s."""
    for _ in range(warmup - 1):
        fn()
    slow = event_time(fn) > 0.2  # the last warm-up, timed: long calls get fewer repeats (device time is scarce)
    repeats = 3 if slow else min_repeats
    times: list[float] = []
    while len(times) < repeats or (sum(times) < budget_s and len(times) < 50):
        times.append(event_time(fn))
    return statistics.median(times)


def peak_extra_bytes(fn) -> int:
    """Peak memory allocated by one fn() call above what was allocated before it (output included)."""
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    del result
    return torch.cuda.max_memory_allocated() - base


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written (2 GiB buffers)."""
    buffers = [torch.randn(2**29, device=DEVICE), torch.empty(2**29, device=DEVICE)]
    seconds = cuda_time(lambda: buffers[1].copy_(buffers[0]), warmup=3, min_repeats=20)
    buffers.clear()
    return 2 * 2**29 * 4 / seconds


def rotating(make, bytes_per_set: int):
    """A callable returning the next of several input sets (one set when a set is larger than ROTATE_BYTES)."""
    sets = [make(i) for i in range(max(1, min(64, ROTATE_BYTES // max(1, bytes_per_set))))]
    state = {"i": 0}

    def next_set():
        state["i"] = (state["i"] + 1) % len(sets)
        return sets[state["i"]]

    return next_set


def safe(fn):
    """fn() or None when the GPU runs out of memory (cuFFT reports it as a RuntimeError); the reason to stderr."""
    try:
        return fn()
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "CUFFT" not in str(exc).upper():
            raise
        print(f"  (out of memory: {str(exc).splitlines()[0][:120]})", file=sys.stderr)
        gc.collect()
        torch.cuda.empty_cache()
        return None


def fmt(value, spec: str = ".2f", unit: str = "") -> str:
    return "OOM" if value is None else f"{value:{spec}}{unit}"


# --- 1. fftconv ------------------------------------------------------------------------------------------------


def bench_fftconv(fused, L: int, bh: int, bw: float) -> str:
    B = bh // H
    gen = torch.Generator(device=DEVICE).manual_seed(L)

    def make(_):
        u = torch.randn(B, H, L, device=DEVICE, generator=gen)
        return u, torch.randn(H, L, device=DEVICE, generator=gen), torch.randn(H, device=DEVICE, generator=gen)

    inputs = rotating(make, 4 * (B * H * L + H * L))
    floor_bytes = 4 * (2 * B * H * L + H * L)  # read u, read k, write y (fp32)
    cells = []
    for fn in (fftconv_ref, fused):
        t = safe(lambda fn=fn: cuda_time(lambda: fn(*inputs())))
        mem = safe(lambda fn=fn: peak_extra_bytes(lambda: fn(*inputs())))
        cells.append((t, mem))
    (t_ref, m_ref), (t_fus, m_fus) = cells
    return row_fmt(L, bh, t_ref, t_fus, floor_bytes, bw, m_ref, m_fus, 4 * B * H * L)


def row_fmt(L, bh, t_ref, t_fus, floor_bytes, bw, m_ref, m_fus, input_bytes) -> str:
    speedup = t_ref / t_fus if t_ref and t_fus else None
    gbs = floor_bytes / t_fus / 1e9 if t_fus else None
    pct = 100 * floor_bytes / bw / t_fus if t_fus else None
    pct_ref = 100 * floor_bytes / bw / t_ref if t_ref else None
    mem_ref = m_ref / input_bytes if m_ref else None
    mem_fus = m_fus / input_bytes if m_fus else None
    return (
        f"| {L:,} | {bh} | {fmt(t_ref and t_ref * 1e3, '.3f')} | {fmt(t_fus and t_fus * 1e3, '.3f')} | "
        f"{fmt(speedup, '.2f', 'x')} | {fmt(gbs, '.0f')} | {fmt(pct_ref, '.1f', '%')} | {fmt(pct, '.1f', '%')} | "
        f"{fmt(mem_ref, '.1f', 'x')} | {fmt(mem_fus, '.1f', 'x')} |"
    )


@contextlib.contextmanager
def conv_mode(mode: str):
    """Run the cuda backend in one mode (GENOMELM_CONV_MODE is read at every call)."""
    old = os.environ.get("GENOMELM_CONV_MODE")
    os.environ["GENOMELM_CONV_MODE"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GENOMELM_CONV_MODE")
        else:
            os.environ["GENOMELM_CONV_MODE"] = old


def bench_fftconv_modes(fused, L: int, bh: int, bw: float) -> str:
    """bf16 u and y (fp32 filter): reference vs precise vs fast; bytes = 2 (u) + 2 (y) per element + 4 per k."""
    B = bh // H
    gen = torch.Generator(device=DEVICE).manual_seed(L)

    def make(_):
        u = torch.randn(B, H, L, device=DEVICE, generator=gen).bfloat16()
        return u, torch.randn(H, L, device=DEVICE, generator=gen), torch.randn(H, device=DEVICE, generator=gen)

    inputs = rotating(make, 2 * B * H * L + 4 * H * L)
    floor_s = (4 * B * H * L + 4 * H * L) / bw
    times, mems = [], []
    for fn, mode in ((fftconv_ref, "precise"), (fused, "precise"), (fused, "fast")):
        with conv_mode(mode):
            times.append(safe(lambda fn=fn: cuda_time(lambda: fn(*inputs()))))
            mems.append(safe(lambda fn=fn: peak_extra_bytes(lambda: fn(*inputs()))))
    t_ref, t_pre, t_fast = times

    def ratio(a, b):
        return fmt(a / b, ".2f", "x") if a and b else "-"

    def pct(t):
        return fmt(t and 100 * floor_s / t, ".1f", "%")

    ms = [fmt(t and t * 1e3, ".3f") for t in times]
    extra = fmt(mems[2] and mems[2] / (2 * B * H * L), ".1f", "x")
    return (
        f"| {L:,} | {bh} | {' | '.join(ms)} | {ratio(t_ref, t_fast)} | {ratio(t_pre, t_fast)} | "
        f"{pct(t_pre)} | {pct(t_fast)} | {extra} |"
    )


MODES_HEAD = (
    "| L | B*H | torch ms | precise ms | fast ms | fast vs torch | fast vs precise | precise % floor | "
    "fast % floor | fast peak extra |\n|---|---|---|---|---|---|---|---|---|---|"
)


# --- 2. hyena_mix ----------------------------------------------------------------------------------------------


def mix_inputs(B: int, L: int, gen, requires_grad: bool, dtype: torch.dtype = torch.float32):
    projected = torch.randn(B, L, 3 * H, device=DEVICE, generator=gen).to(dtype).requires_grad_(requires_grad)
    weight = torch.randn(3 * H, 1, 3, device=DEVICE, generator=gen).requires_grad_(requires_grad)
    bias = torch.randn(3 * H, device=DEVICE, generator=gen).requires_grad_(requires_grad)
    k = (torch.randn(H, L, device=DEVICE, generator=gen) * 0.01).requires_grad_(requires_grad)
    D = torch.randn(H, device=DEVICE, generator=gen).requires_grad_(requires_grad)
    return projected, weight, bias, k, D


def fwd_bwd(fn, args):
    out = fn(*args)
    return torch.autograd.grad(out, args, torch.ones_like(out))


def bench_mix(fused, L: int, bh: int, bw: float, backward: bool, dtype: torch.dtype = torch.float32) -> str:
    """bf16 activations: the reference runs under bf16 autocast (as in `--precision bf16`), weights stay fp32."""
    B, size = bh // H, torch.finfo(dtype).bits // 8
    gen = torch.Generator(device=DEVICE).manual_seed(L)
    inputs = rotating(lambda _: mix_inputs(B, L, gen, backward, dtype), size * 3 * B * H * L + 4 * H * L)
    floor_bytes = size * 4 * B * H * L + 4 * H * L  # read projected (3H) + k, write out (H)
    if backward:  # + backward: read projected (3H), grad out (H), k; write grad projected (3H), grad k
        floor_bytes = size * 11 * B * H * L + 4 * 3 * H * L
    cells = []
    for fn in (hyena_mix_ref, fused):

        def call(fn=fn):
            with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                return fwd_bwd(fn, inputs()) if backward else fn(*inputs())

        with torch.set_grad_enabled(backward):
            cells.append((safe(lambda call=call: cuda_time(call)), safe(lambda call=call: peak_extra_bytes(call))))
    (t_ref, m_ref), (t_fus, m_fus) = cells
    return row_fmt(L, bh, t_ref, t_fus, floor_bytes, bw, m_ref, m_fus, size * 3 * B * H * L)


# --- 2b. where the fused forward spends its time ----------------------------------------------------------------


def bench_breakdown(fc, L: int, bh: int, bw: float) -> None:
    """Each stage of the fused forward timed alone, with its own bytes (read + write) and % of copy bandwidth."""
    B, n = bh // H, fc.fft_size(L)
    gen = torch.Generator(device=DEVICE).manual_seed(L)
    projected, weight, bias, k, D = mix_inputs(B, L, gen, False)
    weight = weight.reshape(3 * H, 3)
    k_f = fc._filter_spectrum(k, n)
    u_pad = fc._mix_pre(projected, weight, bias, n)
    spec = fc._spectrum(u_pad)
    y = fc._inverse(spec, n)
    act, buf = 4 * B * H * L, 4 * B * H * n  # bytes of one (B, H, L) fp32 tensor and of one (B, H, n) buffer
    stages = [
        ("filter spectrum (pad kernel + rfft of k)", lambda: fc._filter_spectrum(k, n), 4 * H * L + 4 * H * n),
        ("pre kernel (short conv, x1*v, pad)", lambda: fc._mix_pre(projected, weight, bias, n), 2 * act + buf),
        ("rfft (cuFFT)", lambda: fc._spectrum(u_pad), 2 * buf),
        ("spectrum *= filter spectrum", lambda: spec.mul_(k_f), 2 * buf + 4 * H * n),
        ("irfft (cuFFT)", lambda: fc._inverse(spec, n), 2 * buf),
        ("post kernel (short conv, D term, gate)", lambda: fc._mix_post(projected, weight, bias, y, D), 5 * act),
        ("whole fused forward", lambda: fc.hyena_mix(projected, weight.reshape(3 * H, 1, 3), bias, k, D), 4 * act),
    ]
    print(f"#### B*H = {bh}, L = {L:,} (n = {n:,}), fp32\n")
    print("| stage | ms | GB moved | GB/s | % copy bandwidth |\n|---|---|---|---|---|")
    for name, fn, nbytes in stages:
        t = cuda_time(fn)
        print(
            f"| {name} | {t * 1e3:.3f} | {nbytes / 1e9:.2f} | {nbytes / t / 1e9:.0f} | {100 * nbytes / bw / t:.1f}% |"
        )
    print()


def warm_up_gpu(seconds: float = 1.5) -> None:
    """Keep the GPU busy so that its clocks have ramped up before the first measurement."""
    a = torch.randn(4096, 4096, device=DEVICE)
    torch.cuda.synchronize()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            a = (a @ a).tanh_()
        torch.cuda.synchronize()


# --- 3. end to end ---------------------------------------------------------------------------------------------


def embed_rate(model, ids, precision: str) -> float:
    """bp/s of forward (no grad) + mean pooling, as `genomelm embed` runs it."""

    @torch.no_grad()
    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model.hidden_states(ids).float().mean(dim=1)

    return ids.numel() / cuda_time(step, warmup=2, min_repeats=5, budget_s=1.0)


def train_rate(model, ids) -> float:
    """tokens/s of one pretraining step: forward, next-token loss, backward, AdamW (bf16 autocast)."""
    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.1)

    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return ids.numel() / cuda_time(step, warmup=2, min_repeats=4, budget_s=1.0)


def bench_end_to_end() -> None:
    print("\n### End to end (random weights)\n")
    print(
        "| preset | batch x length | task | precision | torch | cuda precise | cuda default | default vs torch | "
        "official H100 (embed) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, batch, length in E2E_EMBED:
        bench_embed(name, batch, length)
    for name, batch, length in E2E_TRAIN:
        rates = []
        for backend, mode in BACKEND_MODES:
            torch.manual_seed(0)
            model = HyenaDNA(preset(name)).to(DEVICE).train()
            ids = torch.randint(7, 11, (batch, length), device=DEVICE)
            with conv_mode(mode):
                rates.append(per_backend(model, backend, lambda model=model, ids=ids: train_rate(model, ids)))
            del model
        print(e2e_row(name, batch, length, "pretrain Mtok/s", "bf16", rates, "-"), flush=True)


def bench_embed(name: str, batch: int, length: int) -> None:
    model = HyenaDNA(preset(name)).to(DEVICE).eval()
    ids = torch.randint(7, 11, (batch, length), device=DEVICE)
    for i, precision in enumerate(("fp32", "bf16")):
        rates = []
        for backend, mode in BACKEND_MODES:
            with conv_mode(mode):
                rates.append(per_backend(model, backend, lambda p=precision: embed_rate(model, ids, p)))
        official = OFFICIAL_H100_EMBED[name][i]
        print(e2e_row(name, batch, length, "embed Mbp/s", precision, rates, f"{official:.2f}"), flush=True)


def per_backend(model, backend: str, measure):
    model.set_conv_backend(backend)
    gc.collect()
    torch.cuda.empty_cache()
    return safe(measure)


BACKEND_MODES = (("torch", "auto"), ("cuda", "precise"), ("cuda", "auto"))


def e2e_row(name, batch, length, task, precision, rates, official) -> str:
    ref, precise, default = rates
    speedup = fmt(default / ref, ".2f", "x") if ref and default else "-"
    return (
        f"| {name} | {batch} x {length:,} | {task} | {precision} | {fmt(ref and ref / 1e6)} | "
        f"{fmt(precise and precise / 1e6)} | {fmt(default and default / 1e6)} | {speedup} | {official} |"
    )


# --- main ------------------------------------------------------------------------------------------------------


def header() -> str:
    import triton

    name = torch.cuda.get_device_name()
    return (
        f"# fftconv benchmark — device: {name}; date: {datetime.date.today()}; torch {torch.__version__}; "
        f"triton {triton.__version__}; CUDA {torch.version.cuda}"
    )


TABLE_HEAD = (
    "| L | B*H | torch ms | cuda ms | speedup | cuda GB/s | torch % floor | cuda % floor | torch peak extra | "
    "cuda peak extra |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="lengths 4K, 64K, 1M only; no end to end")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end section")
    args = parser.parse_args()
    from genomelm.kernels import fftconv_cuda  # noqa: PLC0415  (needs triton and a GPU)

    torch.backends.cudnn.benchmark = False
    lengths = [4096, 65536, 1048576] if args.quick else LENGTHS
    print(header())
    warm_up_gpu()
    bw = copy_bandwidth()
    print(f"measured device-to-device copy bandwidth: {bw / 1e9:.0f} GB/s (bytes read + written); "
          "peak extra memory is a multiple of the input size (u, or projected, in its dtype)\n")  # fmt: skip
    print(f"### fftconv (B, H, L) bf16, H = 256: reference vs precise vs fast mode\n\n{MODES_HEAD}")
    for bh in BH:
        for L in lengths:
            print(bench_fftconv_modes(fftconv_cuda.fftconv, L, bh, bw), flush=True)
    print()
    sections = [
        ("fftconv (B, H, L) fp32, H = 256", lambda L, bh: bench_fftconv(fftconv_cuda.fftconv, L, bh, bw)),
        ("hyena_mix forward, fp32", lambda L, bh: bench_mix(fftconv_cuda.hyena_mix, L, bh, bw, False)),
        ("hyena_mix forward + backward, fp32", lambda L, bh: bench_mix(fftconv_cuda.hyena_mix, L, bh, bw, True)),
        (
            "hyena_mix forward, bf16 activations, precise mode (reference under bf16 autocast)",
            lambda L, bh: bench_mix(fftconv_cuda.hyena_mix, L, bh, bw, False, torch.bfloat16),
            "precise",
        ),
        (
            "hyena_mix forward, bf16 activations, fast mode (reference under bf16 autocast)",
            lambda L, bh: bench_mix(fftconv_cuda.hyena_mix, L, bh, bw, False, torch.bfloat16),
            "fast",
        ),
    ]
    for title, bench, *mode in sections:
        print(f"### {title}\n\n{TABLE_HEAD}")
        for bh in BH:
            for L in lengths:
                with conv_mode(mode[0] if mode else "precise"):
                    print(bench(L, bh), flush=True)
                gc.collect()
                torch.cuda.empty_cache()
        print()
    print("### Fused forward, stage by stage\n")
    for L, bh in BREAKDOWN:
        bench_breakdown(fftconv_cuda, L, bh, bw)
    if not (args.quick or args.no_e2e):
        bench_end_to_end()


if __name__ == "__main__":
    main()
