"""The MLP's first projection on the CPU: the dispatcher always runs the reference there (bitwise)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genomelm import kernels
from tests.conftest import tiny_model


def test_cpu_linear_gelu_is_the_reference_bitwise():
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(5, 7, 16, generator=g), torch.randn(64, 16, generator=g), torch.randn(64, generator=g)
    want = F.gelu(F.linear(x, weight, bias), approximate="tanh")
    assert torch.equal(kernels.linear_gelu(x, weight, bias), want)
    assert torch.equal(kernels.linear_gelu(x, weight, bias, backend="torch"), want)
    with pytest.raises(RuntimeError, match="conv backend 'cuda' requested"):
        kernels.linear_gelu(x, weight, bias, backend="cuda")


def test_mlp_module_is_fc2_gelu_tanh_fc1():
    mlp = tiny_model().backbone.layers[0].mlp
    x = torch.randn(2, 9, 16, requires_grad=True)
    want = mlp.fc2(F.gelu(mlp.fc1(x), approximate="tanh"))
    torch.testing.assert_close(mlp(x), want, rtol=0, atol=0)
    with torch.no_grad():
        assert torch.equal(mlp(x), want)
