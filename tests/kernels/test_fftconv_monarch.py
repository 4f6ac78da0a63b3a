"""Fast mode of the CUDA backend (bf16 Monarch FFT convolution, genomelm.kernels.fftconv_monarch).

GPU tests: they skip without CUDA. Precision is judged as the issue asks: relative RMS error against a float64
convolution <= 1e-2, on synthetic decaying filters and on the filters of the shipped trained model (their implicit
filter evaluated up to 1M positions). Every call runs with poisoned buffers (NaN until written).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
fc = pytest.importorskip("genomelm.kernels.fftconv_cuda", reason="triton is not installed")
fm = pytest.importorskip("genomelm.kernels.fftconv_monarch", reason="triton is not installed")

from genomelm.formats.checkpoint import load_model  # noqa: E402
from genomelm.kernels import fft_size, hyena_mix_ref  # noqa: E402
from genomelm.model import HyenaDNA  # noqa: E402

pytestmark = pytest.mark.gpu
DEVICE = torch.device("cuda")
LENGTHS = [1, 2, 3, 127, 1024, 4097, 32768, 131072, 1000002]
RMS_TOLERANCE = 1e-2  # the bound for fast mode


@pytest.fixture(autouse=True)
def fast_and_poisoned(monkeypatch):
    monkeypatch.setattr(fc, "POISON_BUFFERS", True)
    monkeypatch.setattr(fm, "POISON_BUFFERS", True)
    monkeypatch.setenv(fc.MODE_ENV_VAR, "fast")


def _rms_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in float64; NaN if got has a NaN."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("nan")
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _fftconv64(u, k, D):
    L, n = u.shape[-1], fft_size(u.shape[-1])
    y = torch.fft.irfft(torch.fft.rfft(u.double(), n=n) * torch.fft.rfft(k.double(), n=n), n=n)[..., :L]
    return y + u.double() * D.double()[:, None]


def _decaying_filter(C: int, L: int, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    decay = torch.exp(-torch.linspace(0, 8, L)) + 0.05
    return (torch.randn(C, L, generator=g) * decay).to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("L", LENGTHS)
def test_fast_fftconv_matches_float64(L, B, dtype):
    C = 3 if L > 100_000 else 7  # odd channel counts
    g = torch.Generator(device="cpu").manual_seed(L + B)
    u = torch.randn(B, L, C, generator=g).to(dtype).to(DEVICE).transpose(1, 2)  # (B, C, L), non-contiguous
    k = _decaying_filter(C, L, seed=L)
    D = torch.randn(C, generator=g).to(DEVICE)
    out = fc.fftconv(u, k, D)
    assert out.shape == (B, C, L) and out.dtype == dtype
    assert _rms_err(out, _fftconv64(u, k, D)) <= RMS_TOLERANCE


def _trained_filters(seq_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(k, D) of every layer of the shipped model, its trained implicit filter evaluated at seq_len positions
    (a copy of the model with a longer l_max: the filter MLP is the same, only the positions differ)."""
    trained = load_model()
    model = HyenaDNA(trained.config.replace(l_max=max(seq_len, trained.config.l_max)))
    model.load_state_dict(trained.state_dict())
    model.to(DEVICE).eval()
    with torch.no_grad():
        return [(layer.mixer.filter_fn.filter(seq_len).float(), layer.mixer.filter_fn.bias.float())
                for layer in model.backbone.layers]  # fmt: skip


@pytest.mark.parametrize("L", [1024, 32768, 1000002])
def test_fast_fftconv_on_trained_filters(L):
    channels = slice(0, 16) if L > 100_000 else slice(None)  # float64 reference memory at 1M
    for layer, (k, D) in enumerate(_trained_filters(L)):
        k, D = k[channels], D[channels]
        u = torch.randn(2, k.shape[0], L, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(layer))
        u = u.bfloat16()
        err = _rms_err(fc.fftconv(u, k, D), _fftconv64(u, k, D))
        assert err <= RMS_TOLERANCE, f"layer {layer}: relative RMS error {err:.2e}"


def _mix_inputs(B, L, C, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    projected = torch.randn(B, L, 3 * C + 5, generator=g)[..., : 3 * C]  # non-contiguous
    weight = torch.randn(3 * C, 1, 3, generator=g) * 0.5
    bias = torch.randn(3 * C, generator=g) * 0.1
    D = torch.randn(C, generator=g)
    return [x.to(DEVICE) for x in (projected, weight, bias)] + [_decaying_filter(C, L, seed), D.to(DEVICE)]


def _mix_and_grads(projected, weight, bias, k, D, grad):
    leaves = [projected.detach().bfloat16().requires_grad_()] + [
        x.detach().requires_grad_() for x in (weight, bias, k, D)
    ]
    out = fc.hyena_mix(*leaves)
    return out, torch.autograd.grad(out, leaves, grad.to(out.dtype))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("L", [1, 127, 1024, 4097, 32768, 131072])
def test_fast_hyena_mix_forward_and_backward(L, B, monkeypatch):
    C = 9
    projected, weight, bias, k, D = _mix_inputs(B, L, C, seed=L)
    want = hyena_mix_ref(projected.bfloat16().double(), weight.double(), bias.double(), k.double(), D.double())
    grad = torch.randn_like(want)
    out, grads = _mix_and_grads(projected, weight, bias, k, D, grad)
    assert out.shape == (B, L, C) and out.dtype == torch.bfloat16
    assert _rms_err(out, want) <= RMS_TOLERANCE
    monkeypatch.setenv(fc.MODE_ENV_VAR, "precise")  # fast mode's backward is precise mode's: same gradients
    _, precise_grads = _mix_and_grads(projected, weight, bias, k, D, grad)
    for name, got, want_grad in zip(("projected", "weight", "bias", "k", "D"), grads, precise_grads):
        # equal up to the order of the fp32 atomic additions of the weight, bias and D reductions
        assert got.dtype == want_grad.dtype, name
        assert (got - want_grad).abs().max() <= 1e-5 * want_grad.abs().max(), name


def test_mode_selection(monkeypatch):
    monkeypatch.delenv(fc.MODE_ENV_VAR)
    assert fc.use_fast_mode(torch.bfloat16, 32768)
    assert not fc.use_fast_mode(torch.float32, 32768)  # fp32 activations stay precise
    assert not fc.use_fast_mode(torch.bfloat16, fc.FAST_AUTO_MAX_LEN + 1)  # precise is faster there
    assert not fc.use_fast_mode(torch.bfloat16, fc.FAST_AUTO_MIN_LEN - 1)  # not faster there (yet)
    assert not fc.use_fast_mode(torch.bfloat16, 32768, needs_grad=True)  # training: precise
    monkeypatch.setenv(fc.MODE_ENV_VAR, "precise")
    assert not fc.use_fast_mode(torch.bfloat16, 1024)
    monkeypatch.setenv(fc.MODE_ENV_VAR, "Fast")
    assert fc.use_fast_mode(torch.float32, 10**6)
    monkeypatch.setenv(fc.MODE_ENV_VAR, "quick")
    with pytest.raises(ValueError, match="GENOMELM_CONV_MODE"):
        fc.use_fast_mode(torch.bfloat16, 1024)


def test_plans_cover_every_length():
    for L in [1, 300, 4096, 4097, 131072, 1000002]:
        p = fm.plan(L)
        assert p.n == p.outer * p.rows * p.cols >= 2 * L
        assert p.rows // 2 >= 16 and p.cols >= 16 and (p.outer == 1 or p.outer >= 32)


def test_fast_filter_spectrum_cached_at_inference():
    fc.clear_spectrum_cache()
    u, k, D = (
        torch.randn(2, 5, 3000, device=DEVICE).bfloat16(),
        _decaying_filter(5, 3000, 0),
        torch.randn(5, device=DEVICE),
    )
    first = fc.fftconv(u, k, D)
    assert len(fc._spectrum_cache) == 1
    k.mul_(2)  # an in-place change invalidates the cached spectrum
    second = fc.fftconv(u, k, D)
    assert _rms_err(second - D[:, None] * u.float(), 2 * (first - D[:, None] * u.float())) <= 1e-2
    fc.clear_spectrum_cache()


def test_whole_model_bf16_logits_fast_vs_reference():
    from tests.conftest import tiny_model

    model = tiny_model(seed=1, d_model=24, l_max=4100).to(DEVICE)
    ids = torch.randint(7, 12, (2, 4097), device=DEVICE)
    logits = {}
    for backend in ("torch", "cuda"):
        model.set_conv_backend(backend)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            logits[backend] = model(ids).float()
    assert _rms_err(logits["cuda"], logits["torch"]) <= 2e-2
    assert F.cross_entropy(logits["cuda"][0], ids[0]).isfinite()
