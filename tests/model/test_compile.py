"""torch.compile sees whole blocks: the fused kernels are custom ops, so a Block traces as one graph.

The CPU tests trace with the reference kernels (and, under TRITON_INTERPRET=1 with triton installed, with the
fused custom ops on the CPU); the GPU test compiles the whole model with inductor and compares it with eager.
"""

from __future__ import annotations

import os

import pytest
import torch

from genomelm import kernels
from tests.conftest import tiny_model

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _traced_block_matches_eager(model, device: torch.device) -> None:
    """One graph (fullgraph=True fails on any break) for forward and backward, equal to the eager block."""
    block = model.backbone.layers[0].to(device)
    ids = torch.randint(7, 11, (2, 200), device=device)
    x = model.backbone.embeddings.to(device)(ids).detach()
    k = block.mixer.long_filter(200).detach()
    kernels.prepare_for_compile()  # what Hyena.set_compile does before compiling
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True, dynamic=False)
    inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [fn(inp, inp * 0.5, k) for fn, inp in zip((compiled, block), inputs)]
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want)
    for residual, branch in outs:
        (residual.sum() + (branch * branch).sum()).backward()
    torch.testing.assert_close(inputs[0].grad, inputs[1].grad)


def test_block_traces_as_one_graph_reference_kernels():
    torch._dynamo.reset()
    model = tiny_model()
    model.set_conv_backend("torch")
    _traced_block_matches_eager(model, torch.device("cpu"))


@pytest.mark.skipif(not INTERPRET or torch.cuda.is_available(), reason="CPU check of the fused ops: TRITON_INTERPRET=1")
@pytest.mark.parametrize("mode", ["precise", "fast"])
def test_block_traces_as_one_graph_fused_ops_interpreted(monkeypatch, mode):
    pytest.importorskip("genomelm.kernels.layer_norm_cuda", reason="triton is not installed")
    monkeypatch.setenv(kernels.MODE_ENV_VAR, mode)
    monkeypatch.setattr(kernels, "resolve_backend", lambda backend, device: "cuda")  # CPU tensors, Triton interpreter
    torch._dynamo.reset()
    _traced_block_matches_eager(tiny_model(), torch.device("cpu"))


def test_set_compile_keeps_parameter_names_and_can_be_undone():
    model = tiny_model()
    names = list(model.state_dict())
    model.set_compile(True)
    assert list(model.state_dict()) == names and model.backbone.compiled
    model.set_compile(False)
    assert not model.backbone.compiled
    assert all(layer._compiled_call_impl is None for layer in model.backbone.layers)


def test_genomelm_compile_env_compiles_where_commands_set_the_backend(monkeypatch):
    """--compile sets GENOMELM_COMPILE=1; every command's set_conv_backend then compiles the blocks."""
    monkeypatch.delenv(kernels.COMPILE_ENV_VAR, raising=False)
    model = tiny_model()
    model.set_conv_backend(None)
    assert not model.backbone.compiled
    monkeypatch.setenv(kernels.COMPILE_ENV_VAR, "1")
    model.set_conv_backend("torch")
    assert model.backbone.compiled and all(layer._compiled_call_impl is not None for layer in model.backbone.layers)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_model_matches_eager_on_gpu(precision):
    """Inductor-compiled blocks (fused custom ops inside) give the eager model's hidden states and gradients."""
    torch._dynamo.reset()
    device = torch.device("cuda")
    eager = tiny_model(l_max=4098).to(device)
    compiled = tiny_model(l_max=4098).to(device)
    compiled.set_compile(True)
    ids = torch.randint(7, 11, (2, 4096), device=device)
    results = []
    for model in (eager, compiled):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(ids)
        logits.float().square().mean().backward()
        results.append((logits.float(), model.backbone.layers[0].mixer.in_proj.weight.grad))
    tol = dict(atol=1e-4, rtol=1e-4) if precision == "fp32" else dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(results[1][0], results[0][0], **tol)
    torch.testing.assert_close(results[1][1], results[0][1], **tol)
