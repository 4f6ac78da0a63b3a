"""Equivalence of the fused residual add + LayerNorm (genomelm.kernels.layer_norm_cuda) with its reference.

GPU tests: they skip without CUDA. With TRITON_INTERPRET=1 and triton installed they also run on the CPU through
Triton's interpreter. Every output buffer starts as NaN (POISON_BUFFERS), and values and gradients are compared
with a float64 evaluation of the same formula and with the reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genomelm.kernels import add_layer_norm_ref
from tests.kernels._device import INTERPRET, kernel_test_device

DEVICE = kernel_test_device()
ln = pytest.importorskip("genomelm.kernels.layer_norm_cuda", reason="triton is not installed")

pytestmark = pytest.mark.gpu

# (rows, width): a partial tile, the model's width, a width that is not a power of two, one wide row
SHAPES = [(1, 16), (37, 256), (130, 48), (5, 2049)] + ([] if INTERPRET else [(4 * 131072, 256)])


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    monkeypatch.setattr(ln, "POISON_BUFFERS", True)


def _inputs(rows, width, x_dtype, has_x, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=g, dtype=torch.float64).to(x_dtype) if has_x else None
    residual = torch.randn(rows, width, generator=g, dtype=torch.float64).float() * 3 + 1  # fp32, off-centre
    weight = torch.randn(width, generator=g, dtype=torch.float64).float()
    bias = torch.randn(width, generator=g, dtype=torch.float64).float()
    tensors = [x, residual, weight, bias]
    return [None if t is None else t.to(DEVICE).requires_grad_() for t in tensors]


def _ln64(x, residual, weight, bias, eps=1e-5):
    res = residual.double() + (0 if x is None else x.double())
    return F.layer_norm(res, res.shape[-1:], weight.double(), bias.double(), eps), res


def _err(got, want) -> float:
    """Max abs error relative to max |want| (NaN if anything is NaN)."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("nan")
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def _grads(outs, inputs, grads):
    leaves = [t for t in inputs if t is not None]
    loss = sum((o.double() * g).sum() for o, g in zip(outs, grads))
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("rows,width", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_x", [True, False])
def test_add_layer_norm_forward_backward(rows, width, dtype, has_x):
    """out (dtype) and residual_out (fp32) and the gradients of x, residual, weight, bias, against float64."""
    inputs = _inputs(rows, width, dtype, has_x, seed=rows + width)
    out, res = ln.add_layer_norm(*inputs, 1e-5, dtype)
    ref_out, ref_res = add_layer_norm_ref(*inputs, 1e-5, dtype)
    want_out, want_res = _ln64(*inputs)
    assert out.dtype == dtype and res.dtype == torch.float32 and out.shape == res.shape == (rows, width)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert _err(out, want_out) <= tol and _err(res, want_res) <= 1e-6
    assert _err(out, ref_out) <= tol
    upstream = [torch.randn(rows, width, dtype=torch.float64, device=DEVICE) for _ in range(2)]
    got = _grads((out, res), inputs, upstream)
    ref = _grads((ref_out, ref_res), inputs, upstream)
    want = _grads((want_out, want_res), inputs, upstream)
    for g, r, w in zip(got, ref, want):
        assert g.dtype == r.dtype and g.shape == r.shape
        # weight/bias gradients sum over every row: tolerance relative to the largest, never worse than the reference
        assert _err(g, w) <= max(tol, 2 * _err(r, w)), f"{_err(g, w):.2e} vs reference {_err(r, w):.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_layer_norm_only_normalised_output_used(dtype):
    """The residual output unused (ln_f): its gradient is None inside the op and the result still matches."""
    inputs = _inputs(50, 64, dtype, True, seed=3)
    upstream = torch.randn(50, 64, dtype=torch.float64, device=DEVICE)
    got = _grads((ln.add_layer_norm(*inputs, 1e-5, dtype)[0],), inputs, [upstream])
    want = _grads((_ln64(*inputs)[0],), inputs, [upstream])
    for g, w in zip(got, want):
        assert _err(g, w) <= (1e-5 if dtype == torch.float32 else 1e-2)


def test_add_layer_norm_batched_shape_and_empty():
    x, residual, weight, bias = _inputs(2 * 7, 32, torch.float32, True, seed=1)
    out, res = ln.add_layer_norm(x.view(2, 7, 32), residual.view(2, 7, 32), weight, bias, 1e-5, torch.bfloat16)
    assert out.shape == res.shape == (2, 7, 32)
    empty = torch.zeros(0, 32, device=DEVICE)
    assert ln.add_layer_norm(None, empty, weight, bias, 1e-5, torch.float32)[0].shape == (0, 32)
    with pytest.raises(ValueError, match="differ"):
        ln.add_layer_norm(x[:3], residual, weight, bias, 1e-5, torch.float32)
