"""The output head follows each family's own rule: bias, Cohere's logit_scale, Granite's logits_scaling,
Gemma 2/3's soft-cap. Tiny random models built from configs; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

from distil.train.heads import decoder_of, head_logits, output_head, output_logits

SMALL = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def _gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    # a small cap, so the soft-cap bites on random logits
    return Gemma2ForCausalLM(Gemma2Config(**SMALL, head_dim=8, final_logit_softcapping=0.5, sliding_window=16))


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return Gemma3ForCausalLM(Gemma3TextConfig(**SMALL, head_dim=8, final_logit_softcapping=0.5, sliding_window=16))


def _cohere():
    from transformers import CohereConfig, CohereForCausalLM

    return CohereForCausalLM(CohereConfig(**SMALL, logit_scale=0.0625))


def _phi():
    from transformers import PhiConfig, PhiForCausalLM

    model = PhiForCausalLM(PhiConfig(**SMALL))
    with torch.no_grad():
        model.lm_head.bias.normal_(0.0, 3.0)  # a bias that is not zero, so leaving it out shows
    return model


def _granite():
    from transformers import GraniteConfig, GraniteForCausalLM

    return GraniteForCausalLM(GraniteConfig(**SMALL, logits_scaling=8.0))


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**SMALL))


@pytest.mark.parametrize("build", [_gemma2, _gemma3, _cohere, _phi, _granite, _llama], ids=lambda f: f.__name__[1:])
def test_output_logits_match_the_models_own_forward(build):
    torch.manual_seed(0)
    model = build().eval()
    ids = torch.randint(0, 97, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        own = model(input_ids=ids, attention_mask=mask).logits
        hidden = decoder_of(model)(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = output_logits(model, hidden)
        rows = torch.tensor([5, 3, 90])
        picked = output_logits(model, hidden, rows)
    assert torch.allclose(ours, own, atol=1e-5, rtol=0), (ours - own).abs().max()
    assert torch.allclose(picked, own[..., rows], atol=1e-5, rtol=0)


@pytest.mark.parametrize("build", [_gemma2, _cohere, _phi, _granite], ids=lambda f: f.__name__[1:])
def test_the_bare_projection_is_not_these_models_logits(build):
    """The reason the rule exists: hidden @ weight.T alone differs from the model's logits here."""
    torch.manual_seed(0)
    model = build().eval()
    ids = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        own = model(input_ids=ids).logits
        bare = decoder_of(model)(input_ids=ids).last_hidden_state @ output_head(model).weight.T
    assert (bare - own).abs().max() > 1e-2


def test_head_logits_soft_cap_and_scale_by_hand():
    hidden = torch.tensor([[1.0, 2.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    bias = torch.tensor([0.5, -1.0])
    assert head_logits(hidden, weight, bias).tolist() == [[1.5, 5.0]]
    assert head_logits(hidden, weight, bias, multiplier=2.0).tolist() == [[3.0, 10.0]]
    capped = head_logits(hidden, weight, bias, softcap=2.0)
    assert torch.allclose(capped, torch.tanh(torch.tensor([[0.75, 2.5]])) * 2.0)
