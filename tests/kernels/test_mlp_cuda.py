"""Equivalence of the MLP's fused first projection (genomelm.kernels.mlp_cuda: bias + GELU(tanh) in the cuBLASLt
epilogue) with its reference, values and gradients, per dtype.

GPU tests: they skip without CUDA (torch's CPU op for the epilogue computes the erf GELU, so there is no CPU run of
the fused path). The output buffer starts as NaN (POISON_BUFFERS); values and gradients are compared with a
float64 evaluation of the same formula and with the reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genomelm import kernels
from genomelm.kernels import linear_gelu_ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
mlp = pytest.importorskip("genomelm.kernels.mlp_cuda")

DEVICE = torch.device("cuda")
# (rows, K, N): one row, a partial tile with widths that are not powers of two, the model's MLP, a 32k window batch
SHAPES = [(1, 16, 64), (37, 48, 200), (1000, 256, 1024), (8 * 32768, 256, 1024)]


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    monkeypatch.setattr(mlp, "POISON_BUFFERS", True)


def _inputs(rows, k, n, x_dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g, dtype=torch.float64).to(x_dtype)
    weight = torch.randn(n, k, generator=g, dtype=torch.float64).float() / k**0.5  # pre-activations of O(1)
    bias = torch.randn(n, generator=g, dtype=torch.float64).float()
    return [t.to(DEVICE).requires_grad_() for t in (x, weight, bias)]


def _err(got, want) -> float:
    """Max abs error relative to max |want| (NaN if anything is NaN)."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("nan")
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def _run(fn, inputs, autocast: bool):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        return fn(*inputs)


@pytest.mark.parametrize("rows,k,n", SHAPES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_linear_gelu_forward_backward(rows, k, n, precision):
    """fp32: no autocast; bf16: bf16 autocast with fp32 weights (what --precision bf16 runs)."""
    bf16 = precision == "bf16"
    inputs = _inputs(rows, k, n, torch.bfloat16 if bf16 else torch.float32, seed=rows + k)
    out = _run(mlp.linear_gelu, inputs, bf16)
    ref = _run(linear_gelu_ref, inputs, bf16)
    want = F.gelu(F.linear(*[t.double() for t in inputs]), approximate="tanh")
    assert out.dtype == ref.dtype and out.shape == ref.shape == (rows, n)
    tol = 1e-2 if bf16 else 1e-5
    assert _err(out, want) <= tol and _err(out, ref) <= tol
    upstream = torch.randn(rows, n, dtype=torch.float64, device=DEVICE)
    got = torch.autograd.grad((out.double() * upstream).sum(), inputs)
    expected = torch.autograd.grad((ref.double() * upstream).sum(), inputs)
    exact = torch.autograd.grad((want * upstream).sum(), inputs)
    for g, r, w in zip(got, expected, exact):
        assert g.dtype == r.dtype and g.shape == r.shape
        assert _err(g, w) <= max(tol, 2 * _err(r, w)), f"{_err(g, w):.2e} vs reference {_err(r, w):.2e}"


def test_linear_gelu_batched_shape_no_grad_and_empty():
    x, weight, bias = _inputs(2 * 7, 32, 96, torch.float32, seed=1)
    with torch.no_grad():
        out = mlp.linear_gelu(x.view(2, 7, 32), weight, bias)
        assert out.shape == (2, 7, 96) and not out.requires_grad
        torch.testing.assert_close(out, linear_gelu_ref(x.view(2, 7, 32), weight, bias), rtol=1e-5, atol=1e-5)
    assert mlp.linear_gelu(x[:0], weight, bias).shape == (0, 96)


def test_dispatcher_uses_the_epilogue_for_bf16_inference_only():
    """Where it was measured faster (kernels.use_gemm_epilogue): bf16 without autograd; fp32 and training: the
    reference, bitwise."""
    x, weight, bias = _inputs(64, 32, 128, torch.float32, seed=2)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.equal(kernels.linear_gelu(x, weight, bias, backend="cuda"), mlp.linear_gelu(x, weight, bias))
        assert torch.equal(kernels.linear_gelu(x, weight, bias, backend="torch"), linear_gelu_ref(x, weight, bias))
    with torch.no_grad():
        assert torch.equal(kernels.linear_gelu(x, weight, bias, backend="cuda"), linear_gelu_ref(x, weight, bias))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        trained = kernels.linear_gelu(x, weight, bias, backend="cuda")
        assert torch.equal(trained, linear_gelu_ref(x, weight, bias))
