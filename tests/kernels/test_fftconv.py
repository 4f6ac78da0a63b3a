import pytest
import torch

from genomelm.kernels import fftconv, hyena_mix, resolve_backend
from genomelm.kernels.fftconv_ref import fft_size, fftconv_ref


def direct_causal_conv(u, k, D):
    """y[b,c,t] = sum_{s<=t} k[c,s] u[b,c,t-s] + D[c] u[b,c,t], in float64, by definition."""
    B, C, L = u.shape
    y = torch.zeros_like(u)
    for t in range(L):
        y[..., t] = (k[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1)
    return y + D[:, None] * u


@pytest.mark.parametrize("L", [1, 2, 3, 17, 64, 100])
def test_fftconv_matches_direct_convolution_float64(L):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(2, 5, L, generator=g, dtype=torch.float64)
    k = torch.randn(5, L, generator=g, dtype=torch.float64)
    D = torch.randn(5, generator=g, dtype=torch.float64)
    expected = direct_causal_conv(u, k, D)
    got = fftconv_ref(u.float(), k.float(), D.float()).double()
    assert torch.allclose(got, expected, atol=1e-4 * max(1.0, expected.abs().max().item()))


def test_fft_size_is_power_of_two_at_least_2L():
    for L in [1, 2, 3, 1000, 1026, 32770]:
        n = fft_size(L)
        assert n >= 2 * L - 1 and n & (n - 1) == 0


def test_bf16_input_keeps_fp32_fft_and_returns_input_dtype():
    u = torch.randn(1, 4, 50)
    k, D = torch.randn(4, 50), torch.randn(4)
    y16 = fftconv_ref(u.bfloat16(), k, D)
    assert y16.dtype == torch.bfloat16
    assert torch.allclose(y16.float(), fftconv_ref(u.bfloat16().float(), k, D), atol=1e-1, rtol=1e-2)


def test_dispatcher_torch_backend_and_cpu_fallback():
    u, k, D = torch.randn(1, 3, 10), torch.randn(3, 10), torch.randn(3)
    assert torch.equal(fftconv(u, k, D, backend="torch"), fftconv_ref(u, k, D))
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="--conv-backend torch"):
        resolve_backend("cuda", torch.device("cpu"))
    with pytest.raises(ValueError):
        resolve_backend("nope", torch.device("cpu"))


def test_env_override(monkeypatch):
    monkeypatch.setenv("GENOMELM_CONV_BACKEND", "torch")
    assert resolve_backend(None, torch.device("cpu")) == "torch"
    monkeypatch.setenv("GENOMELM_CONV_BACKEND", "bogus")
    with pytest.raises(ValueError, match="GENOMELM_CONV_BACKEND"):
        resolve_backend(None, torch.device("cpu"))


def test_hyena_mix_matches_unfused_definition():
    B, L, C = 2, 33, 4
    projected = torch.randn(B, L, 3 * C)
    w, b = torch.randn(3 * C, 1, 3), torch.randn(3 * C)
    k, D = torch.randn(C, L), torch.randn(C)
    u = torch.nn.functional.conv1d(projected.transpose(1, 2), w, b, padding=2, groups=3 * C)[..., :L]
    x0, x1, v = u.split(C, dim=1)
    expected = (x0 * direct_causal_conv((x1 * v).double(), k.double(), D.double()).float()).transpose(1, 2)
    got = hyena_mix(projected, w, b, k, D, backend="torch")
    assert got.shape == (B, L, C)
    assert torch.allclose(got, expected, atol=1e-4)
