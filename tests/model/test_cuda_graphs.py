"""CUDA graphs of fixed-shape inference (model/cuda_graphs.py): replays equal the eager forward, shapes seen once
run eagerly, weight changes and filter-cache churn never replay stale tensors. CPU: the opt-in is a no-op there."""

from __future__ import annotations

import pytest
import torch

from genomelm.model.cuda_graphs import GRAPHS_ENV_VAR, cuda_graphs_refused, cuda_graphs_requested
from tests.conftest import tiny_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _pair(backend: str = "cuda"):
    """(graphed model, eager model) with the same weights on the GPU."""
    models = [tiny_model(l_max=1026, d_model=64, d_inner=256).cuda() for _ in range(2)]
    for model in models:
        model.set_conv_backend(backend)
    models[0].set_cuda_graphs(True)
    return models


def _same(graphed, eager, ids, layer=-1):
    with torch.no_grad():
        got, want = graphed.hidden_states(ids, layer), eager.hidden_states(ids, layer)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    return got


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["cuda", "torch"])
def test_replays_equal_eager_and_follow_new_inputs(precision, backend):
    graphed, eager = _pair(backend)
    graphs = graphed.backbone.graphs
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for seed in range(4):  # call 0 eager, 1 captures, 2-3 replay with new ids
            ids = torch.randint(7, 12, (3, 1000), device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
            out = _same(graphed, eager, ids)
        assert len(graphs._graphs) == 1
        out2 = _same(graphed, eager, ids)
        assert out.data_ptr() != out2.data_ptr()  # each replay's output is a copy: the last one is not overwritten
        _same(graphed, eager, ids[:, :500], layer=1)  # another shape and layer: eager at first sight
        assert len(graphs._graphs) == 1


@pytest.mark.gpu
@needs_cuda
def test_last_partial_batch_filter_churn_and_weight_change():
    graphed, eager = _pair()
    full = torch.randint(7, 12, (4, 1000), device="cuda")
    for _ in range(3):
        _same(graphed, eager, full)
    _same(graphed, eager, full[:1, :333])  # a partial last batch: new filter length replaces the filter caches
    torch.cuda.empty_cache()
    _same(graphed, eager, torch.randint(7, 12, (4, 1000), device="cuda"))  # replay still reads live filters
    with torch.no_grad():
        for model in (graphed, eager):
            model.backbone.layers[0].mlp.fc1.weight.mul_(1.5)
    _same(graphed, eager, full)  # weights changed: graphs dropped, eager again
    assert not graphed.backbone.graphs._graphs


@pytest.mark.gpu
@needs_cuda
def test_training_bypasses_graphs():
    graphed, eager = _pair()
    ids = torch.randint(7, 12, (2, 500), device="cuda")
    for _ in range(3):
        graphed.hidden_states(ids).sum().backward()
    assert not graphed.backbone.graphs._graphs


def test_env_opt_in_and_cpu_runs_eagerly(monkeypatch):
    monkeypatch.setenv(GRAPHS_ENV_VAR, "1")
    model = tiny_model()
    model.set_conv_backend("torch")
    assert model.backbone.graphs is not None
    ids = torch.randint(7, 12, (2, 50))
    with torch.no_grad():
        outs = [model.hidden_states(ids) for _ in range(3)]
    assert all(torch.equal(o, outs[0]) for o in outs) and not model.backbone.graphs._graphs
    monkeypatch.delenv(GRAPHS_ENV_VAR)
    model.set_cuda_graphs(False)
    assert model.backbone.graphs is None


def test_train_eval_switch_drops_graphs():
    # As the filter cache: an optimiser that does not bump version counters (fused AdamW) must not leave a graph
    # replaying the filters of old weights across a training loop's train()/eval() cycle.
    model = tiny_model()  # in eval mode
    model.set_cuda_graphs(True)
    graphs = model.backbone.graphs
    graphs._graphs["captured shape"] = object()  # stand-ins: CPU runs never capture
    graphs._seen.add("seen shape")
    model.eval()  # no switch (as every api call does): kept
    assert graphs._graphs and graphs._seen
    model.train()
    assert not graphs._graphs and not graphs._seen
    graphs._graphs["captured shape"] = object()
    model.eval()
    assert not graphs._graphs


@pytest.mark.parametrize(
    "value, requested, refused",
    [(None, False, False), ("1", True, False), ("on", True, False), ("0", False, True), ("Off", False, True)],
)
def test_env_asks_for_or_refuses_graphs(monkeypatch, value, requested, refused):
    """Unset: each command's default (score-genome on a GPU: graphs); 1/on: every command; 0/off: none."""
    if value is None:
        monkeypatch.delenv(GRAPHS_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(GRAPHS_ENV_VAR, value)
    assert (cuda_graphs_requested(), cuda_graphs_refused()) == (requested, refused)
