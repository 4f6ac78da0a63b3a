"""Soft prompts (genomelm.model.soft_prompt): placement after the embedding layer, length limit, gradients."""

import pytest
import torch

from genomelm.errors import UsageError
from genomelm.model.soft_prompt import SoftPrompt, prompted_logits
from tests.conftest import tiny_model


def test_init_and_shape():
    torch.manual_seed(0)
    prompt = SoftPrompt(2000, 16)
    assert prompt.weight.shape == (2000, 16) and prompt.n_tokens == 2000
    assert abs(prompt.weight.std().item() - 0.02) < 0.001 and abs(prompt.weight.mean().item()) < 0.001
    assert prompt.dropout.p == 0.1
    embeds = torch.randn(3, 5, 16)  # (B, L, D)
    out = prompt.eval()(embeds)
    assert out.shape == (3, 2005, 16)
    assert torch.equal(out[:, :2000], prompt.weight.expand(3, -1, -1)) and torch.equal(out[:, 2000:], embeds)


def test_dropout_only_while_training():
    torch.manual_seed(0)
    prompt = SoftPrompt(64, 16)
    embeds = torch.zeros(1, 1, 16)
    assert torch.equal(prompt.eval()(embeds)[0, :64], prompt.weight)
    dropped = prompt.train()(embeds)[0, :64]
    assert (dropped == 0).float().mean().item() == pytest.approx(0.1, abs=0.04)


def test_prompted_logits_prepend_after_the_embedding_layer():
    model = tiny_model()
    ids = torch.randint(7, 11, (2, 9))
    assert torch.equal(prompted_logits(model, ids, None), model(ids))
    assert torch.equal(prompted_logits(model, ids, SoftPrompt(0, 16)), model(ids))
    prompt = SoftPrompt(4, 16).eval()
    embeds = model.backbone.embeddings(ids)  # (B, L, D)
    manual = model(inputs_embeds=torch.cat([prompt.weight.expand(2, -1, -1), embeds], dim=1))  # (B, 4 + L, V)
    got = prompted_logits(model, ids, prompt)
    assert got.shape == (2, 9, 16) and torch.equal(got, manual[:, 4:])
    assert not torch.allclose(got, model(ids))  # the prompt reaches the tokens through the long convolution


def test_prompt_plus_tokens_must_fit_l_max():
    model = tiny_model()  # l_max 258
    prompt = SoftPrompt(200, 16)
    prompted_logits(model, torch.full((1, 58), 7), prompt)
    with pytest.raises(UsageError, match="200 soft tokens \\+ 59 tokens = 259"):
        prompted_logits(model, torch.full((1, 59), 7), prompt)


def test_only_the_prompt_gets_gradients_when_the_backbone_is_frozen():
    model = tiny_model().requires_grad_(False)
    prompt = SoftPrompt(3, 16)
    prompted_logits(model, torch.randint(7, 11, (2, 6)), prompt)[:, -1].sum().backward()
    assert prompt.weight.grad is not None and prompt.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
