"""pods.py: the max-variance selection on the spec's vectors and against brute force, the neutral
setting m = n (= grpo.py), argument checks, a smoke run, and the paper's setting (n = 4m; at one update per
batch clipping is inert, so --loss_type grpo is the single-GPU trainer's loss)."""

import itertools
import os
import sys

import numpy as np
import pytest
import torch
from transformers import HfArgumentParser

import grpo
import pods
from tests.helpers import ROOT, cli_error, SMALL, assert_same_as_grpo, records

select = pods.select_max_variance


@pytest.mark.parametrize("rewards, m, expected", [
    ([1, 0, 0, 0, 1, 1, 0, 0], 4, [0, 4, 6, 7]),      # k = 2: two ones, two zeros, var 1/3
    ([0.9, 0.1, 0.5, 0.3, 0.7, 0.2], 3, [0, 1, 5]),    # k = 1: 0.9 with the two smallest
    ([1, 1, 1, 1], 2, [0, 1]),                          # all equal: the first m (top-m candidate)
    ([1, 0, 0, 0, 0, 0, 0, 0], 4, [0, 1, 2, 3]),       # every k >= 1 ties at 0.25: k = m is evaluated first
    ([1.1, 0.1, 1.2, 0.0, 0.1, 1.1], 4, [0, 2, 3, 4]),  # k = 2, unbiased variance 0.406667
])
def test_spec_vectors(rewards, m, expected):
    kept = select(torch.tensor(rewards, dtype=torch.float32), m)
    assert kept.dtype == torch.long and kept.tolist() == expected


def test_spec_variances_and_advantages():
    r = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0])
    kept_r = r[select(r, 4)]
    assert kept_r.var().item() == pytest.approx(1 / 3)
    adv = pods.group_advantages(kept_r, 4)
    assert adv.tolist() == pytest.approx([0.865875, 0.865875, -0.865875, -0.865875], abs=1e-6)
    r = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    adv = pods.group_advantages(r[select(r, 3)], 3)
    assert adv.tolist() == pytest.approx([1.146816, -0.688089, -0.458726], abs=1e-6)
    r = torch.tensor([1.1, 0.1, 1.2, 0.0, 0.1, 1.1])
    assert r[select(r, 4)].var().item() == pytest.approx(0.406667, abs=1e-6)
    r = torch.tensor([1.0, 1, 1, 1])
    assert pods.group_advantages(r[select(r, 2)], 2).tolist() == [0.0, 0.0]


def brute_force_best(values, m):
    return max(np.var([values[i] for i in s]) for s in itertools.combinations(range(len(values)), m))


@pytest.mark.parametrize("kind", ["continuous", "binary", "few_levels"])
def test_optimal_against_brute_force(kind):
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(2, 11))
        m = int(rng.integers(2, n + 1))
        values = {"continuous": rng.normal(size=n), "binary": rng.integers(0, 2, n).astype(float),
                  "few_levels": rng.choice([0.0, 0.1, 1.0, 1.1], n)}[kind]
        kept = select(torch.tensor(values), m).tolist()
        assert len(kept) == m and len(set(kept)) == m and kept == sorted(kept)
        assert np.var(values[kept]) == pytest.approx(brute_force_best(values, m), abs=1e-12), (values, m)


def test_binary_rewards_keep_a_balanced_split():
    r = torch.tensor([1.0] * 3 + [0.0] * 13)  # a hard prompt: 3 of 16 right
    assert r[select(r, 8)].tolist() == [1.0] * 3 + [0.0] * 5  # every success is kept, never more than exist
    r = torch.tensor([1.0] * 10 + [0.0] * 6)
    assert r[select(r, 8)].sum().item() == 4.0  # 4 right + 4 wrong: the most balanced subset


def test_keep_everything_and_the_ablation_rules():
    r = torch.tensor([0.3, 0.9, 0.1, 0.5])
    assert select(r, 4).tolist() == [0, 1, 2, 3]
    assert select(r, 2, "max_reward").tolist() == [1, 3]
    torch.manual_seed(0)
    kept = select(r, 3, "random")
    assert len(set(kept.tolist())) == 3 and kept.tolist() == sorted(kept.tolist())


@pytest.mark.parametrize("flags, message", [
    (["--num_keep", "1"], "error: --num_keep must be in [2, num_generations]"),
    (["--num_generations", "4", "--num_keep", "5"], "error: --num_keep must be in [2, num_generations]"),
    (["--rule", "best"], "error: unknown --rule 'best'"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("pods.py", flags) == message


def test_keep_all_is_exactly_grpo(tiny_path, tmp_path):
    assert_same_as_grpo(pods, tiny_path, tmp_path, dict(num_generations=4, num_keep=4), steps=2)


def test_smoke_run_trains_only_the_kept_rollouts(tiny_path, tmp_path):
    out = pods.main(pods.Args(model=tiny_path, output_dir=str(tmp_path), **dict(SMALL, num_generations=8, num_keep=4)))
    recs = records(out["run_dir"])
    for r in recs:
        assert r["pods/kept_fraction"] == 0.5
        assert r["pods/reward_var_after"] >= r["pods/reward_var_before"] - 1e-6  # selection never lowers the variance
        assert 0 < r["tokens/trained"] < r["tokens/generated"]
    assert recs[-1]["rollouts/generated_total"] == 2 * 8 * 8
    with open(os.path.join(out["run_dir"], "samples.jsonl")) as f:
        assert sum(1 for _ in f) == 2 * 2 * 4  # two kept groups of m = 4 per logged step


def test_the_paper_config_is_n_4m_against_grpo_with_n_m():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import harness

    parse = lambda module, config: HfArgumentParser(module.Args).parse_args_into_dataclasses(harness.CONFIGS[config][1])[0]  # noqa: E731
    args, base = parse(pods, "pods_paper"), parse(grpo, "grpo_pods_paper")
    pods.validate(args), grpo.validate(base)
    assert (args.num_generations, args.num_keep, args.loss_type) == (32, 8, "grpo")
    assert (base.num_generations, base.loss_type, base.prompts_per_step) == (args.num_keep, "grpo", args.prompts_per_step)


def test_with_one_update_per_batch_clipping_changes_no_gradient():
    """Why --loss_type grpo *is* the single-GPU trainer's unclipped per-sequence mean: at mu = 1 the ratio is 1."""
    torch.manual_seed(0)
    logp = (torch.randn(3, 5) - 2).requires_grad_()
    adv, mask = torch.tensor([1.5, -0.7, 0.2]), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    token_loss, _, _ = pods.clipped_token_loss(logp, logp.detach(), adv, 0.2, 0.2)
    clipped, = torch.autograd.grad(pods.aggregate_loss(token_loss, mask, "grpo", 3, int(mask.sum()), 5), logp)
    plain = -(torch.exp(logp - logp.detach()) * adv.unsqueeze(1))  # no clipping at all
    unclipped, = torch.autograd.grad((((plain * mask).sum(1) / mask.sum(1)).mean()), logp)
    assert torch.equal(clipped, unclipped) and clipped.abs().sum() > 0
