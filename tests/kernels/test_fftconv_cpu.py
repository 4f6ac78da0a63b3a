"""The CPU inference path (kernels/fftconv_cpu.py) against the reference: bitwise, per dtype, poisoned outputs."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from genomelm.commands._common import MALLOC_ENV_VAR, reuse_freed_memory
from genomelm.kernels import fftconv_cpu, hyena_mix, hyena_mix_cpu, hyena_mix_ref, map_row_blocks
from genomelm.model.hyena import Mlp
from tests.conftest import tiny_model


def mix_inputs(batch: int, seq_len: int, channels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    projected = torch.randn(batch, seq_len, 3 * channels, generator=g)
    weight, bias = torch.randn(3 * channels, 1, 3, generator=g), torch.randn(3 * channels, generator=g)
    k, D = torch.randn(channels, seq_len, generator=g) / seq_len, torch.randn(channels, generator=g)
    return projected, weight, bias, k, D


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Every output buffer starts as NaN: an element the CPU path forgets to write shows up."""
    monkeypatch.setattr(
        fftconv_cpu, "_output_buffer", lambda shape, like: torch.full(shape, float("nan"), dtype=like.dtype)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 100, 16), (3, 257, 64), (2, 1026, 48), (4, 33, 40)])
def test_hyena_mix_cpu_is_bitwise_the_reference(shape, dtype, poisoned_outputs):
    projected, weight, bias, k, D = mix_inputs(*shape)
    projected = projected.to(dtype)
    with torch.no_grad():
        expected = hyena_mix_ref(projected, weight.to(dtype), bias.to(dtype), k, D)
        got = hyena_mix_cpu(projected, weight.to(dtype), bias.to(dtype), k, D)
    assert got.dtype == expected.dtype == dtype
    assert got.stride() == expected.stride()  # out_proj rounds differently on another layout
    assert torch.equal(got, expected)


def test_hyena_mix_cpu_under_bf16_autocast_is_bitwise_the_reference(poisoned_outputs):
    projected, weight, bias, k, D = mix_inputs(2, 300, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        projected = torch.nn.functional.linear(projected, torch.eye(projected.shape[-1]))  # bf16, as in_proj's
        expected = hyena_mix_ref(projected, weight, bias, k, D)
        got = hyena_mix_cpu(projected, weight, bias, k, D)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


def test_dispatcher_uses_the_cpu_path_only_without_autograd(monkeypatch):
    inputs = mix_inputs(2, 50, 16)
    calls = []
    monkeypatch.setattr("genomelm.kernels.hyena_mix_cpu", lambda *a: calls.append(1) or hyena_mix_ref(*a))
    with torch.no_grad():
        hyena_mix(*inputs, backend="torch")
    assert calls == [1]
    projected = inputs[0].requires_grad_()
    hyena_mix(projected, *inputs[1:], backend="torch").sum().backward()
    assert calls == [1] and projected.grad is not None


@pytest.mark.parametrize(("n_rows", "rows"), [(210, 1), (210, 64), (210, 100), (4096 + 5, 4096), (130, 10_000)])
def test_map_row_blocks_is_bitwise_the_whole_module(n_rows, rows, poisoned_outputs):
    torch.manual_seed(0)
    mlp = Mlp(32, 128)
    x = torch.randn(1, n_rows, 32)
    with torch.no_grad():
        got = map_row_blocks(mlp._project, x, rows=rows)
    assert got.shape == (1, n_rows, 32)
    assert torch.equal(got, mlp._project(x).detach())


def test_block_bounds_never_leave_a_short_last_block():
    assert fftconv_cpu._block_bounds(210, 64) == [0, 64, 128, 210]  # not [..., 192, 210]: 18 rows
    assert fftconv_cpu._block_bounds(256, 64) == [0, 64, 128, 192, 256]
    assert fftconv_cpu._block_bounds(10, 64) == [0, 10]


def test_model_inference_path_is_bitwise_the_training_path(monkeypatch):
    """The previous implementation (the reference, still what autograd runs) and the CPU inference path agree."""
    monkeypatch.setattr(fftconv_cpu, "ROW_BLOCK", 100)  # several row blocks at test size
    model = tiny_model(d_model=64, d_inner=256)
    ids = torch.randint(7, 12, (3, 250), generator=torch.Generator().manual_seed(1))
    with torch.enable_grad():
        reference = model(ids).detach()  # autograd on: hyena_mix_ref and the whole-tensor MLP
    with torch.no_grad():
        assert torch.equal(model(ids), reference)
    with torch.inference_mode():
        assert torch.equal(model(ids), reference)


def test_reuse_freed_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(MALLOC_ENV_VAR, "0")
    assert reuse_freed_memory() is False
    monkeypatch.setenv(MALLOC_ENV_VAR, "1")
    assert isinstance(reuse_freed_memory(), bool)  # True on glibc; False where the C library has no mallopt


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_hyena_mix_cpu_is_bitwise_the_reference_on_any_thread_count(threads, poisoned_outputs):
    """Groups run on a pool of one-thread workers: the caller's thread count is kept, the values do not move."""
    before = torch.get_num_threads()
    projected, weight, bias, k, D = mix_inputs(2, 300, 64)
    try:
        torch.set_num_threads(threads)
        with torch.no_grad():
            got = hyena_mix_cpu(projected, weight, bias, k, D)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    with torch.no_grad():
        assert torch.equal(got, hyena_mix_ref(projected, weight, bias, k, D))


def test_concurrent_callers_get_their_own_results():
    """Two caller threads share the worker pool (no lock serialises them); each gets the reference's bits."""
    inputs = [mix_inputs(1, 200, 32, seed=seed) for seed in range(4)]
    with torch.no_grad():
        expected = [hyena_mix_ref(*i) for i in inputs]

    def call(i):
        with torch.no_grad():
            return hyena_mix_cpu(*i)

    with ThreadPoolExecutor(2) as callers:
        got = list(callers.map(call, inputs * 2))
    assert all(torch.equal(g, e) for g, e in zip(got, expected * 2))
