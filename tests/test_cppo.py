"""cppo.py: the pruning rule on the spec's vectors and against a reference sort, the allocation rule,
the neutral setting P = 0 (= grpo.py), argument checks, a smoke run, and the paper's setting (configs and
mu = 2 with a reference model on the survivors only)."""


import os
import sys

import numpy as np
import pytest
import torch
from transformers import HfArgumentParser

import cppo
import grpo
from tests.helpers import ROOT, cli_error, SMALL, assert_same_as_grpo, records

prune = cppo.prune_completions


def test_spec_single_group():
    adv = cppo.group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 8)
    assert adv[0].item() == pytest.approx(1.207381, abs=1e-6) and adv[1].item() == pytest.approx(-0.724429, abs=1e-6)
    assert prune(adv, 0.5).tolist() == [0, 1, 4, 5]   # the three successes + the first failure
    assert prune(adv, 0.75).tolist() == [0, 4]        # two of the three successes
    assert prune(adv, 0.875).tolist() == [0]


def test_spec_two_groups_global_vs_per_group():
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 0])  # g1 = [1,0,0,0], g2 = [1,1,1,0]
    adv = cppo.group_advantages(rewards, 4)
    assert adv.abs().tolist() == pytest.approx([1.4997, 0.4999, 0.4999, 0.4999, 0.4999, 0.4999, 0.4999, 1.4997],
                                               abs=1e-4)
    assert prune(adv, 0.5).tolist() == [0, 1, 2, 7]         # global: both rare outcomes, then ties by index
    assert prune(adv, 0.5, group_size=4).tolist() == [0, 1, 4, 7]  # per group: two each


def test_against_a_reference_sort():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 40))
        rate = float(rng.choice([0.0, 0.25, 0.5, 0.7, 0.75, 0.875, 0.9375, rng.uniform(0, 0.99)]))
        adv = torch.tensor(rng.choice([0.0, 0.5, -0.5, 1.5, rng.normal()], n))  # many ties on purpose
        keep = n - int(np.floor(n * rate + 1e-9))
        expected = sorted(sorted(range(n), key=lambda i: (-abs(adv[i].item()), i))[:keep])
        assert prune(adv, rate).tolist() == expected, (adv, rate)


def test_floors_and_degenerate_steps():
    assert len(prune(torch.zeros(10), 0.7)) == 3  # floor(10 * 0.7) = 7 dropped
    assert len(prune(torch.zeros(50), 0.58)) == 21  # floor(50 * 0.58) = 29 dropped, though 50 * 0.58 = 28.999...
    assert prune(torch.zeros(5), 0.5).tolist() == [0, 1, 2]  # all-zero advantages: the lowest indices survive
    assert prune(torch.ones(4), 0.0).tolist() == [0, 1, 2, 3]
    assert prune(torch.tensor([0.1]), 0.9).tolist() == [0]  # something always survives: floor(N P) < N


@pytest.mark.parametrize("flags, message", [
    (["--prune_rate", "1.0"], "error: --prune_rate must be in [0, 1)"),
    (["--prune_rate", "-0.1"], "error: --prune_rate must be in [0, 1)"),
    (["--scope", "batch"], "error: unknown --scope 'batch' (global, group)"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("cppo.py", flags) == message


def test_no_pruning_is_exactly_grpo(tiny_path, tmp_path):
    assert_same_as_grpo(cppo, tiny_path, tmp_path, dict(prune_rate=0.0), steps=2)


def test_smoke_run_with_allocation_keeps_the_update_size(tiny_path, tmp_path):
    out = cppo.main(cppo.Args(model=tiny_path, output_dir=str(tmp_path), prune_rate=0.75, **SMALL))
    for r in records(out["run_dir"]):
        assert r["cppo/prompts_per_step"] == 32  # 8 / (1 - 0.75)
        assert r["rollouts/trained"] in (0, 8 * 4)  # GRPO's update size (0 if the step had no signal)
        assert r["cppo/kept_fraction"] == 0.25
        assert r["cppo/abs_adv_kept"] >= r["cppo/abs_adv_pruned"]
    assert records(out["run_dir"])[-1]["rollouts/generated_total"] == 2 * 32 * 4


def test_without_allocation_the_step_keeps_its_prompts(tiny_path, tmp_path):
    out = cppo.main(cppo.Args(model=tiny_path, output_dir=str(tmp_path), prune_rate=0.5, allocation=False,
                              scope="group", **SMALL))
    rec = records(out["run_dir"])[-1]
    assert rec["cppo/prompts_per_step"] == 8 and rec["rollouts/generated_total"] == 2 * 8 * 4
    assert rec["rollouts/trained"] in (0, 8 * 2)


def paper_args(config):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import harness

    script, flags = harness.CONFIGS[config]
    module = {"cppo.py": cppo, "grpo.py": grpo}[script]
    args = HfArgumentParser(module.Args).parse_args_into_dataclasses(flags)[0]
    module.validate(args)
    return args


def test_the_paper_configs_are_the_official_setting():
    """mu = 2, beta = 0.04, G = 16, global pruning with allocation, token mean; the baseline differs only in P."""
    base = paper_args("grpo_cppo_paper")
    assert (base.num_iterations, base.beta, base.num_generations, base.prompts_per_step, base.loss_type) == (
        2, 0.04, 16, 8, "dapo")
    for config, rate, prompts in [("cppo_paper", 0.5, 16), ("cppo_paper_p0.75", 0.75, 32), ("cppo_paper_p0.875", 0.875, 64)]:
        args = paper_args(config)
        assert (args.prune_rate, args.scope, args.allocation) == (rate, "global", True), config
        assert round(args.prompts_per_step / (1 - args.prune_rate)) == prompts
        common = set(vars(args)) & set(vars(base))
        assert {k: vars(args)[k] for k in common} == {k: vars(base)[k] for k in common}, config  # same grpo.py flags


def test_paper_setting_prunes_before_the_old_and_reference_passes(tiny_path, tmp_path, monkeypatch):
    """mu = 2 and beta > 0: the stored old log-probs, the reference pass and both updates see only the survivors."""
    rows, logps = [], cppo.per_token_logps

    def counted(model, input_ids, *a, **k):
        rows.append(len(input_ids))
        return logps(model, input_ids, *a, **k)

    monkeypatch.setattr(cppo, "per_token_logps", counted)
    out = cppo.main(cppo.Args(model=tiny_path, output_dir=str(tmp_path), prune_rate=0.75, num_iterations=2, beta=0.04,
                              **dict(SMALL, max_steps=1)))
    rec = records(out["run_dir"])[-1]
    assert rec["cppo/prompts_per_step"] == 32 and rec["rollouts/generated_total"] == 32 * 4
    assert rec["rollouts/trained"] == 2 * 32 and rec["updates_total"] == 2 and rec["kl"] >= 0
    assert sum(rows) == 4 * 32  # old + reference + two updates, 32 survivors each (128 generated)
