"""dppo.py: the importance weights are unbiased (Monte Carlo) where a deterministic pruning rule is
not, packing respects its budget and beats unpacked density, the neutral setting is grpo.py,
argument checks, and a smoke run."""


import numpy as np
import pytest
import torch

import dppo
from tests.helpers import cli_error, SMALL, assert_same_as_grpo, records


@pytest.fixture
def untrained_gsm8k(tmp_path):
    """An untrained tiny Qwen2 saved to disk and a 8-row GSM8K-format file (6 train + 2 held out)."""
    import json

    from common.tiny import build_model, build_tokenizer
    tok = build_tokenizer()
    build_model(tok, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / "model"), str(tmp_path / "data.jsonl")


def test_weights_prune_only_the_low_advantage_pool():
    adv = torch.tensor([2.0, -0.1, 0.0, 1.5, -3.0, 0.2, 0.05, -1.0])  # pool (half): indices 2, 6, 1, 5
    torch.manual_seed(0)
    for _ in range(50):
        w = dppo.completion_weights(adv, 0.75)
        assert w[[0, 3, 4, 7]].tolist() == [1.0, 1.0, 1.0, 1.0]  # outside the pool: always kept, weight 1
        assert set(w[[1, 2, 5, 6]].tolist()) <= {0.0, 4.0}  # inside: pruned or weighted 1 / (1 - 0.75)
    assert dppo.completion_weights(adv, 0.0).tolist() == [1.0] * 8
    assert dppo.completion_weights(adv, 0.9, pool_fraction=0.0).tolist() == [1.0] * 8


def per_sequence_gradients(num_seq=12, max_len=5, seed=0):
    """A linear softmax policy: the gradient of the loss (through dppo's own loss functions, grpo
    normaliser) that each completion contributes. The loss is linear in the weights, so any weighted
    gradient is weights @ these rows."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, 4, generator=g, requires_grad=True)
    feats = torch.randn(num_seq, max_len, 4, generator=g)
    targets = torch.randint(0, 6, (num_seq, max_len), generator=g)
    lengths = torch.randint(1, max_len + 1, (num_seq,), generator=g)
    mask = (torch.arange(max_len) < lengths.unsqueeze(1)).long()
    adv = dppo.group_advantages(torch.randint(0, 2, (num_seq,), generator=g).float(), 4)
    rows = []
    for i in range(num_seq):
        logp = (feats @ theta.T).log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        token_loss, _, _ = dppo.clipped_token_loss(logp, logp.detach(), adv, 0.2, 0.2)
        onehot = torch.zeros(num_seq)
        onehot[i] = 1.0
        loss = dppo.aggregate_loss(token_loss * onehot.unsqueeze(1), mask, "grpo", num_seq, int(mask.sum()), max_len)
        rows.append(torch.autograd.grad(loss, theta)[0].flatten())
    return adv, torch.stack(rows).double()


def test_random_pruning_is_unbiased_and_deterministic_pruning_is_not():
    adv, grads = per_sequence_gradients()
    full = grads.sum(0)
    rate, draws = 0.5, 20000
    gen = torch.Generator().manual_seed(1)
    weights = torch.stack([dppo.completion_weights(adv, rate, gen) for _ in range(draws)]).double()
    mc = (weights @ grads).mean(0)
    # the standard error of the Monte-Carlo mean, per coordinate; 5 of them is a generous bound
    stderr = (weights @ grads).std(0) / draws ** 0.5
    assert torch.all((mc - full).abs() <= 5 * stderr + 1e-9), (mc - full) / stderr
    assert weights.mean().item() == pytest.approx(1.0, abs=0.01)
    # The biased alternative: always keep the first (1 - r) of the pool, with the same 1 / (1 - r) weight.
    pool = torch.sort(adv.abs(), stable=True).indices[:6]
    det = torch.ones(12, dtype=torch.float64)
    det[pool[3:]] = 0.0
    det[pool[:3]] = 2.0
    bias = (det @ grads - full).abs()
    assert bias.max() > 20 * stderr.max(), "the deterministic rule should be visibly biased"


def test_packing_hand_example():
    lengths = [10, 50, 12, 48, 11, 49]
    batches = dppo.pack_microbatches(lengths, max_tokens=100, window=6)
    assert batches == [[1, 5], [2, 3], [0, 4]]  # 50+49 | 48+12 | 11+10: first fit, longest first
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    assert padded(batches) == 218 and padded([[0, 1], [2, 3], [4, 5]]) == 294  # density 0.83 vs 0.61


def test_packing_invariants_on_skewed_lengths():
    rng = np.random.default_rng(0)
    for trial in range(50):
        lengths = np.where(rng.random(100) < 0.8, rng.integers(5, 20, 100), rng.integers(60, 90, 100)).tolist()
        budget, window = int(rng.integers(200, 1000)), int(rng.integers(1, 101))
        batches = dppo.pack_microbatches(lengths, budget, window)
        assert sorted(i for b in batches for i in b) == list(range(100))  # every sequence exactly once
        assert all(len(b) * max(lengths[i] for i in b) <= budget for b in batches)
        if window == 100:  # one window: never more padding than fixed, in-order micro-batches
            rows = max(1, budget // max(lengths))
            fixed = [list(range(i, min(i + rows, 100))) for i in range(0, 100, rows)]
            pad = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
            assert pad(batches) <= pad(fixed)
    assert dppo.pack_microbatches([500, 10], max_tokens=100, window=2) == [[0], [1]]  # an over-long one alone


@pytest.mark.parametrize("flags, message", [
    (["--prompt_prune_rate", "1"], "error: the prune rates must be in [0, 1)"),
    (["--completion_prune_rate", "-0.5"], "error: the prune rates must be in [0, 1)"),
    (["--completion_pool", "2"], "error: --completion_pool must be in [0, 1]"),
    (["--pack_window", "0"], "error: --pack_max_tokens must be >= 0, --pack_window >= 1"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("dppo.py", flags) == message


def test_no_pruning_no_packing_is_exactly_grpo(tiny_path, tmp_path):
    neutral = dict(prompt_prune_rate=0.0, completion_prune_rate=0.0, pack_max_tokens=0)
    assert_same_as_grpo(dppo, tiny_path, tmp_path, neutral, grpo_kwargs=dict(loss_type="grpo"), steps=2)


def test_smoke_run_prunes_and_packs(tiny_path, tmp_path):
    out = dppo.main(dppo.Args(model=tiny_path, output_dir=str(tmp_path), pack_max_tokens=600,
                              **dict(SMALL, max_steps=4, prompts_per_step=4)))
    recs = records(out["run_dir"])
    for r in recs:
        assert 0.5 <= r["dppo/completions_kept"] <= 1.0  # at most the pool (half) is pruned
        assert r["pack/density"] >= r["pack/density_unpacked"] - 0.05 and 0 < r["pack/density"] <= 1
        assert r["rollouts/generated_total"] == 4 * 4 * (r["step"] + 1)  # refilled: always B x G generated
    assert recs[-1]["dppo/prompts_visited_total"] >= 4 * 4


def test_prompts_with_a_zero_variance_history_are_skipped_and_reweighted(untrained_gsm8k, tmp_path, monkeypatch):
    """A 6-prompt train set is revisited every 3 steps; with every reward 0 every group has zero variance,
    so every revisit is skipped with probability r_q or kept with weight 1/(1-r_q)."""
    monkeypatch.setattr(dppo, "score_completions", lambda task, rows, texts, G: (torch.zeros(len(texts)), {}))
    model_dir, data = untrained_gsm8k
    out = dppo.main(dppo.Args(model=model_dir, task="gsm8k", dataset_path=data, eval_size=2, eval_num_samples=0,
                              max_steps=9, prompts_per_step=2, num_generations=2, max_completion_length=4,
                              eval_every=0, save_every=0, log_samples_every=0, output_dir=str(tmp_path / "runs")))
    recs = records(out["run_dir"])
    assert all(r["frac_reward_zero_std"] == 1.0 for r in recs)
    assert [r["dppo/prompt_weight_mean"] for r in recs[:3]] == [1.0, 1.0, 1.0]  # first epoch: no history yet
    assert {r["dppo/prompt_weight_mean"] for r in recs[3:]} <= {2.0}  # revisits: weight 1 / (1 - 0.5)
    assert recs[-1]["dppo/prompts_visited_total"] > 9 * 2  # skipped prompts were refilled from the stream
    assert recs[-1]["rollouts/generated_total"] == 9 * 2 * 2
