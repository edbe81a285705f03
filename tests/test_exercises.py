"""exercises/: every check passes on the project's own functions, fails on every shipped stub (naming
the function), passes once the exercise holds a correct solution, and catches a plausible wrong
solution of each method (the mutants below, patched into the exercise module); the command line."""

import collections
import importlib
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import cppo
import d3s
import dgg
import dppo
import gvm_raft
import pods
from exercises import check
from tests.helpers import ROOT

STUBS = dict(pods="select_max_variance", cppo="prune_completions", dppo="completion_weights",
             d3s="select_max_variance", gvm_raft="allocate_budget", dgg="GradientGate.should_drop")
SOLUTIONS = dict(pods=["select_max_variance"], cppo=["prune_completions"], dppo=["completion_weights"],
                 d3s=["select_max_variance", "select_rollouts", "token_keep_mask"], gvm_raft=["allocate_budget"],
                 dgg=["GradientGate"])


def run(capsys, *argv):
    code = check.main(list(argv))
    return code, capsys.readouterr().out


def solve(monkeypatch, method):
    """The exercise module, filled in with the project's own functions: a correct solution."""
    exercise, reference = importlib.import_module(f"exercises.{method}"), importlib.import_module(method)
    for name in SOLUTIONS[method]:
        monkeypatch.setattr(exercise, name, getattr(reference, name))
    return exercise


def test_every_reference_passes(capsys):
    code, out = run(capsys, "--all", "--reference")
    assert code == 0 and out.count("cases pass") == 6, out


@pytest.mark.parametrize("method", check.METHODS)
def test_every_stub_fails_and_names_its_function(method, capsys):
    code, out = run(capsys, method)
    assert code == 1 and out == f"{method}: not implemented yet: {STUBS[method]}\n"


@pytest.mark.parametrize("method", check.METHODS)
def test_a_correct_solution_passes(method, monkeypatch, capsys):
    solve(monkeypatch, method)
    code, out = run(capsys, method)
    assert code == 0 and out.startswith(f"{method}: all ") and out.endswith(f"cases pass (exercises/{method}.py)\n")


# ---------------------------------------------------------------- plausible wrong solutions

def pods_max_reward(rewards, num_keep, rule="max_variance"):
    """Keeps the best rewards, not the most varied ones."""
    return pods.select_max_variance(rewards, num_keep, "max_reward")


def pods_ties_to_the_higher_index(rewards, num_keep, rule="max_variance"):
    """An optimal subset, but ties go to the higher index (the spec's stable sort reversed)."""
    n = rewards.numel()
    return (n - 1 - pods.select_max_variance(rewards.flip(0), num_keep, rule)).flip(0)


def cppo_always_global(advantages, prune_rate, group_size=None):
    """Ignores group_size: prunes across the step when each group should keep its share."""
    return cppo.prune_completions(advantages, prune_rate)


def cppo_floor_without_epsilon(advantages, prune_rate, group_size=None):
    """floor(N P) computed as int(N * P): 50 * 0.58 = 28.999... prunes 28, not 29."""
    if group_size is not None:
        return cppo.prune_completions(advantages, prune_rate, group_size)
    keep = advantages.numel() - int(advantages.numel() * prune_rate)
    return torch.sort(advantages.abs(), descending=True, stable=True).indices[:keep].sort().values


def dppo_coin_against_rate(advantages, rate, group_size, pool_fraction=0.75, generator=None):
    """Flips each pool member's coin against r instead of q = r n / pool size, yet weights survivors
    1 / (1 - q): every draw looks right (weights 0 or 1 / (1 - q)), the expectation is not 1."""
    a = advantages.abs().view(-1, group_size)
    weights, size = torch.ones_like(a), math.ceil(pool_fraction * group_size - 1e-9)
    if rate == 0 or a.numel() == 0:
        return weights.view(-1)
    q = rate * group_size / size
    pool = torch.sort(a, dim=1, stable=True).indices[:, :size]
    keep = torch.rand(pool.shape, generator=generator) >= rate
    return weights.scatter_(1, pool, keep.float() / (1 - q)).view(-1)


def dppo_other_coins(advantages, rate, group_size, pool_fraction=0.75, generator=None):
    """Unbiased, but draws one extra number first: the same seed no longer gives the same coins."""
    if rate > 0:
        torch.rand(1, generator=generator)
    return dppo.completion_weights(advantages, rate, group_size, pool_fraction, generator)


def d3s_cross_within_groups(advantages, num_generations, keep_ratio, scope):
    """Always selects inside each group, even when the whole step ("cross") is asked."""
    return d3s.select_rollouts(advantages, num_generations, keep_ratio, "intra")


def d3s_entropy_only(advantages, entropy, completion_mask, keep_ratio):
    """Ranks tokens by entropy alone, forgetting |A|."""
    return d3s.token_keep_mask(torch.ones_like(advantages), entropy, completion_mask, keep_ratio)


def gvm_cap_without_respread(grad_norms, accept_rates, budget, alpha=1e-3, beta=2.0, max_per_prompt=None,
                             zero_allocation="uniform"):
    """Clips every count at the cap but never spreads the excess again: the budget is not spent."""
    counts = gvm_raft.allocate_budget(grad_norms, accept_rates, budget, alpha, beta, None, zero_allocation)
    return counts.clamp(max=max_per_prompt or budget)


class Gate:
    """A gate written from the exercise's spec, with one hook, `scored`: when an increment is scored."""

    def __init__(self, window, tau, statistic="norm", scope="per_pass"):
        self.window, self.tau, self.energy, self.shared = window, tau, statistic == "energy", scope == "shared"
        self.prev, self.windows = None, {}

    def scored(self, past):
        return len(past) == self.window

    def should_drop(self, grad_norm, pass_index):
        s = grad_norm ** 2 if self.energy else grad_norm
        prev, self.prev = self.prev, (s if math.isfinite(s) else None)
        if pass_index == 1 or prev is None or self.prev is None:
            return False
        past = self.windows.setdefault(0 if self.shared else pass_index, collections.deque(maxlen=self.window))
        z = (s - prev - np.mean(past)) / (np.std(past) + 1e-8) if self.scored(past) else None
        past.append(s - prev)
        return z is not None and z > self.tau


class EarlyGate(Gate):
    """Fires before the window is full: scores as soon as two increments give a spread."""

    def scored(self, past):
        return len(past) >= 2


def test_the_gate_the_mutant_is_made_from_passes(monkeypatch, capsys):
    monkeypatch.setattr(importlib.import_module("exercises.dgg"), "GradientGate", Gate)
    code, out = run(capsys, "dgg")
    assert code == 0, out


@pytest.mark.parametrize("method, name, mutant, caught", [
    ("pods", "select_max_variance", pods_max_reward, "expected: tensor([0, 4, 6, 7])"),
    ("pods", "select_max_variance", pods_ties_to_the_higher_index, "got:      tensor([1, 2, 4, 5])"),
    ("cppo", "prune_completions", cppo_always_global, "per group: two of each"),
    ("cppo", "prune_completions", cppo_floor_without_epsilon, "floor(50 x 0.58) = 29"),
    ("dppo", "completion_weights", dppo_coin_against_rate, "every completion's expected weight is 1"),
    ("dppo", "completion_weights", dppo_other_coins, "the reference's weights from the same generator"),
    ("d3s", "select_rollouts", d3s_cross_within_groups, "select_rollouts, hand-picked case: the 3 largest"),
    ("d3s", "token_keep_mask", d3s_entropy_only, "token_keep_mask, hand-picked case: A = 0 scores 0"),
    ("gvm_raft", "allocate_budget", gvm_cap_without_respread, "the excess over the cap is re-spread"),
    ("dgg", "GradientGate", EarlyGate, "the window must be full"),
], ids=lambda x: x.__name__ if callable(x) else None)
def test_the_checks_catch_a_wrong_solution(method, name, mutant, caught, monkeypatch, capsys):
    monkeypatch.setattr(solve(monkeypatch, method), name, mutant)
    code, out = run(capsys, method)
    assert code == 1 and out.startswith(f"{method}: FAIL (exercises/{method}.py) in ") and caught in out, out
    assert "\n  expected: " in out and "\n  got:      " in out


# ---------------------------------------------------------------- the command line

def test_a_bug_in_the_solution_is_a_failed_case_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(solve(monkeypatch, "cppo"), "prune_completions", lambda advantages, *rest: advantages[99])
    code, out = run(capsys, "cppo")
    assert code == 1 and "got:      raised IndexError: index 99 is out of bounds" in out and "tests/test_exercises.py" in out


def test_the_command_line(capsys):
    bad = subprocess.run([sys.executable, "-m", "exercises.check", "ppo"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == "error: unknown method 'ppo' (valid: pods, cppo, dppo, d3s, gvm_raft, dgg)\n"
    with pytest.raises(SystemExit, match="^error: name one method"):
        check.main([])
    code, out = run(capsys, "--all")  # the exercises as shipped
    assert code == 1 and out.count(": not implemented yet: ") == 6
