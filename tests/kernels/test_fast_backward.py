"""Fast mode's backward pass (genomelm.kernels.fftconv_cuda with fftconv_monarch): the input's gradient by the
Monarch kernels with the conjugated filter spectrum, the filter's by cuFFT.

GPU tests: they skip without CUDA. With TRITON_INTERPRET=1 and triton installed they also run on the CPU through
Triton's interpreter, whose bf16 rounding truncates (errors about 2.5x a GPU's: see fftconv_monarch), so the
bound there is looser. Gradients are judged as the forward pass is: relative RMS error against float64, and
against precise mode's gradients. Every call runs with poisoned buffers (NaN until written).
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels._device import INTERPRET, kernel_test_device
from tests.kernels.test_fftconv_cuda import _fftconv64, _hyena_mix64, _mix_inputs, _rms_err

DEVICE = kernel_test_device()
fc = pytest.importorskip("genomelm.kernels.fftconv_cuda", reason="triton is not installed")
fm = pytest.importorskip("genomelm.kernels.fftconv_monarch", reason="triton is not installed")

pytestmark = pytest.mark.gpu
RMS_TOLERANCE = 2.5e-2 if INTERPRET else 1e-2  # fast mode's bound (the 1e-2 on a GPU)
# 4097 needs the three-pass kernels (n = 16384 > 8192); the longer ones only on a GPU (the interpreter is slow)
LENGTHS = [1, 127, 1024, 4097] + ([] if INTERPRET else [32768, 131072])
NAMES = ("projected", "weight", "bias", "k", "D")


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    monkeypatch.setattr(fc, "POISON_BUFFERS", True)
    monkeypatch.setattr(fm, "POISON_BUFFERS", True)


def _mix_grads(mode: str, monkeypatch, wide, weight, bias, k, D, C, grad, dtype):
    """hyena_mix in ``mode`` on (dtype activations, fp32 parameters): output and the 5 gradients."""
    monkeypatch.setenv(fc.MODE_ENV_VAR, mode)
    leaves = [wide.detach().to(dtype).requires_grad_()] + [
        x.detach().float().requires_grad_() for x in (weight, bias, k, D)
    ]
    out = fc.hyena_mix(leaves[0][..., : 3 * C], *leaves[1:])
    grads = torch.autograd.grad(out, leaves, grad.to(out.dtype))
    return out, (grads[0][..., : 3 * C], *grads[1:])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("L", LENGTHS)
def test_hyena_mix_fast_gradients_match_float64(L, dtype, monkeypatch):
    B, C = 2, 5
    wide, weight, bias, k, D = _mix_inputs(B, L, C, dtype, seed=L)
    leaves64 = [x.detach().requires_grad_() for x in (wide, weight, bias, k, D)]
    want = _hyena_mix64(leaves64[0][..., : 3 * C], *leaves64[1:])
    grad = torch.randn_like(want)
    exact = torch.autograd.grad(want, leaves64, grad)
    exact = (exact[0][..., : 3 * C], *exact[1:])
    _, fast = _mix_grads("fast", monkeypatch, wide, weight, bias, k, D, C, grad, dtype)
    _, precise = _mix_grads("precise", monkeypatch, wide, weight, bias, k, D, C, grad, dtype)
    for name, got, ref, truth in zip(NAMES, fast, precise, exact):
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        assert torch.isfinite(got).all(), name
        # bf16 activations: precise mode's own rounding of the gradient dominates; fast mode adds at most its bound
        bound = RMS_TOLERANCE + _rms_err(ref, truth)
        assert _rms_err(got, truth) <= bound, f"grad {name}: {_rms_err(got, truth):.2e} > {bound:.2e}"


def test_hyena_mix_fast_backward_with_a_frozen_filter(monkeypatch):
    """No gradient of k wanted: the backward skips the cross-spectrum and still gives the others."""
    B, L, C = 2, 300, 4
    wide, weight, bias, k, D = _mix_inputs(B, L, C, torch.bfloat16, seed=3)
    monkeypatch.setenv(fc.MODE_ENV_VAR, "fast")
    projected = wide.detach().to(torch.bfloat16)[..., : 3 * C].requires_grad_()
    out = fc.hyena_mix(projected, weight.float(), bias.float(), k.float(), D.float())
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out, [projected], torch.ones_like(out))
    want64 = [x.detach().requires_grad_() for x in (wide[..., : 3 * C], weight, bias, k, D)]
    (exact,) = torch.autograd.grad(
        _hyena_mix64(*want64), [want64[0]], torch.ones(B, L, C, dtype=torch.float64, device=DEVICE)
    )
    assert _rms_err(grad, exact) <= RMS_TOLERANCE + 1e-2  # + bf16 rounding of the activations
    u = torch.randn(B, C, L, device=DEVICE, requires_grad=True)
    (grad_u,) = torch.autograd.grad(fc.fftconv(u, k.float(), D.float()), [u], torch.ones(B, C, L, device=DEVICE))
    u64 = u.detach().double().requires_grad_()
    (exact_u,) = torch.autograd.grad(
        _fftconv64(u64, k, D), [u64], torch.ones(B, C, L, dtype=torch.float64, device=DEVICE)
    )
    assert _rms_err(grad_u, exact_u) <= RMS_TOLERANCE


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("L", LENGTHS)
def test_fftconv_fast_gradients_match_float64(L, dtype, monkeypatch):
    B, C = 2, 3
    g = torch.Generator(device="cpu").manual_seed(L)
    u = torch.randn(B, L, C, generator=g).to(dtype).to(DEVICE).transpose(1, 2)  # (B, C, L), non-contiguous
    decay = torch.exp(-torch.linspace(0, 8, L)) + 0.05
    k = (torch.randn(C, L, generator=g) * decay).to(DEVICE)
    D = torch.randn(C, generator=g).to(DEVICE)
    leaves64 = [x.double().requires_grad_() for x in (u, k, D)]
    want = _fftconv64(*leaves64)
    grad = torch.randn_like(want)
    exact = torch.autograd.grad(want, leaves64, grad)
    monkeypatch.setenv(fc.MODE_ENV_VAR, "fast")
    leaves = [u.detach().requires_grad_(), k.clone().requires_grad_(), D.clone().requires_grad_()]
    got = torch.autograd.grad(fc.fftconv(*leaves), leaves, grad.to(dtype))
    assert got[0].dtype == dtype and got[1].dtype == got[2].dtype == torch.float32
    rounding = 1e-2 if dtype == torch.bfloat16 else 0.0  # the gradient of u is returned in u's dtype
    for name, g_got, g_exact in zip(("u", "k", "D"), got, exact):
        assert _rms_err(g_got, g_exact) <= RMS_TOLERANCE + rounding, f"grad {name}: {_rms_err(g_got, g_exact):.2e}"


def test_conjugated_spectrum_is_the_correlation():
    """monarch_conv with conjugate(spectrum) is sum_{s >= t} k[s - t] x[s], the adjoint of the convolution."""
    B, C, L = 2, 3, 700
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(B, C, L, generator=g).to(DEVICE)
    k = (torch.randn(C, L, generator=g) * torch.exp(-torch.linspace(0, 6, L))).to(DEVICE)
    p = fm.plan(L)
    got = fm.monarch_conv(x, fm.conjugate(fm.filter_spectrum(k, p)), p, None, torch.float32)
    x64, k64 = x.double(), k.double()
    want = torch.stack([(x64[..., t:] * k64[:, : L - t]).sum(-1) for t in range(L)], dim=-1)
    assert _rms_err(got, want) <= RMS_TOLERANCE
