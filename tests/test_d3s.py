"""d3s.py: sample-level selection (intra and cross group), the token top-K, the schedule, the
neutral setting (every ratio 1 = grpo.py), argument checks, and a smoke run."""

import itertools

import numpy as np
import pytest
import torch

import d3s
from tests.helpers import cli_error, SMALL, assert_same_as_grpo, records


def test_intra_group_keeps_the_full_group_advantages():
    adv = d3s.group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 8)
    kept = d3s.select_max_variance(adv, 4)
    assert kept.tolist() == [0, 4, 6, 7]
    assert adv[kept].tolist() == pytest.approx([1.207381, 1.207381, -0.724429, -0.724429], abs=1e-6)  # not +-0.866


def test_cross_group_selection_skips_the_zero_variance_group():
    adv = d3s.group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0]), 4)
    assert adv[4:8].tolist() == [0, 0, 0, 0]
    assert d3s.select_max_variance(adv, 4).tolist() == [0, 3, 8, 11]  # 1.4997, -0.4999, 0.4999, -1.4997


def test_selection_is_optimal_against_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(150):
        n = int(rng.integers(2, 11))
        m = int(rng.integers(2, n + 1))
        values = rng.choice([-1.5, -0.5, 0.0, 0.5, 1.5], n) if trial % 2 else rng.normal(size=n)
        kept = d3s.select_max_variance(torch.tensor(values), m).tolist()
        best = max(np.var(values[list(s)]) for s in itertools.combinations(range(n), m))
        assert len(set(kept)) == m and np.var(values[kept]) == pytest.approx(best, abs=1e-12)


def test_token_top_k_spec_example():
    adv = torch.tensor([1.2, 1.2, 1.2, -0.8, -0.8])  # five one-token completions
    entropy = torch.tensor([[0.1], [2.0], [0.5], [1.5], [0.05]])  # scores 0.12, 2.4, 0.6, 1.2, 0.04
    keep = d3s.token_keep_mask(adv, entropy, torch.ones(5, 1, dtype=torch.long), 0.4)
    assert keep.flatten().nonzero().flatten().tolist() == [1, 3]


def test_token_top_k_over_the_step_ignores_padding_and_breaks_ties_by_position():
    adv = torch.tensor([1.0, 2.0])
    entropy = torch.tensor([[1.0, 1.0, 9.0], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # the 9.0 is padding and must never be kept
    keep = d3s.token_keep_mask(adv, entropy, mask, 0.6)  # floor(0.6 * 5) = 3 of the 5 real tokens
    assert keep.tolist() == [[True, True, False], [True, False, False]]  # all score 1.0: the lowest positions
    assert torch.equal(d3s.token_keep_mask(adv, entropy, mask, 1.0), mask.bool())
    assert int(d3s.token_keep_mask(adv, entropy, mask, 0.01).sum()) == 1  # never an empty loss


def test_schedule_points():
    assert [d3s.keep_schedule(p, 4, 8) for p in (0, 0.25, 0.5, 1)] == [4, 5, 6, 8]
    assert d3s.keep_schedule(0.25, 0.2, 1.0) == pytest.approx(0.4)
    assert d3s.keep_schedule(1.5, 0.2, 1.0) == 1.0 and d3s.keep_schedule(0.3, 0.7, 0.7) == 0.7  # D2S: constant


@pytest.mark.parametrize("flags, message", [
    (["--token_ratio_start", "0"], "error: the sample and token ratios must be in (0, 1]"),
    (["--sample_ratio_end", "1.5"], "error: the sample and token ratios must be in (0, 1]"),
    (["--scope", "intra", "--sample_ratio_start", "0.2"], "error: the sample ratios must keep >= 2 of 8 rollouts"),
    (["--scope", "both"], "error: unknown --scope 'both' (cross, intra)"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("d3s.py", flags) == message


def test_keeping_everything_is_exactly_grpo(tiny_path, tmp_path):
    ones = dict(sample_ratio_start=1.0, sample_ratio_end=1.0, token_ratio_start=1.0, token_ratio_end=1.0)
    assert_same_as_grpo(d3s, tiny_path, tmp_path, ones, steps=2)


@pytest.mark.parametrize("scope", ["cross", "intra"])
def test_smoke_run_follows_the_schedule(tiny_path, tmp_path, scope):
    out = d3s.main(d3s.Args(model=tiny_path, output_dir=str(tmp_path), scope=scope, **dict(SMALL, max_steps=3)))
    recs = records(out["run_dir"])
    assert [r["d3s/sample_ratio"] for r in recs] == [0.5, 0.75, 1.0]
    assert [r["d3s/samples_kept"] for r in recs] == [16, 24, 32]  # of 8 x 4
    first = recs[0]
    assert first["d3s/tokens_kept"] < first["tokens/generated"]
    assert first["d3s/score_kept"] >= first["d3s/score_dropped"]
    assert recs[-1]["d3s/tokens_kept"] == recs[-1]["tokens/generated"]  # p = 1: everything is kept
    if scope == "cross":  # zero-advantage rollouts sit mid-order and are the last to be kept
        assert first["d3s/frac_kept_from_zero_std"] <= first["frac_reward_zero_std"]
