"""d3s.py: sample-level selection (intra and cross group), the token top-K, the schedule and its
"none" setting, the paper's variants as named configs, trimming the update to the kept tokens (same
loss and gradient), the neutral setting (every ratio 1 = grpo.py), argument checks, and smoke runs."""

import itertools

import numpy as np
import pytest
import torch

import d3s
from tests.helpers import cli_error, SMALL, assert_same_as_grpo, params, records


def test_intra_group_keeps_the_full_group_advantages():
    adv = d3s.group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 8)
    kept = d3s.select_max_variance(adv, 4)
    assert kept.tolist() == [0, 4, 6, 7]
    assert adv[kept].tolist() == pytest.approx([1.207381, 1.207381, -0.724429, -0.724429], abs=1e-6)  # not +-0.866


def test_cross_group_selection_skips_the_zero_variance_group():
    adv = d3s.group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0]), 4)
    assert adv[4:8].tolist() == [0, 0, 0, 0]
    assert d3s.select_max_variance(adv, 4).tolist() == [0, 3, 8, 11]  # 1.4997, -0.4999, 0.4999, -1.4997


def test_cross_and_intra_selection_differ_as_the_variants_need():
    # groups of 4: [1,0,0,0] -> A = 1.5, -.5, -.5, -.5; [1,1,0,1] -> .5, .5, -1.5, .5; [1,1,1,1] -> 0
    adv = d3s.group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1]), 4)
    # cross (D3S, D3S's D2S, D1S-Cross), 6 of 12: the 3 largest + 3 smallest, Var = 5.5 / 6; the A = 0 group drops out
    assert d3s.select_rollouts(adv, 4, 0.5, "cross").tolist() == [0, 2, 3, 4, 5, 6]
    # intra (D1S, D3S-I), 2 of each 4: the +-extremes of each group, and 2 rollouts of the A = 0 group too
    assert d3s.select_rollouts(adv, 4, 0.5, "intra").tolist() == [0, 1, 6, 7, 8, 9]
    assert d3s.select_rollouts(adv, 4, 1.0, "intra").tolist() == list(range(12))
    assert d3s.select_rollouts(adv, 4, 0.01, "cross").tolist() == [0, 6]  # never fewer than 2


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
    assert d3s.keep_schedule(1.5, 0.2, 1.0) == 1.0 and d3s.keep_schedule(0.3, 0.7, 0.7) == 0.7


def test_no_schedule_holds_the_linear_schedules_mean():
    assert [d3s.keep_schedule(p, 0.2, 0.5, "none") for p in (0, 0.3, 1)] == [0.35, 0.35, 0.35]
    steps = [d3s.keep_schedule(s / 9, 0.5, 1.0) for s in range(10)]  # the same total over a run
    assert sum(steps) / 10 == pytest.approx(d3s.keep_schedule(0, 0.5, 1.0, "none"))


def parse(flags):
    from transformers import HfArgumentParser
    return HfArgumentParser(d3s.Args).parse_args_into_dataclasses(flags)[0]


def test_named_variants_are_the_papers():
    from benchmarks.harness import CONFIGS
    expect = {  # name: (scope, schedule, token level on)  as in the paper's ablation
        "d1s": ("intra", "none", False), "d1s_cross": ("cross", "none", False), "d2s": ("cross", "none", True),
        "d3s": ("cross", "linear", True), "d3s_i": ("intra", "linear", True), "d3s_paper": ("cross", "linear", True)}
    for name, (scope, schedule, tokens) in expect.items():
        script, flags = CONFIGS[name]
        a = parse(flags)
        assert (script, a.scope, a.schedule) == ("d3s.py", scope, schedule), name
        assert (min(a.token_ratio_start, a.token_ratio_end) < 1) == tokens, name
        d3s.validate(a)
    paper = parse(CONFIGS["d3s_paper"][1])
    assert (paper.sample_ratio_start, paper.sample_ratio_end, paper.token_ratio_start, paper.token_ratio_end) == (
        0.25, 0.75, 0.2, 0.5)
    ratios = lambda a: (a.sample_ratio_start, a.sample_ratio_end, a.token_ratio_start, a.token_ratio_end)  # noqa: E731
    # the defaults the schedule sweep chose, and the sweep's arms, each pinned whatever the defaults become
    assert ratios(parse([])) == (0.5, 1.0, 0.2, 0.5)
    assert ratios(parse(CONFIGS["d3s_tokens0.5"][1])) == (0.5, 1.0, 0.5, 1.0)
    assert ratios(parse(CONFIGS["d3s_samples0.25"][1])) == (0.25, 0.75, 0.5, 1.0)


def test_trim_to_kept_rows_and_columns():
    keep = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 1, 0, 0]], dtype=torch.bool)
    rows, width = d3s.trim_to_kept(keep)
    assert rows.tolist() == [0, 2] and width == 3
    rows, width = d3s.trim_to_kept(torch.ones(2, 4, dtype=torch.bool))
    assert rows.tolist() == [0, 1] and width == 4


def test_zero_advantage_rows_need_no_entropy():
    """The entropy pass skips rows with A = 0: their score |A| H is 0 whatever H is, so the mask is the same."""
    gen = torch.Generator().manual_seed(0)
    adv = torch.tensor([0.0, 1.5, 0.0, -0.5, 0.0, -1.0])
    entropy = torch.rand(6, 7, generator=gen)
    mask = (torch.rand(6, 7, generator=gen) > 0.2).long()
    zeroed = entropy.masked_fill((adv == 0).unsqueeze(1), 0.0)
    for ratio in (0.1, 0.4, 0.7, 0.9):  # 0.7 and 0.9 reach into the score-0 tokens: ties by position either way
        assert torch.equal(d3s.token_keep_mask(adv, entropy, mask, ratio), d3s.token_keep_mask(adv, zeroed, mask, ratio))


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_trimming_leaves_the_loss_and_gradient_unchanged(tiny_path, loss_type):
    """The update on the trimmed rows and columns is the update on the full step with the keep mask."""
    from transformers import AutoModelForCausalLM
    # float64: the equality is exact up to ~1e-15 there; in float32 another batch shape rounds its sums
    # differently (up to ~2e-6 of a gradient's scale), which a tolerance cannot tell from a small bug
    model = AutoModelForCausalLM.from_pretrained(tiny_path).double()
    gen = torch.Generator().manual_seed(0)
    P, L = 4, 6
    input_ids = torch.randint(5, 100, (4, P + L), generator=gen)
    completion_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 6, [1] * 3 + [0] * 3])
    prompt_mask = torch.tensor([[0, 1, 1, 1], [1] * 4, [0, 0, 1, 1], [1] * 4])  # left padding
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    keep = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    advantages = torch.tensor([1.0, -0.5, -1.5, 0.7])
    with torch.no_grad():
        full_logp = d3s.per_token_logps(model, input_ids, attention_mask, L)[0]
    old = full_logp + 0.3 * torch.randn(full_logp.shape, generator=gen)  # ratios far from 1: the clip is active
    ref = full_logp + 0.1 * torch.randn(full_logp.shape, generator=gen)

    def loss_and_grads(ids, am, mask, adv, old, ref, width):
        model.zero_grad()
        logp = d3s.per_token_logps(model, ids, am, width)[0]
        token_loss, _, _ = d3s.clipped_token_loss(logp, old, adv, 0.2, 0.2, ref, beta=0.04)
        loss = d3s.aggregate_loss(token_loss, mask, loss_type, 4, int(keep.sum()), 8)  # the full step's normalisers
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    full = loss_and_grads(input_ids, attention_mask, keep.long(), advantages, old, ref, L)
    rows, width = d3s.trim_to_kept(keep)
    assert rows.tolist() == [0, 2, 3] and width == 4
    cut = P + width
    trimmed = loss_and_grads(input_ids[rows, :cut], attention_mask[rows, :cut], keep[rows, :width].long(),
                             advantages[rows], old[rows, :width], ref[rows, :width], width)
    assert trimmed[0].item() == pytest.approx(full[0].item(), rel=1e-12, abs=1e-15) and full[0].item() != 0
    for a, b in zip(full[1], trimmed[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)  # float64 sums in another order


def test_a_trimmed_run_trains_like_an_untrimmed_one(tiny_path, tmp_path, monkeypatch):
    """End to end, with several micro-batches, old and reference log-probs: the same losses and weights."""
    kw = dict(SMALL, max_steps=1, model=tiny_path, learning_rate=1e-3, output_dir=str(tmp_path), micro_batch_size=5,
              num_iterations=2, beta=0.04, token_ratio_start=0.3, token_ratio_end=0.3, sample_ratio_start=1.0,
              sample_ratio_end=1.0)  # all rollouts: the A = 0 ones keep no token, their rows drop out
    trimmed = d3s.main(d3s.Args(run_name="trimmed", **kw))
    monkeypatch.setattr(d3s, "trim_to_kept", lambda keep: (torch.arange(keep.size(0)), keep.size(1)))
    full = d3s.main(d3s.Args(run_name="full", **kw))
    a, b = records(trimmed["run_dir"]), records(full["run_dir"])
    assert [r["tokens/trained"] for r in a] == [r["tokens/trained"] for r in b]
    for key in ("loss", "grad_norm"):  # float32 sums in another order, then amplified by pass 2 after an Adam step
        assert a[0][key] == pytest.approx(b[0][key], rel=1e-4), key
    assert a[0]["rollouts/trained"] < b[0]["rollouts/trained"] and a[0]["d3s/frac_positions_trained"] < 1
    start, pa, pb = params(tiny_path), params(f"{trimmed['run_dir']}/final"), params(f"{full['run_dir']}/final")
    da, db = (torch.cat([(p[k] - start[k]).flatten() for k in start]) for p in (pa, pb))
    # Adam's first steps are ~lr x sign(g): a coordinate whose gradient is ~0 may flip on rounding alone,
    # so compare the whole update, not each weight
    assert db.norm() > 0 and (da - db).norm() < 1e-3 * db.norm()


@pytest.mark.parametrize("flags, message", [
    (["--token_ratio_start", "0"], "error: the sample and token ratios must be in (0, 1]"),
    (["--sample_ratio_end", "1.5"], "error: the sample and token ratios must be in (0, 1]"),
    (["--scope", "intra", "--sample_ratio_start", "0.2"], "error: the sample ratios must keep >= 2 of 8 rollouts"),
    (["--scope", "both"], "error: unknown --scope 'both' (cross, intra)"),
    (["--schedule", "cosine"], "error: unknown --schedule 'cosine' (linear, none)"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("d3s.py", flags) == message


def test_keeping_everything_is_exactly_grpo(tiny_path, tmp_path):
    ones = dict(sample_ratio_start=1.0, sample_ratio_end=1.0, token_ratio_start=1.0, token_ratio_end=1.0)
    assert_same_as_grpo(d3s, tiny_path, tmp_path, ones, steps=2)


@pytest.mark.parametrize("scope", ["cross", "intra"])
def test_smoke_run_follows_the_schedule(tiny_path, tmp_path, scope):
    ratios = dict(sample_ratio_start=0.5, sample_ratio_end=1.0, token_ratio_start=0.5, token_ratio_end=1.0)
    out = d3s.main(d3s.Args(model=tiny_path, output_dir=str(tmp_path), scope=scope, **ratios, **dict(SMALL, max_steps=3)))
    recs = records(out["run_dir"])
    assert [r["d3s/sample_ratio"] for r in recs] == [0.5, 0.75, 1.0]
    assert [r["d3s/samples_kept"] for r in recs] == [16, 24, 32]  # of 8 x 4
    first = recs[0]
    assert first["d3s/tokens_kept"] < first["tokens/generated"]
    assert first["d3s/score_kept"] >= first["d3s/score_dropped"]
    assert recs[-1]["d3s/tokens_kept"] == recs[-1]["tokens/generated"]  # p = 1: everything is kept
    if scope == "cross":  # zero-advantage rollouts sit mid-order and are the last to be kept
        assert first["d3s/frac_kept_from_zero_std"] <= first["frac_reward_zero_std"]


def test_smoke_run_without_the_schedule(tiny_path, tmp_path):
    out = d3s.main(d3s.Args(model=tiny_path, output_dir=str(tmp_path), scope="intra", schedule="none",
                            sample_ratio_start=0.5, sample_ratio_end=1.0, token_ratio_start=1.0, token_ratio_end=1.0,
                            **dict(SMALL, max_steps=3)))  # D1S: per group, sample level only, fixed ratio
    recs = records(out["run_dir"])
    assert [r["d3s/samples_kept"] for r in recs] == [24, 24, 24]  # 3 of each 4, (0.5 + 1) / 2
    assert all(r["d3s/tokens_kept"] == r["tokens/trained"] and r["d3s/frac_positions_trained"] == 1 for r in recs
               if r["tokens/trained"])
