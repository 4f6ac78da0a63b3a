import pytest
import torch

from genomelm.errors import UsageError
from genomelm.model import PRESETS, HyenaConfig, HyenaDNA, preset
from tests.conftest import tiny_model

PUBLISHED_PARAMETER_COUNTS = {
    "tiny-1k": 436_096,
    "tiny-1k-d256": 1_641_088,
    "tiny-16k-d128": 436_096,
    "small-32k": 3_277_568,
    "medium-160k": 6_550_528,
    "medium-450k": 6_550_528,
    "large-1m": 6_550_528,
}


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMETER_COUNTS))
def test_preset_parameter_counts(name):
    config = preset(name)
    # Parameter count does not depend on l_max (positional features are buffers): keep the test light.
    model = HyenaDNA(config.replace(l_max=min(config.l_max, 1026)))
    assert model.num_parameters() == PUBLISHED_PARAMETER_COUNTS[name]
    assert set(PRESETS) == set(PUBLISHED_PARAMETER_COUNTS)


def test_config_json_round_trip_and_unknown_keys():
    config = preset("small-32k").replace(filter_shift=0.05)
    assert HyenaConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown HyenaConfig field"):
        HyenaConfig.from_dict({**config.to_dict(), "d_modle": 3})


def test_vocab_padded_to_16_and_head_tied():
    model = tiny_model()
    assert model.backbone.embeddings.word_embeddings.weight.shape[0] == 16
    assert model.lm_head.weight is model.backbone.embeddings.word_embeddings.weight


def test_model_is_causal():
    model = tiny_model()
    ids = torch.randint(7, 12, (1, 100))
    changed = ids.clone()
    changed[0, 60:] = 7
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :60], b[:, :60], atol=1e-6)
    assert not torch.allclose(a[:, 60:], b[:, 60:])


def test_hidden_states_per_layer():
    model = tiny_model()
    ids = torch.randint(7, 12, (2, 40))
    with torch.no_grad():
        embeddings = model.hidden_states(ids, layer=0)
        final = model.hidden_states(ids, layer=-1)
        assert torch.equal(final, model.hidden_states(ids, layer=model.config.n_layer))
        assert torch.allclose(embeddings, model.backbone.embeddings(ids))
        assert model.hidden_states(ids, layer=1).shape == (2, 40, 16)
    with pytest.raises(UsageError):
        model.hidden_states(ids, layer=5)


def test_input_longer_than_l_max_is_an_error():
    model = tiny_model()
    with pytest.raises(UsageError, match="longer than the model's l_max"):
        model(torch.randint(7, 12, (1, model.l_max + 1)))


def test_bf16_autocast_close_to_fp32():
    model = tiny_model()
    ids = torch.randint(7, 12, (2, 64))
    with torch.no_grad():
        ref = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids).float()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = tiny_model().train()
    model.backbone.drop_embed.p = 0.0
    ids = torch.randint(7, 12, (2, 32))
    model(ids).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(ids).sum().backward()
    for a, p in zip(plain, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_inference_filter_cache_follows_weight_updates():
    model = tiny_model()
    ids = torch.randint(7, 12, (1, 40))
    with torch.no_grad():
        first = model(ids)
        assert torch.equal(model(ids), first)  # served from the cache
        model.backbone.layers[0].mixer.filter_fn.implicit_filter[0].weight.mul_(1.5)  # in-place update
        changed = model(ids)
    assert not torch.allclose(changed, first)
    model.zero_grad()
    model(ids).sum().backward()  # with autograd the filter is recomputed and gets gradients
    assert model.backbone.layers[0].mixer.filter_fn.implicit_filter[0].weight.grad is not None
