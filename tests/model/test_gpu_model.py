"""The whole model on the GPU with the fused kernels (fused add+LayerNorm, Hyena mixing, the MLP's GEMM epilogue):
the official checkpoint's golden outputs, and the reference backend's values and gradients."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from genomelm.formats.checkpoint import load_checkpoint_dir
from tests.conftest import DATA, tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
COMPAT = DATA / "official_tiny_lightning"


def test_official_golden_reproduced_with_fused_kernels_fp32():
    expected = load_file(COMPAT / "expected.safetensors")
    model = load_checkpoint_dir(COMPAT).cuda()
    model.set_conv_backend("cuda")
    ids = expected["input_ids"].cuda()
    with torch.no_grad():
        hidden, logits = model.hidden_states(ids).cpu(), model(ids).cpu()
    assert (hidden - expected["hidden"]).abs().max() <= 1e-4
    assert (logits - expected["logits"]).abs().max() <= 1e-4


def _rel_rms(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt().clamp_min(1e-30)).item()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_model_matches_reference_values_and_gradients(precision):
    """Training step quantities: logits and every parameter's gradient, cuda backend vs torch backend."""
    bf16 = precision == "bf16"
    ids = torch.randint(7, 11, (2, 1000), device="cuda")
    results = []
    for backend in ("torch", "cuda"):
        model = tiny_model(l_max=1026, d_model=64, d_inner=256).cuda()  # eval: no dropout masks to differ
        model.set_conv_backend(backend)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (ref_logits, ref_grads), (logits, grads) = results
    tol = 1e-2 if bf16 else 1e-5
    assert _rel_rms(logits, ref_logits) <= tol
    for name, grad in grads.items():
        assert _rel_rms(grad, ref_grads[name]) <= 3 * tol, name


def test_fused_bf16_inference_matches_reference():
    """bf16 inference: the path where the MLP's GEMM epilogue is used (kernels.use_gemm_epilogue)."""
    ids = torch.randint(7, 11, (2, 1000), device="cuda")
    outs = []
    for backend in ("torch", "cuda"):
        model = tiny_model(l_max=1026, d_model=64, d_inner=256).cuda()
        model.set_conv_backend(backend)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            outs.append(model(ids).float())
    assert _rel_rms(outs[1], outs[0]) <= 1e-2
