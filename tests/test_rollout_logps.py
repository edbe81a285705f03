"""The chunked log-probs and entropy equal the full log-softmax computation, values and gradients."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import common.rollout as rollout
from common.rollout import per_token_logps


def full_log_softmax(model, input_ids, attention_mask, n, temperature=1.0, bf16=False):
    """The textbook computation (what per_token_logps did before it was made lean)."""
    first = int(attention_mask.any(0).int().argmax())
    input_ids, attention_mask = input_ids[:, first:], attention_mask[:, first:]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       logits_to_keep=n + 1, use_cache=False).logits
    logp = (logits[:, :-1].float() / temperature).log_softmax(-1)
    token_logp = logp.gather(-1, input_ids[:, -n:].unsqueeze(-1)).squeeze(-1)
    return token_logp, -(logp.exp() * logp).sum(-1)


@pytest.fixture(scope="module")
def tied_model():
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=997, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("chunk", [rollout.CHUNK_ELEMENTS, 997 * 4])  # one chunk, and four rows per chunk
def test_chunked_logps_and_entropy_equal_the_full_log_softmax(tied_model, monkeypatch, temperature, bf16, chunk):
    monkeypatch.setattr(rollout, "CHUNK_ELEMENTS", chunk)
    ids = torch.randint(0, 997, (3, 13))
    mask = torch.ones_like(ids)
    mask[0, :5], mask[1, :2] = 0, 0  # left padding, as the prompts are
    weights = torch.rand(3, 6)  # an arbitrary upstream gradient
    emb = tied_model.model.embed_tokens.weight

    logp, entropy = per_token_logps(tied_model, ids, mask, 6, temperature, bf16, with_entropy=True)
    (grad,) = torch.autograd.grad((logp * weights).sum(), emb)
    ref_logp, ref_entropy = full_log_softmax(tied_model, ids, mask, 6, temperature, bf16)
    (ref_grad,) = torch.autograd.grad((ref_logp * weights).sum(), emb)

    assert logp.dtype == entropy.dtype == torch.float32 and logp.shape == entropy.shape == (3, 6)
    assert torch.allclose(logp, ref_logp, atol=1e-5, rtol=0)
    assert torch.allclose(entropy, ref_entropy.detach(), atol=1e-5, rtol=0)
    # Under bf16 the logits' gradient is stored in bfloat16 by both, rounded at different points (8 bits of
    # mantissa: a relative 0.4%); in float32 the two agree to rounding.
    tol = dict(atol=1e-4, rtol=2e-2) if bf16 else dict(atol=1e-5, rtol=1e-5)
    assert torch.allclose(grad, ref_grad, **tol)
    assert not entropy.requires_grad


def test_no_entropy_unless_asked(tied_model):
    ids = torch.randint(0, 997, (2, 8))
    logp, entropy = per_token_logps(tied_model, ids, torch.ones_like(ids), 3)
    assert entropy is None and logp.shape == (2, 3) and (logp <= 0).all()
