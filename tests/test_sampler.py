"""The lean sampler (common/sampler.py) against HF `generate` and against the model's own distribution."""

from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from common.rollout import completion_mask, encode_prompts, generate, load_policy, per_token_logps
from common.sampler import sample
from common.tasks import load_task

PAD = 0


@pytest.fixture(scope="module")
def tiny(tiny_path):
    model, tok = load_policy(tiny_path, torch.device("cpu"))
    rows = load_task("add", None, 16).test[:16]
    ids, mask = encode_prompts(tok, [r["prompt"] for r in rows], 256, "cpu")
    return model, tok, ids, mask


def random_tied_model(vocab=12, eos=(7, 11), seed=0, init=0.5):
    """A 2-layer Qwen2 with tied embeddings, peaked logits (large init) and two EOS ids."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=True, initializer_range=init, bos_token_id=None,
                      eos_token_id=list(eos), pad_token_id=PAD)
    model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = list(eos)
    model.generation_config.pad_token_id = PAD
    tok = SimpleNamespace(eos_token_id=eos[-1], pad_token_id=PAD)  # all `generate` reads of a tokenizer
    return model, tok


# Four left-padded prompts of lengths 3, 4, 5 and 2.
PROMPTS = torch.tensor([[0, 0, 3, 4, 5], [0, 6, 7, 8, 9], [1, 2, 3, 4, 5], [0, 0, 0, 10, 11]])
PROMPT_MASK = (torch.arange(5)[None] >= torch.tensor([2, 1, 0, 3])[:, None]).long()


def repeat(ids, mask, g):
    return ids.repeat_interleave(g, 0), mask.repeat_interleave(g, 0)


def test_greedy_equals_hf_generate_on_the_tiny_model(tiny):
    model, tok, ids, mask = tiny
    hf = generate(model, tok, ids, mask, 1, 64, do_sample=False, sampler="hf")
    lean = generate(model, tok, ids, mask, 1, 64, do_sample=False, sampler="lean")
    lengths = lean[1].sum(1)
    assert lengths.min() < lengths.max()  # rows end at different times: the batch shrinks
    for a, b in zip(hf, lean):
        assert a.shape == b.shape and torch.equal(a, b)


def test_greedy_equals_hf_generate_under_bf16_autocast(tiny):
    model, tok, ids, mask = tiny
    hf = generate(model, tok, ids[:12], mask[:12], 1, 64, do_sample=False, bf16=True, sampler="hf")
    lean = generate(model, tok, ids[:12], mask[:12], 1, 64, do_sample=False, bf16=True, sampler="lean")
    for a, b in zip(hf, lean):
        assert torch.equal(a, b)


def test_greedy_equals_hf_generate_with_two_eos_ids_and_tied_embeddings():
    model, tok = random_tied_model()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    hf = generate(model, tok, PROMPTS, PROMPT_MASK, 1, 20, do_sample=False, sampler="hf")
    lean = generate(model, tok, PROMPTS, PROMPT_MASK, 1, 20, do_sample=False, sampler="lean")
    for a, b in zip(hf, lean):
        assert torch.equal(a, b)
    ids, mask, truncated = lean
    # Hand-checked on this seed: rows stop at 7, never, 7, 11 (both ids end a completion).
    assert mask.sum(1).tolist() == [6, 20, 2, 14]
    assert truncated.tolist() == [False, True, False, False]
    assert ids[[0, 2, 3], mask.sum(1)[[0, 2, 3]] - 1].tolist() == [7, 7, 11]
    assert (ids[mask == 0] == PAD).all()


def test_eos_contract_padding_and_max_new_tokens_cutoff():
    model, tok = random_tied_model()
    torch.manual_seed(1)
    ids, mask, truncated = generate(model, tok, PROMPTS, PROMPT_MASK, 16, 6, sampler="lean")
    assert ids.size(0) == 64 and ids.size(1) <= 6
    eos = torch.tensor([7, 11])
    for row, m, cut in zip(ids, mask, truncated):
        n = int(m.sum())
        assert not torch.isin(row[:n - 1], eos).any()  # no EOS before the end
        assert (row[n:] == PAD).all()  # only padding after it
        assert bool(cut) == (not torch.isin(row[n - 1], eos)) and (not cut or n == 6)
    assert truncated.any() and not truncated.all()
    one, mask1, trunc1 = generate(model, tok, PROMPTS, PROMPT_MASK, 4, 1, sampler="lean")
    assert one.shape == (16, 1) and mask1.all() and torch.equal(trunc1, ~torch.isin(one[:, 0], eos))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logps_equal_a_forward_pass(tiny, temperature):
    """The log-probs recorded under the shrinking, KV-cached batch equal a full forward pass."""
    model, tok, ids, mask = tiny
    torch.manual_seed(0)
    comp, logps = sample(model, ids[:8], mask[:8], 4, 64, [tok.eos_token_id], tok.pad_token_id, temperature)
    cmask, _ = completion_mask(comp, [tok.eos_token_id])
    assert cmask.sum(1).min() < cmask.sum(1).max()
    full_ids = torch.cat([ids[:8].repeat_interleave(4, 0), comp], 1)
    full_mask = torch.cat([mask[:8].repeat_interleave(4, 0), cmask], 1)
    with torch.no_grad():
        ref, _ = per_token_logps(model.eval(), full_ids, full_mask, comp.size(1), temperature)
    assert (logps[cmask == 0] == 0).all()
    torch.testing.assert_close(logps[cmask == 1], ref[cmask == 1], atol=1e-5, rtol=0)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of counts against probabilities (cells with expected >= 5)."""
    expected = probs * counts.sum()
    keep = expected >= 5
    observed = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)])
    expected = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)])
    observed, expected = observed[expected > 0], expected[expected > 0]
    stat = ((observed - expected) ** 2 / expected).sum()
    dof = torch.tensor(observed.numel() - 1, dtype=torch.float64)
    return torch.special.gammaincc(dof / 2, stat / 2).item()


def two_token_distribution(model, prompt, temperature, eos):
    """Exact probabilities of the first two tokens: cell (a, b) = p(a) p(b | a); an EOS first ends
    the completion, its cell is (eos, PAD)."""
    with torch.no_grad():
        p1 = (model(prompt[None]).logits[0, -1].double() / temperature).softmax(-1)
        nxt = torch.cat([prompt.expand(len(p1), -1), torch.arange(len(p1))[:, None]], 1)
        p2 = (model(nxt).logits[:, -1].double() / temperature).softmax(-1)
    joint = p1[:, None] * p2
    for e in eos:
        joint[e] = 0
        joint[e, PAD] = p1[e]
    return joint


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_distribution_matches_the_model(temperature):
    """Chi-square of 8000 two-token completions per prompt against p(a) p(b | a), for a left-padded
    and an unpadded prompt; the same counts reject the distribution at the wrong temperature."""
    model, tok = random_tied_model(vocab=6, eos=(5,), seed=3, init=0.2)
    ids = torch.tensor([[0, 0, 1, 2], [3, 1, 4, 2]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    n = 8000
    torch.manual_seed(0)
    comp, _ = sample(model, ids, mask, n, 2, [5], PAD, temperature)
    for i in range(2):
        rows = comp[i * n:(i + 1) * n]
        second = rows[:, 1] if rows.size(1) > 1 else torch.zeros(n, dtype=torch.long)
        counts = torch.zeros(6, 6, dtype=torch.float64)
        counts.index_put_((rows[:, 0], second), torch.ones(n, dtype=torch.float64), accumulate=True)
        prompt = ids[i][mask[i] == 1]
        assert chi_square_p(counts.flatten(), two_token_distribution(model, prompt, temperature, [5]).flatten()) > 1e-3
        wrong = two_token_distribution(model, prompt, 2 * temperature, [5]).flatten()
        assert chi_square_p(counts.flatten(), wrong) < 1e-6  # the test has power


def test_generate_rejects_an_unknown_sampler():
    model, tok = random_tied_model()
    with pytest.raises(ValueError, match="unknown sampler"):
        generate(model, tok, PROMPTS, PROMPT_MASK, 1, 4, sampler="vllm")


def test_sampler_leaves_the_training_mode_as_it_was(tiny):
    model, tok, ids, mask = tiny
    model.train()
    generate(model, tok, ids[:2], mask[:2], 2, 4)
    assert model.training
    model.eval()
