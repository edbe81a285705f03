"""gvm_raft.py: the budget allocation on the spec's vectors and its guards, the embedding-gradient
proxy against a per-sample reference, RAFT's loss against SFT, the neutral setting (uniform + grpo
= grpo.py), argument checks, and a smoke run of each estimator."""


import numpy as np
import pytest
import torch

import gvm_raft
from common.rollout import load_policy, per_token_logps
from tests.helpers import cli_error, SMALL, assert_same_as_grpo, records

allocate = gvm_raft.allocate_budget


@pytest.mark.parametrize("g, p, n, expected", [
    ([2.0, 1.0, 1.0, 3.0], [0.5, 0.125, 1.0, 0.0], 32, [14, 13, 5, 0]),  # p = 0: nothing, however large G
    ([1.0, 1.0, 1.0], [0.125, 0.5, 1.0], 24, [13, 6, 5]),  # 12.77 / 6.57 / 4.66: the largest remainders win
    ([1.0, 1.0], [0.01, 0.25], 16, [10, 6]),  # the alpha term tames the nearly-impossible prompt (10.0 -> 3.02)
])
def test_spec_vectors(g, p, n, expected):
    counts = allocate(g, p, n)
    assert counts.dtype == torch.long and counts.tolist() == expected


def test_sums_are_exact_and_the_cap_holds_on_random_inputs():
    rng = np.random.default_rng(0)
    for trial in range(300):
        k = int(rng.integers(1, 20))
        g = rng.exponential(size=k) * (rng.random(k) < 0.8)
        p = rng.choice([0.0, 0.125, 0.25, 0.5, 0.75, 1.0], k)
        cap = int(rng.choice([0, 3, 8, 24]))
        budget = int(rng.integers(1, (cap or 30) * k + 1))
        counts = allocate(g, p, budget, max_per_prompt=cap or None)
        assert int(counts.sum()) == budget and (counts >= 0).all()
        if cap:
            assert (counts <= cap).all()
        supported = (g > 0) & (p > 0)
        if supported.any() and (not cap or cap * supported.sum() >= budget):
            assert counts[~torch.tensor(supported)].sum() == 0  # no budget to prompts without signal


def test_guards():
    assert allocate([0.0, 0.0, 0.0], [0.0, 0.5, 1.0], 9).tolist() == [3, 3, 3]  # all weights 0: uniform
    assert allocate([5.0, 1.0], [0.5, 0.5], 10, max_per_prompt=6).tolist() == [6, 4]  # the excess is re-spread
    assert allocate([5.0, 0.0], [0.5, 0.5], 10, max_per_prompt=6).tolist() == [6, 4]  # ...even to weight 0
    assert allocate([1.0], [0.5], 7).tolist() == [7]


def test_embedding_gradient_norms_match_a_per_sample_backward(tiny_path):
    model, tok = load_policy(tiny_path, torch.device("cpu"))
    prompts = tok(["12+7", "305+9"], return_tensors="pt", padding=True, padding_side="left")
    comps = tok(["2+7=9\n#### 19", "5+9=14"], return_tensors="pt", padding=True, padding_side="right")
    ids = torch.cat([prompts.input_ids, comps.input_ids], 1)
    mask = torch.cat([prompts.attention_mask, comps.attention_mask], 1)
    norms = gvm_raft.embedding_grad_norms(model, ids, mask, comps.attention_mask)
    for i in range(2):
        model.zero_grad()
        logp, _ = per_token_logps(model, ids[i:i + 1], mask[i:i + 1], comps.input_ids.size(1))
        (-(logp * comps.attention_mask[i]).sum()).backward()
        expected = model.get_input_embeddings().weight.grad.norm()
        assert norms[i].item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("flags, message", [
    (["--estimator", "ppo"], "error: unknown --estimator 'ppo' (raft, raft++, grpo)"),
    (["--allocation", "greedy"], "error: unknown --allocation 'greedy' (gvm, uniform)"),
    (["--num_pilot", "0"], "error: --num_pilot must be >= 1 and --alloc_alpha >= 0"),
    (["--max_per_prompt", "4"], "error: --max_per_prompt must be 0 or >= num_generations (else the budget does not fit)"),
    (["--estimator", "raft", "--beta", "0.1"], "error: --estimator raft is plain SFT: use raft++ for a KL term"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("gvm_raft.py", flags) == message


def test_uniform_grpo_is_exactly_grpo(tiny_path, tmp_path):
    assert_same_as_grpo(gvm_raft, tiny_path, tmp_path, dict(allocation="uniform", estimator="grpo"), steps=2)


def test_raft_loss_is_the_sft_loss_on_accepted_samples(tiny_path, tmp_path, monkeypatch):
    seen = {}
    real_generate, real_score = gvm_raft.generate, gvm_raft.score_completions

    def generate(model, tok, prompt_ids, prompt_mask, *a, **k):
        out = real_generate(model, tok, prompt_ids, prompt_mask, *a, **k)
        seen["prompt_ids"], seen["prompt_mask"], seen["completion"] = prompt_ids, prompt_mask, out
        return out

    def score(*a, **k):
        seen["rewards"] = real_score(*a, **k)[0]
        return real_score(*a, **k)

    monkeypatch.setattr(gvm_raft, "generate", generate)
    monkeypatch.setattr(gvm_raft, "score_completions", score)
    out = gvm_raft.main(gvm_raft.Args(model=tiny_path, output_dir=str(tmp_path), estimator="raft",
                                      allocation="uniform", **dict(SMALL, max_steps=1)))
    rec = records(out["run_dir"])[0]
    accepted = (seen["rewards"] > 0.5).nonzero().flatten()
    assert 0 < len(accepted) < len(seen["rewards"])
    comp_ids, comp_mask, _ = seen["completion"]
    G = SMALL["num_generations"]
    ids = torch.cat([seen["prompt_ids"].repeat_interleave(G, 0), comp_ids], 1)[accepted]
    mask = torch.cat([seen["prompt_mask"].repeat_interleave(G, 0), comp_mask], 1)[accepted]
    model, _ = load_policy(tiny_path, torch.device("cpu"))
    with torch.no_grad():
        logp, _ = per_token_logps(model, ids, mask, comp_ids.size(1))
    sft = (-(logp * comp_mask[accepted]).sum() / comp_mask[accepted].sum()).item()  # token-mean NLL
    assert rec["loss"] == pytest.approx(sft, rel=1e-5)
    assert rec["tokens/trained"] == int(comp_mask[accepted].sum())  # rejected samples cost no update compute


@pytest.mark.parametrize("estimator", ["raft", "raft++", "grpo"])
def test_smoke_run_spends_exactly_the_budget(tiny_path, tmp_path, estimator):
    out = gvm_raft.main(gvm_raft.Args(model=tiny_path, output_dir=str(tmp_path), estimator=estimator,
                                      **dict(SMALL, max_steps=2)))
    recs = records(out["run_dir"])
    for r in recs:
        assert r["gvm/samples_used"] == sum(r["gvm/allocation"]) == 8 * 4  # B x num_generations
        assert max(r["gvm/allocation"]) <= 24 and r["gvm/samples_drawn"] >= 8 * 2
        assert 0 <= r["gvm/accept_rate_mean"] <= 1 and r["gvm/time_pilot"] > 0
    pilot_waste = sum(r["gvm/samples_drawn"] - r["gvm/samples_used"] for r in recs)
    assert recs[-1]["rollouts/generated_total"] == 2 * 8 * 4 + pilot_waste  # every sample drawn is counted
