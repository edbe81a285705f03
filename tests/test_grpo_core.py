"""GRPO's core maths on the spec's hand-computed vectors (worked by hand from the paper's equations)."""

import pytest
import torch

from common.rollout import completion_mask
from grpo import Args, aggregate_loss, clipped_token_loss, group_advantages, validate


def test_group_advantages_spec_vector():
    r = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0])
    a = group_advantages(r, 8, "group")
    assert a[[0, 4, 5]] == pytest.approx([1.207381] * 3, abs=1e-5)
    assert a[[1, 2, 3, 6, 7]] == pytest.approx([-0.724429] * 5, abs=1e-5)
    assert group_advantages(r, 8, "none")[:2].tolist() == pytest.approx([0.625, -0.375])


def test_group_advantages_degenerate_groups_are_zero_not_nan():
    r = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0])
    a = group_advantages(r, 4, "group")
    assert torch.isfinite(a).all() and a[:8].abs().max() == 0
    assert a[8:].tolist() == pytest.approx([0.866, -0.866, 0.866, -0.866], abs=1e-3)


def test_group_advantages_batch_scaling_uses_group_mean_and_batch_std():
    r = torch.tensor([1.0, 0, 1, 1])
    a = group_advantages(r, 2, "batch")
    assert a.tolist() == pytest.approx([0.5 / (r.std().item() + 1e-4), -0.5 / (r.std().item() + 1e-4), 0, 0], abs=1e-6)


def test_k3_spec_value():
    logp, ref = torch.tensor([[-1.0]]), torch.tensor([[-1.2]])
    loss, _, _ = clipped_token_loss(logp, logp, torch.zeros(1), 0.2, 0.2, ref, beta=1.0)
    assert loss.item() == pytest.approx(0.0187308, abs=1e-6)


@pytest.mark.parametrize("ratio, adv, surrogate, clipped", [
    (1.3, 1.0, 1.2, "high"),    # upper clip active: no gradient
    (0.7, -1.0, -0.8, "low"),   # lower clip active: no gradient
    (1.3, -1.0, -1.3, None),    # not clipped: the gradient flows
])
def test_clip_spec_cases(ratio, adv, surrogate, clipped):
    logp = torch.tensor([[torch.log(torch.tensor(ratio)).item()]], requires_grad=True)
    loss, low, high = clipped_token_loss(logp, torch.zeros(1, 1), torch.tensor([adv]), 0.2, 0.2)
    assert -loss.item() == pytest.approx(surrogate, abs=1e-6)
    assert (bool(low), bool(high)) == (clipped == "low", clipped == "high")
    loss.sum().backward()
    assert (logp.grad.abs().item() > 0) == (clipped is None)


def test_ratio_is_one_and_gradient_is_advantage_weighted_when_old_is_detached():
    logp = torch.tensor([[-0.5, -2.0]], requires_grad=True)
    loss, _, _ = clipped_token_loss(logp, logp.detach(), torch.tensor([2.0]), 0.2, 0.2)
    assert loss.tolist() == [[-2.0, -2.0]]
    loss.sum().backward()
    assert logp.grad.tolist() == [[-2.0, -2.0]]


def test_aggregation_spec_values():
    # Two completions of lengths 2 and 4 with per-token losses 1.0 and 0.5.
    token_loss = torch.tensor([[1.0, 1.0, 0, 0], [0.5, 0.5, 0.5, 0.5]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert aggregate_loss(token_loss, mask, "grpo", 2, 6, 8).item() == pytest.approx(0.75)
    assert aggregate_loss(token_loss, mask, "dapo", 2, 6, 8).item() == pytest.approx(4 / 6)
    assert aggregate_loss(token_loss, mask, "dr_grpo", 2, 6, 8).item() == pytest.approx(0.25)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_micro_batches_add_up_to_the_full_batch_loss(loss_type):
    g = torch.Generator().manual_seed(0)
    token_loss = torch.rand(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).long()
    mask[3] = 0  # an empty completion must not divide by zero
    full = aggregate_loss(token_loss, mask, loss_type, 6, int(mask.sum()), 5)
    parts = sum(aggregate_loss(token_loss[i:i + 2], mask[i:i + 2], loss_type, 6, int(mask.sum()), 5) for i in (0, 2, 4))
    assert parts.item() == pytest.approx(full.item(), abs=1e-6)


def test_completion_mask_stops_after_first_eos():
    eos = [9, 7]
    ids = torch.tensor([[1, 2, 9, 3, 9], [7, 0, 0, 0, 0], [1, 2, 3, 4, 5], [1, 2, 3, 4, 7]])
    mask, truncated = completion_mask(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True, False]


@pytest.mark.parametrize("overrides, message", [
    (dict(num_generations=1), "--num_generations must be >= 2"),
    (dict(prompts_per_step=0), "--prompts_per_step must be >= 1"),
    (dict(temperature=0.0), "--temperature must be >= 0.001"),
    (dict(loss_type="ppo"), "unknown --loss_type 'ppo'"),
    (dict(scale_rewards="max"), "unknown --scale_rewards"),
    (dict(task="chess"), "unknown --task 'chess'"),
    (dict(beta=-0.1), "--beta must be >= 0"),
    (dict(num_iterations=0), "--num_iterations must be >= 1"),
    (dict(max_completion_length=0), "lengths must be >= 1"),
    (dict(eval_size=0), "eval_size >= 1"),
])
def test_bad_arguments_fail_with_one_clear_line(overrides, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(Args(**overrides))
    validate(Args())  # the defaults are valid
