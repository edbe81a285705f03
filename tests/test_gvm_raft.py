"""gvm_raft.py: the budget allocation on the spec's vectors and its guards, the embedding-gradient
proxy against a per-sample reference (untied and tied, and on nothing accepted), the per-prompt-mean
weights and the mini-batches on hand vectors, RAFT's loss against SFT, the neutral setting (uniform +
grpo = grpo.py), argument checks, steps where nothing is accepted, and smoke runs of each estimator
and of the official setting."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

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
    assert allocate([0.0, 2.0], [0.0, 0.0], 8, zero_allocation="skip").tolist() == [0, 0]  # official: no sample, no step
    assert allocate([0.0, 2.0], [0.0, 0.5], 8, zero_allocation="skip").tolist() == [0, 8]  # skip only when all are 0


def small_qwen(tied):
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, tie_word_embeddings=tied)
    return Qwen2ForCausalLM(cfg).eval()


def shared_matrix_grad_norms(model, ids, mask, comp_mask):
    """The hand computation: one backward per sequence, the norm of the embed_tokens parameter's gradient."""
    weight, out = model.get_input_embeddings().weight, []
    for i in range(len(ids)):
        logp, _ = per_token_logps(model, ids[i:i + 1], mask[i:i + 1], comp_mask.size(1))
        (grad,) = torch.autograd.grad(-(logp * comp_mask[i]).sum(), weight)
        out.append(grad.norm().item())
    return out


@pytest.mark.parametrize("tied", [False, True])
def test_embedding_gradient_norms_are_the_embed_tokens_parameter_gradient(tied):
    model = small_qwen(tied)
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (3, 11), generator=g)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])  # left padded
    comp_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])  # right padded
    ids[:, 5:] = ids[:, 5:].masked_fill(comp_mask == 0, 0)
    ids[:, 3] = ids[:, 7]  # a token used as input and predicted: both parts land in one row of the matrix
    mask = torch.cat([prompt_mask, comp_mask], 1)
    expected = shared_matrix_grad_norms(model, ids, mask, comp_mask)
    norms = gvm_raft.embedding_grad_norms(model, ids, mask, comp_mask)
    assert norms.tolist() == pytest.approx(expected, rel=1e-4)
    if tied:  # the lm_head's use of the matrix matters: the input part alone is far off (no bound either way)
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        logp = logits[:, 4:-1].log_softmax(-1).gather(-1, ids[:, 5:, None]).squeeze(-1)
        (d_emb,) = torch.autograd.grad(-(logp * comp_mask).sum(), emb)
        for i in range(3):
            rows = torch.zeros(40, 16).index_add_(0, ids[i], d_emb[i] * mask[i, :, None])
            assert abs(rows.norm().item() - expected[i]) > 0.05 * expected[i]


def test_embedding_gradient_norms_of_nothing_accepted_is_empty():
    model = small_qwen(True)  # used to fail: a forward pass over a 0-row chunk ("cannot reshape tensor of 0 elements")
    ids, mask = torch.zeros(0, 9, dtype=torch.long), torch.zeros(0, 9, dtype=torch.long)
    norms = gvm_raft.embedding_grad_norms(model, ids, mask, mask[:, 4:])
    assert norms.shape == (0,)


def test_prompt_mean_weights_on_a_hand_vector():
    owner = torch.tensor([0, 0, 0, 1, 1, 2])  # prompt 0: 2 accepted of 3, prompt 1: 1 of 2, prompt 2: none
    accepted = torch.tensor([True, True, False, True, False, False])
    w = gvm_raft.prompt_mean_weights(owner, accepted, num_trained=3)  # trained = the 3 accepted
    assert w[accepted].tolist() == [0.75, 0.75, 1.5]  # 3 / (B' = 2 x |acc_i|)
    summed, lengths = torch.tensor([4.0, 8.0, 0.0, 3.0, 0.0, 0.0]), torch.tensor([2.0, 6.0, 0.0, 4.0, 0.0, 0.0])
    token_mean = (w * summed)[accepted].sum() / lengths[accepted].sum()  # what the dapo loss computes with factors on A
    per_prompt = ((4.0 + 8.0) / 2 + 3.0) / 2  # the paper's mean over prompts of the mean over their accepted samples
    assert token_mean.item() == pytest.approx(per_prompt / (12 / 3))  # ... over the mean length of a trained sample
    assert gvm_raft.prompt_mean_weights(owner, torch.zeros(6, dtype=torch.bool), 6).tolist() == [1.0] * 6


def test_mini_batches_partition_the_samples():
    minis = gvm_raft.mini_batches(10, 3, 2, seed=0, device="cpu")
    assert [sum(map(len, mini)) for mini in minis] == [4, 3, 3] and all(len(mb) <= 2 for mini in minis for mb in mini)
    assert sorted(torch.cat([mb for mini in minis for mb in mini]).tolist()) == list(range(10))
    assert len(gvm_raft.mini_batches(2, 4, 8, seed=0, device="cpu")) == 2  # never an empty mini-batch


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
    (["--num_pilot", "0"], "error: --num_pilot and --steps_per_generation must be >= 1, --alloc_alpha >= 0"),
    (["--max_per_prompt", "4"], "error: --max_per_prompt must be 0 or >= num_generations (else the budget does not fit)"),
    (["--estimator", "raft", "--beta", "0.1"], "error: --estimator raft is plain SFT: use raft++ for a KL term"),
    (["--num_generations", "2"], "error: --num_pilot (4) must be <= --num_generations (2): a pilot larger than the budget"),
    (["--zero_allocation", "never"], "error: unknown --zero_allocation 'never' (uniform, skip)"),
    (["--alloc_beta", "nan"], "error: --alloc_beta must be a finite number, got nan"),
    (["--estimator", "grpo", "--mstep_mean", "prompt"],
     "error: --mstep_mean prompt and --train_rejected are for raft and raft++ (grpo trains every sample)"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("gvm_raft.py", flags) == message


def test_uniform_grpo_is_exactly_grpo(tiny_path, tmp_path):
    assert_same_as_grpo(gvm_raft, tiny_path, tmp_path, dict(allocation="uniform", estimator="grpo"), steps=2)


@pytest.mark.parametrize("mstep_mean", ["token", "prompt"])
def test_raft_loss_is_the_sft_loss_on_accepted_samples(tiny_path, tmp_path, monkeypatch, mstep_mean):
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
                                      allocation="uniform", mstep_mean=mstep_mean, **dict(SMALL, max_steps=1)))
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
    nll, lengths = -(logp * comp_mask[accepted]).sum(1), comp_mask[accepted].sum(1)
    sft = (nll.sum() / lengths.sum()).item()  # token-mean NLL
    if mstep_mean == "prompt":  # Algorithm 1: mean over prompts of the mean summed NLL of their accepted samples
        per_prompt = [nll[accepted // G == i].mean() for i in (accepted // G).unique()]
        sft = (sum(per_prompt) / len(per_prompt) / (lengths.sum() / len(accepted))).item()  # / the mean length
    assert rec["loss"] == pytest.approx(sft, rel=1e-5)
    assert rec["tokens/trained"] == int(comp_mask[accepted].sum())  # rejected samples cost no update compute


def test_raft_advantage_is_the_score_clipped_at_zero(tiny_path, tmp_path, monkeypatch):
    """The official RAFT advantage is max(score, 0) on every sample: on gsm8k/math a wrong answer in the right
    format scores 0.1 and is trained at A = 0.1, not dropped. Scores 0.1 / 1.1 here: every sample is trained."""
    seen, real_generate, real_score = {}, gvm_raft.generate, gvm_raft.score_completions

    def generate(model, tok, prompt_ids, prompt_mask, *a, **k):
        out = real_generate(model, tok, prompt_ids, prompt_mask, *a, **k)
        seen["prompt_ids"], seen["prompt_mask"], seen["completion"] = prompt_ids, prompt_mask, out
        return out

    def score(*a, **k):
        rewards, means = real_score(*a, **k)
        seen["rewards"] = rewards + 0.1
        return seen["rewards"], means

    monkeypatch.setattr(gvm_raft, "generate", generate)
    monkeypatch.setattr(gvm_raft, "score_completions", score)
    out = gvm_raft.main(gvm_raft.Args(model=tiny_path, output_dir=str(tmp_path), estimator="raft",
                                      allocation="uniform", **dict(SMALL, max_steps=1)))
    rec, G = records(out["run_dir"])[0], SMALL["num_generations"]
    comp_ids, comp_mask, _ = seen["completion"]
    ids = torch.cat([seen["prompt_ids"].repeat_interleave(G, 0), comp_ids], 1)
    mask = torch.cat([seen["prompt_mask"].repeat_interleave(G, 0), comp_mask], 1)
    model, _ = load_policy(tiny_path, torch.device("cpu"))
    with torch.no_grad():
        logp, _ = per_token_logps(model, ids, mask, comp_ids.size(1))
    nll = -(logp * comp_mask).sum(1)
    assert 0 < int((seen["rewards"] > 0.5).sum()) < len(nll)  # both kinds of sample are present
    assert rec["loss"] == pytest.approx((seen["rewards"] * nll).sum().item() / comp_mask.sum().item(), rel=1e-5)
    assert rec["tokens/trained"] == int(comp_mask.sum())
    assert rec["gvm/accepted_samples"] == int((seen["rewards"] > 0.5).sum())  # acceptance keeps its threshold


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


PAPER = dict(reuse_pilot=False, max_per_prompt=0, zero_allocation="skip", train_rejected=True, beta=0.001,
             steps_per_generation=4)  # the official setting (gvm_paper), at the test's N' = 4, G = 4


def test_official_setting_draws_fresh_samples_trains_all_of_them_in_mini_batches(tiny_path, tmp_path):
    out = gvm_raft.main(gvm_raft.Args(model=tiny_path, output_dir=str(tmp_path), **dict(SMALL, **PAPER)))
    recs = records(out["run_dir"])
    for step, r in enumerate(recs):
        assert r["gvm/samples_drawn"] == 8 * 4 + 8 * 4 and r["gvm/samples_used"] == 8 * 4  # pilot + n_i fresh ones
        assert r["tokens/trained"] == r["tokens/generated"]  # rejected samples are in the mean (and the KL)
        assert r["updates_total"] == 4 * (step + 1) and r["kl"] >= 0  # one optimiser step per mini-batch
    assert recs[-1]["rollouts/generated_total"] == 2 * (8 * 4 + 8 * 4)


@pytest.mark.parametrize("flags", [{}, PAPER, dict(allocation="uniform", estimator="grpo")])
def test_a_step_where_nothing_is_accepted_trains_nothing_and_logs_no_nan(tiny_path, tmp_path, monkeypatch, flags):
    """Used to crash (`embedding_grad_norms` on an empty chunk), here on every step."""
    real_score = gvm_raft.score_completions
    monkeypatch.setattr(gvm_raft, "score_completions", lambda *a: (torch.zeros_like(real_score(*a)[0]), {}))
    out = gvm_raft.main(gvm_raft.Args(model=tiny_path, output_dir=str(tmp_path), **dict(SMALL, **flags)))
    with open(f"{out['run_dir']}/metrics.jsonl") as f:
        assert not any(word in f.read() for word in ("NaN", "Infinity"))
    recs = records(out["run_dir"])
    assert [r["skipped/degenerate_total"] for r in recs] == [1, 2] and recs[-1]["updates_total"] == 0
    assert all(r["reward"] == 0 and r.get("gvm/prompts_without_support", 8) == 8 for r in recs)
    if flags is PAPER:  # the official rule: no sample beyond the pilot, no step (not even the KL term's)
        assert all(r["gvm/skipped"] == 1 and r["gvm/samples_used"] == 0 == sum(r["gvm/allocation"]) for r in recs)
    elif not flags:  # ours: uniform, then nothing to train on
        assert all(r["gvm/allocation"] == [4] * 8 and r["gvm/accepted_samples"] == 0 for r in recs)
