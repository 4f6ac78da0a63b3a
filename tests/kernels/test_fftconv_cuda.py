"""Equivalence of the fused CUDA backend (genomelm.kernels.fftconv_cuda) with the reference, values and gradients.

GPU tests: they skip without CUDA. With TRITON_INTERPRET=1 and triton installed they also run on the CPU through
Triton's interpreter (lengths above 1,024 skipped there), which lets a developer without a GPU check the kernels.
Every check runs with POISON_BUFFERS on (internal buffers start as NaN) and compares with a float64 evaluation
of the same formula, and with the reference backend.
"""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from genomelm import kernels
from genomelm.kernels import fft_size, fftconv_ref, hyena_mix_ref, resolve_backend
from tests.kernels._device import INTERPRET, kernel_test_device

DEVICE = kernel_test_device()
fc = pytest.importorskip("genomelm.kernels.fftconv_cuda", reason="triton is not installed")

pytestmark = pytest.mark.gpu

LENGTHS = [1, 2, 3, 127, 1024, 4097, 32768, 131072, 1000002]


def _lengths(limit: int = 1024) -> list[int]:
    return [L for L in LENGTHS if not INTERPRET or L <= limit]


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    """Every internal buffer starts as NaN: an unwritten element (padding included) turns the result NaN.

    Precise mode throughout this file (fast mode, for bf16, has its own tests in test_fftconv_monarch.py)."""
    monkeypatch.setattr(fc, "POISON_BUFFERS", True)
    monkeypatch.setenv(fc.MODE_ENV_VAR, "precise")


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs error relative to max |want| (NaN if anything is NaN)."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("nan")
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def _fftconv64(u, k, D):
    """fftconv_ref's formula in float64."""
    L, n = u.shape[-1], fft_size(u.shape[-1])
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :L]
    return y + u * D[:, None]


def _hyena_mix64(projected, weight, bias, k, D):
    """hyena_mix_ref's formula in float64: (B, L, 3C) -> (B, L, C)."""
    L, C = projected.shape[1], k.shape[0]
    u = F.conv1d(projected.transpose(1, 2), weight, bias, padding=weight.shape[-1] - 1, groups=3 * C)[..., :L]
    x0, x1, v = u.split(C, dim=1)
    return (x0 * _fftconv64(x1 * v, k, D)).transpose(1, 2)


def _mix_inputs(B, L, C, dtype, seed=0):
    """Non-contiguous projected (a slice of a wider tensor) and parameters, float64 on DEVICE."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    wide = torch.randn(B, L, 3 * C + 7, generator=g, dtype=torch.float64).to(dtype).double()  # rounded to dtype
    weight = torch.randn(3 * C, 1, 3, generator=g, dtype=torch.float64) * 0.5
    bias = torch.randn(3 * C, generator=g, dtype=torch.float64) * 0.1
    decay = torch.exp(-torch.linspace(0, 8, L, dtype=torch.float64))  # a long filter that decays, as trained ones
    k = torch.randn(C, L, generator=g, dtype=torch.float64) * (decay + 0.05)
    D = torch.randn(C, generator=g, dtype=torch.float64)
    return [x.to(DEVICE) for x in (wide, weight, bias, k, D)]


def _rms_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Relative RMS error ||got - want|| / ||want||: a statistic, for comparing two roundings."""
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


def _run_mix(fn, wide, weight, bias, k, D, C, dtype, grad, autocast=False):
    """fn on (dtype activations, fp32 params); returns output and grads of (projected, weight, bias, k, D)."""
    params = [x.detach().float().requires_grad_() for x in (weight, bias, k, D)]
    wide_t = wide.detach().to(dtype).requires_grad_()
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
        out = fn(wide_t[..., : 3 * C], *params)
    grads = _grads(out, [wide_t, *params], grad.to(out.dtype))
    return out, (grads[0][..., : 3 * C], *grads[1:])


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("L", _lengths())
def test_hyena_mix_fp32_forward_backward(L, B):
    C = 5 if L > 100_000 else 33  # odd channel counts; few channels at the longest lengths (memory, time)
    wide, weight, bias, k, D = _mix_inputs(B, L, C, torch.float32, seed=L + B)
    leaves = [x.requires_grad_() for x in (wide, weight, bias, k, D)]
    want = _hyena_mix64(wide[..., : 3 * C], weight, bias, k, D)
    grad = torch.randn_like(want)
    want_grads = _grads(want, leaves, grad)
    want_grads = (want_grads[0][..., : 3 * C], *want_grads[1:])
    out, grads = _run_mix(fc.hyena_mix, wide, weight, bias, k, D, C, torch.float32, grad.float())
    ref, ref_grads = _run_mix(hyena_mix_ref, wide, weight, bias, k, D, C, torch.float32, grad.float())
    assert out.shape == (B, L, C) and out.dtype == torch.float32
    assert _err(out, want) <= 1e-5, f"forward error {_err(out, want):.2e} vs float64"
    assert _err(out, ref) <= 1e-5, f"forward error {_err(out, ref):.2e} vs the reference backend"
    for name, got, exact, r in zip(("projected", "weight", "bias", "k", "D"), grads, want_grads, ref_grads):
        assert got.shape == exact.shape and got.dtype == r.dtype, name
        # fp32 sums over B*L terms: tolerance relative to the largest gradient, and never worse than the reference
        assert _err(got, exact) <= max(1e-4, 2 * _err(r, exact)), f"grad {name}: {_err(got, exact):.2e}"


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("L", [L for L in _lengths() if L <= 131072])
def test_hyena_mix_bf16_at_least_as_precise_as_reference_autocast(L, B):
    """bf16 activations (as under autocast): the fused backend rounds once, the reference at every step."""
    C = 9
    wide, weight, bias, k, D = _mix_inputs(B, L, C, torch.bfloat16, seed=L)
    want = _hyena_mix64(wide[..., : 3 * C], weight, bias, k, D)
    grad = torch.randn_like(want)
    out, grads = _run_mix(fc.hyena_mix, wide, weight, bias, k, D, C, torch.bfloat16, grad)
    ref, ref_grads = _run_mix(hyena_mix_ref, wide, weight, bias, k, D, C, torch.bfloat16, grad, autocast=True)
    assert out.dtype == torch.bfloat16 and grads[0].dtype == torch.bfloat16
    assert _err(out, want) <= 1e-2
    if out.numel() >= 1000:  # enough elements for the RMS of rounding errors to be a stable statistic
        assert _rms_err(out, want) <= _rms_err(ref, want)
    for got, r in zip(grads, ref_grads):
        assert torch.isfinite(got).all()
        assert _err(got, r) <= 5e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", _lengths())
def test_fftconv_forward_backward(L, dtype):
    B, C = 3, 7
    g = torch.Generator(device="cpu").manual_seed(L)
    u = torch.randn(B, L, C, generator=g).to(dtype).to(DEVICE).transpose(1, 2)  # (B, C, L), non-contiguous
    k = torch.randn(C, L, generator=g).to(DEVICE)
    D = torch.randn(C, generator=g).to(DEVICE)
    leaves64 = [x.double().requires_grad_() for x in (u, k, D)]
    want = _fftconv64(*leaves64)
    grad = torch.randn_like(want)
    want_grads = _grads(want, leaves64, grad)
    leaves = [u.detach().requires_grad_(), k.requires_grad_(), D.requires_grad_()]
    out = fc.fftconv(*leaves)
    grads = _grads(out, leaves, grad.to(dtype))
    tol, grad_tol = (1e-5, 1e-4) if dtype == torch.float32 else (1e-2, 2e-2)
    assert out.shape == (B, C, L) and out.dtype == dtype
    assert _err(out, want) <= tol
    assert _err(out, fftconv_ref(u, k, D)) <= tol
    for got, exact in zip(grads, want_grads):
        assert _err(got, exact) <= grad_tol


@pytest.mark.parametrize("B, C, F", [(1, 1, 1), (3, 5, 1025), (256, 4, 513), (2, 3, 2500)])
def test_cross_spectrum_sums_over_the_batch(B, C, F):
    """The filter gradient's cross-spectrum sum_b g[b] conj(u[b]) (one kernel) against complex128, every element
    written (poisoned output), a non-contiguous input accepted; a dtype or shape mismatch refused."""
    g = torch.randn(B, C, F, dtype=torch.complex128, device=DEVICE)
    u = torch.randn(B, F, C, dtype=torch.complex128, device=DEVICE).transpose(1, 2)  # non-contiguous
    want = (g * u.conj()).sum(0)
    got = fc._cross_spectrum(g.to(torch.complex64), u.to(torch.complex64))
    assert got.shape == (C, F) and got.dtype == torch.complex64
    assert _err(torch.view_as_real(got), torch.view_as_real(want)) <= 1e-5
    for other in (u, torch.zeros(B + 1, C, F, dtype=torch.complex64, device=DEVICE)):  # complex128; B + 1 rows
        with pytest.raises(ValueError, match="complex64"):
            fc._cross_spectrum(g.to(torch.complex64), other)


def test_frozen_filter_and_no_bias():
    """needs_input_grad respected (no k gradient when k is frozen); short_bias None means no bias."""
    B, L, C = 2, 300, 4
    projected = torch.randn(B, L, 3 * C, device=DEVICE, requires_grad=True)
    weight = torch.randn(3 * C, 1, 3, device=DEVICE, requires_grad=True)
    k, D = torch.randn(C, L, device=DEVICE), torch.randn(C, device=DEVICE, requires_grad=True)
    out = fc.hyena_mix(projected, weight, None, k, D)
    want = hyena_mix_ref(projected, weight, torch.zeros(3 * C, device=DEVICE), k, D)
    assert _err(out, want) <= 1e-5
    out.sum().backward()
    assert k.grad is None and projected.grad is not None and torch.isfinite(weight.grad).all()


def test_inference_mode_and_bad_shapes():
    projected = torch.randn(1, 10, 6, device=DEVICE)
    weight, bias = torch.randn(6, 1, 3, device=DEVICE), torch.randn(6, device=DEVICE)
    k, D = torch.randn(2, 10, device=DEVICE), torch.randn(2, device=DEVICE)
    with torch.inference_mode():
        out = fc.hyena_mix(projected, weight, bias, k, D)
    assert _err(out, hyena_mix_ref(projected, weight, bias, k, D)) <= 1e-5
    with pytest.raises(ValueError, match="3C"):
        fc.hyena_mix(projected[..., :5], weight, bias, k, D)
    with pytest.raises(ValueError, match="k must be"):
        fc.hyena_mix(projected, weight, bias, torch.randn(2, 11, device=DEVICE), D)


@pytest.mark.skipif(INTERPRET, reason="the dispatcher picks cuda only for CUDA tensors")
def test_dispatcher_auto_picks_cuda_on_gpu():
    assert resolve_backend("auto", DEVICE) == "cuda"
    assert resolve_backend("cuda", DEVICE) == "cuda"


@pytest.mark.parametrize("L", [257, 4097])
def test_whole_model_logits_and_grads_equal_between_backends(L, monkeypatch):
    if INTERPRET and L > 300:
        pytest.skip("slow under the interpreter")
    if DEVICE.type == "cpu":  # interpreter: let the dispatcher send CPU tensors to the Triton backend
        monkeypatch.setattr(kernels, "resolve_backend", lambda backend, device: backend)
    from tests.conftest import tiny_model

    model = tiny_model(seed=1, d_model=24, l_max=4100).to(DEVICE)  # 24: channel tiles only partly filled
    ids = torch.randint(7, 12, (2, L), device=DEVICE)
    results = {}
    for backend in ("torch", "cuda"):
        model.set_conv_backend(backend)
        model.zero_grad()
        logits = model(ids)
        F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        results[backend] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (ref_logits, ref_grads), (logits, grads) = results["torch"], results["cuda"]
    assert _err(logits, ref_logits) <= 1e-4
    for name, grad in grads.items():
        assert _err(grad, ref_grads[name]) <= 1e-3, name


@pytest.fixture
def spectrum_calls(monkeypatch):
    """An empty filter-spectrum cache and a list that records the n of every spectrum actually computed."""
    calls = []
    compute = fc._filter_spectrum

    def counting(k, n):
        calls.append(n)  # not k: the recorder must not keep filters alive
        return compute(k, n)

    monkeypatch.setattr(fc, "_filter_spectrum", counting)
    fc.clear_spectrum_cache()
    yield calls
    fc.clear_spectrum_cache()


def _conv_inputs(B=2, C=5, L=300, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    u, k, D = torch.randn(B, C, L, generator=g), torch.randn(C, L, generator=g), torch.randn(C, generator=g)
    return u.to(DEVICE), k.to(DEVICE), D.to(DEVICE)


def test_filter_spectrum_cached_without_grad_and_invalidated_in_place(spectrum_calls):
    """No autograd: the spectrum of the same k is computed once, equals the uncached one, and k.mul_ invalidates."""
    u, k, D = _conv_inputs()
    uncached = fc.fftconv(u, k.clone().requires_grad_(), D).detach()  # k needs a gradient: never cached
    assert len(spectrum_calls) == 1 and not fc._spectrum_cache
    with torch.no_grad():
        first = fc.fftconv(u, k, D)
        second = fc.fftconv(u, k, D)
    assert len(spectrum_calls) == 2 and len(fc._spectrum_cache) == 1  # second call: a hit
    assert torch.equal(first, uncached) and torch.equal(second, uncached)
    k.mul_(2)  # in place: same tensor, same address, new version
    with torch.no_grad():
        doubled = fc.fftconv(u, k, D)
    assert len(spectrum_calls) == 3
    assert torch.equal(doubled, fc.fftconv(u, k.clone().requires_grad_(), D).detach())
    assert _err(doubled, fftconv_ref(u, k, D)) <= 1e-5
    assert not torch.equal(doubled, first)


def test_filter_spectrum_cache_hyena_mix_and_frozen_filter(spectrum_calls):
    """hyena_mix uses the cache too, also with autograd on when k itself needs no gradient (frozen filter)."""
    B, L, C = 2, 200, 4
    projected = torch.randn(B, L, 3 * C, device=DEVICE, requires_grad=True)
    weight, bias = torch.randn(3 * C, 1, 3, device=DEVICE), torch.randn(3 * C, device=DEVICE)
    k, D = torch.randn(C, L, device=DEVICE), torch.randn(C, device=DEVICE)
    outs = [fc.hyena_mix(projected, weight, bias, k, D) for _ in range(2)]
    assert len(spectrum_calls) == 1  # k.requires_grad is False: cached although autograd records projected
    assert torch.equal(outs[0], outs[1])
    outs[1].sum().backward()  # the cached spectrum is saved for backward; backward must not alter it
    grad = projected.grad.clone()
    projected.grad = None
    fc.hyena_mix(projected, weight, bias, k, D).sum().backward()
    assert len(spectrum_calls) == 1 and torch.equal(projected.grad, grad)
    want = hyena_mix_ref(projected, weight, bias, k, D)
    assert _err(outs[0], want) <= 1e-5
    k.mul_(2)
    with torch.no_grad():
        out = fc.hyena_mix(projected, weight, bias, k, D)
    assert len(spectrum_calls) == 2
    assert _err(out, hyena_mix_ref(projected, weight, bias, k, D)) <= 1e-5


def test_filter_spectrum_cache_never_used_when_k_needs_grad_nor_for_inference_tensors(spectrum_calls):
    u, k, D = _conv_inputs()
    k.requires_grad_()
    for _ in range(2):
        fc.fftconv(u, k, D).sum().backward()
    assert len(spectrum_calls) == 2 and not fc._spectrum_cache
    with torch.inference_mode():  # inference tensors have no version counter: an in-place change is undetectable
        k_inf = k.detach().clone()
        for _ in range(2):
            fc.fftconv(u, k_inf, D)
    assert len(spectrum_calls) == 4 and not fc._spectrum_cache


def test_filter_spectrum_cache_is_bounded_and_releases_dead_filters(spectrum_calls):
    u, _, D = _conv_inputs()
    filters = [torch.randn(5, 300, device=DEVICE) for _ in range(fc._SPECTRUM_CACHE_SIZE + 3)]
    filters_n = len(filters) + 1
    with torch.no_grad():
        for k in filters:
            fc.fftconv(u, k, D)
        assert len(fc._spectrum_cache) == fc._SPECTRUM_CACHE_SIZE  # LRU: the oldest entries were evicted
        fc.fftconv(u, filters[-1], D)  # the newest is still cached
        assert len(spectrum_calls) == len(filters)
        fc.fftconv(u, filters[0], D)  # the oldest was evicted
        assert len(spectrum_calls) == len(filters) + 1
    del k, filters
    gc.collect()
    assert not fc._spectrum_cache  # every filter is dead: no spectrum kept
    # A new tensor at a recycled address (same shape, version 0) must not hit a stale entry.
    with torch.no_grad():
        k1 = torch.randn(5, 300, device=DEVICE)
        out1 = fc.fftconv(u, k1, D)
        ptr = k1.data_ptr()
        del k1
        k2 = torch.randn(5, 300, device=DEVICE)
        out2 = fc.fftconv(u, k2, D)
    assert len(spectrum_calls) == filters_n + 2, f"recycled address: {k2.data_ptr() == ptr}"
    assert _err(out2, fftconv_ref(u, k2, D)) <= 1e-5 and not torch.equal(out1, out2)
