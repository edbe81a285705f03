"""Check an exercise: python -m exercises.check <method> [--reference], or --all [--reference].

Each method's checks call its function on hand-picked edge cases (the expected answers are written
below), then on seeded random cases: against brute force, against properties the method must have,
and against the project's own implementation, imported from the top-level script. The first case
that fails is printed with its inputs, what was expected and what came back, and the exit status is
1 until every case passes. --reference runs the same checks on the project's own functions.
"""

import argparse
import importlib
import itertools
import math
import os
import sys
import traceback

import numpy as np
import torch

METHODS = ("pods", "cppo", "dppo", "d3s", "gvm_raft", "dgg")
HERE = os.path.dirname(os.path.abspath(__file__))


class Failed(Exception):
    """The first failing case, written out for the reader."""


class Unfinished(Exception):
    """A stub in exercises/ still raises NotImplementedError; the message names it."""


class Raised:
    """The result of a call that raised: it matches no expected value, and says what and where."""

    def __init__(self, error):
        where = traceback.extract_tb(error.__traceback__)[-1]
        self.text = f"raised {type(error).__name__}: {error} ({os.path.relpath(where.filename)}, line {where.lineno})"

    def __repr__(self):
        return self.text


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs); a bug in the code under test becomes a failed case, not a crash of the checker."""
    try:
        return fn(*args, **kwargs)
    except Exception as error:
        tb = error.__traceback__
        while tb.tb_next:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        if isinstance(error, NotImplementedError) and os.path.dirname(os.path.abspath(code.co_filename)) == HERE:
            raise Unfinished(getattr(code, "co_qualname", code.co_name)) from None
        return Raised(error)


def same(expected, got) -> bool:
    """Equal values; a tensor must match in shape and kind (long and bool exactly, floats to 1e-6)."""
    if not isinstance(expected, torch.Tensor):
        try:
            return bool(got == expected)
        except Exception:  # e.g. an array where a list of bools was expected
            return False
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return False
    if expected.is_floating_point():
        return got.is_floating_point() and torch.allclose(got.double(), expected.double(), rtol=1e-6, atol=1e-6)
    return got.dtype == expected.dtype and torch.equal(got, expected)


def show(value) -> str:
    """A value as a failure report prints it: a sentence as it is, else its repr; long ones indented."""
    return (value if isinstance(value, str) else repr(value)).replace("\n", "\n    ")


class Checker:
    def __init__(self):
        self.count = 0

    def expect(self, function, case, inputs, expected, got, ok=None, note=""):
        """One case. `expected` is a value (compared with `same`) or, with `ok` given, a sentence."""
        self.count += 1
        if ok is None:
            ok = same(expected, got)
        if not ok or isinstance(got, Raised):
            lines = [f"{function}, {case}"] + [f"  {name} = {show(repr(value))}" for name, value in inputs.items()]
            raise Failed("\n".join(lines + [f"  expected: {show(expected)}", f"  got:      {show(got)} {note}".rstrip()]))


def is_subset(got, n, m) -> bool:
    """m distinct indices of range(n), ascending, as a 1-D torch.long tensor."""
    return (isinstance(got, torch.Tensor) and got.dtype == torch.long and got.dim() == 1 and len(got) == m
            and bool((got[1:] > got[:-1]).all()) and (m == 0 or (0 <= int(got[0]) and int(got[-1]) < n)))


def random_values(rng, n, levels):
    """n values: half the time from a few levels (many ties), else continuous, rounded to print exactly."""
    values = rng.choice(levels, n) if rng.random() < 0.5 else rng.normal(size=n).round(2)
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- PODS and D3S: max-variance subsets

def check_max_variance(c, fn, ref_fn, name, rng, levels):
    """Random groups of n <= 10: the variance is the best of all C(n, m) subsets, and the subset is the reference's."""
    for i in range(150):
        n = int(rng.integers(2, 11))
        m = int(rng.integers(2, n + 1))
        values = random_values(rng, n, levels)
        inputs = dict(values=values, num_keep=m)
        got = call(fn, values, m)
        v = values.double().numpy()
        best = float(v[np.array(list(itertools.combinations(range(n), m)))].var(axis=1).max())
        valid = is_subset(got, n, m)
        mine = float(v[got.numpy()].var()) if valid else math.nan
        c.expect(name, f"random case {i}: a largest-variance subset (brute force over all subsets)", inputs,
                 f"{m} distinct indices, ascending, with population variance {best:.6g}", got,
                 ok=valid and abs(mine - best) <= 1e-9, note=f"(variance {mine:.6g})" if valid else "")
        c.expect(name, f"random case {i}: the reference's subset (ties: steps 1 and 4)", inputs, ref_fn(values, m), got)


def check_pods(c, mod, ref):
    fn = mod.select_max_variance
    for rewards, m, rule, expected, why in [
        ([1, 0, 0, 0, 1, 1, 0, 0], 4, "max_variance", [0, 4, 6, 7], "two ones and two zeros (k = 2)"),
        ([0.9, 0.1, 0.5, 0.3, 0.7, 0.2], 3, "max_variance", [0, 1, 5], "the largest with the two smallest (k = 1)"),
        ([1.1, 0.1, 1.2, 0.0, 0.1, 1.1], 4, "max_variance", [0, 2, 3, 4], "k = 2 with near-ties"),
        ([1, 1, 1, 1], 2, "max_variance", [0, 1], "all equal: C_m is visited first and never beaten"),
        ([1, 0, 0, 0, 0, 0, 0, 0], 4, "max_variance", [0, 1, 2, 3], "every k >= 1 ties: C_m wins"),
        ([1] * 3 + [0] * 13, 8, "max_variance", list(range(8)), "3 right of 16: every success is kept"),
        ([0.3, 0.9, 0.1, 0.5], 4, "max_variance", [0, 1, 2, 3], "m = n keeps everything"),
        ([0.3, 0.9, 0.1, 0.5], 2, "max_reward", [1, 3], "the max_reward ablation"),
        ([1, 0, 1, 1], 2, "max_reward", [0, 2], "max_reward, ties: the lower index"),
    ]:
        r = torch.tensor(rewards, dtype=torch.float32)
        c.expect("select_max_variance", f"hand-picked case: {why}", dict(rewards=r, num_keep=m, rule=rule),
                 torch.tensor(expected), call(fn, r, m, rule))
    torch.manual_seed(0)
    draws = [call(fn, torch.zeros(6), 3, "random") for _ in range(20)]
    c.expect("select_max_variance", "rule 'random', 20 calls", dict(rewards=torch.zeros(6), num_keep=3),
             "3 distinct indices in ascending order each time, not always the same", draws[0],
             ok=all(is_subset(d, 6, 3) for d in draws) and len({tuple(d.tolist()) for d in draws}) > 1)
    check_max_variance(c, lambda v, m: fn(v, m), ref.select_max_variance, "select_max_variance",
                       np.random.default_rng(0), [0.0, 0.1, 1.0, 1.1])


def check_d3s(c, mod, ref):
    a = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, -1.5])
    c.expect("select_max_variance", "hand-picked case: a zero-variance group never helps", dict(values=a, num_keep=4),
             torch.tensor([0, 3, 8, 11]), call(mod.select_max_variance, a, 4))
    rng = np.random.default_rng(1)
    levels = [-1.5, -0.5, 0.0, 0.5, 1.5]
    check_max_variance(c, mod.select_max_variance, ref.select_max_variance, "select_max_variance", rng, levels)

    a = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.5, 0.5, -1.5, 0.5, 0, 0, 0, 0])
    for ratio, scope, expected, why in [(0.5, "cross", [0, 2, 3, 4, 5, 6], "the 3 largest + the 3 smallest"),
                                        (0.5, "intra", [0, 1, 6, 7, 8, 9], "2 of every group"),
                                        (1.0, "intra", list(range(12)), "ratio 1 keeps everything"),
                                        (0.01, "cross", [0, 6], "never fewer than 2")]:
        c.expect("select_rollouts", f"hand-picked case: {why}", dict(advantages=a, num_generations=4, keep_ratio=ratio,
                 scope=scope), torch.tensor(expected), call(mod.select_rollouts, a, 4, ratio, scope))
    for i in range(100):
        G, groups, scope = int(rng.integers(2, 7)), int(rng.integers(1, 4)), str(rng.choice(["cross", "intra"]))
        ratio = float(rng.choice([0.01, 0.25, 0.5, 0.7, 1.0, round(rng.uniform(0.05, 1), 2)]))
        a = random_values(rng, G * groups, levels)
        c.expect("select_rollouts", f"random case {i}: the reference's rollouts",
                 dict(advantages=a, num_generations=G, keep_ratio=ratio, scope=scope),
                 ref.select_rollouts(a, G, ratio, scope), call(mod.select_rollouts, a, G, ratio, scope))

    for adv, ent, mask, ratio, expected, why in [
        ([1.2, 1.2, 1.2, -0.8, -0.8], [[0.1], [2.0], [0.5], [1.5], [0.05]], [[1]] * 5, 0.4,
         [[False], [True], [False], [True], [False]], "the top 2 of 5 scores"),
        ([0.0, 2.0], [[2.0, 1.0], [0.5, 0.4]], [[1, 1], [1, 1]], 0.5,
         [[False, False], [True, True]], "A = 0 scores 0, however high the entropy"),
        ([1.0, 2.0], [[1.0, 1.0, 9.0], [0.5, 0.5, 0.5]], [[1, 1, 0], [1, 1, 1]], 0.6,
         [[True, True, False], [True, False, False]], "padding is never kept; equal scores by position"),
        ([1.0, 2.0], [[1.0, 1.0, 9.0], [0.5, 0.5, 0.5]], [[1, 1, 0], [1, 1, 1]], 1.0,
         [[True, True, False], [True, True, True]], "ratio 1 keeps every real token"),
        ([1.0, 2.0], [[1.0, 1.0, 9.0], [0.5, 0.5, 0.5]], [[1, 1, 0], [1, 1, 1]], 0.01,
         [[True, False, False], [False, False, False]], "never an empty loss"),
    ]:
        adv, ent, mask = torch.tensor(adv), torch.tensor(ent), torch.tensor(mask)
        c.expect("token_keep_mask", f"hand-picked case: {why}",
                 dict(advantages=adv, entropy=ent, completion_mask=mask, keep_ratio=ratio),
                 torch.tensor(expected), call(mod.token_keep_mask, adv, ent, mask, ratio))
    for i in range(100):
        B, L = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        adv = torch.tensor(rng.choice([0.0, 0.5, -0.5, 1.5], B), dtype=torch.float32)
        ent = torch.tensor(rng.choice([0.0, 0.25, 0.5, 1.0, 2.0], (B, L)), dtype=torch.float32)
        mask = (torch.arange(L) < torch.tensor(rng.integers(1, L + 1, B)).unsqueeze(1)).long()  # tokens, then padding
        ratio = float(rng.choice([0.01, 0.2, 0.5, 0.75, 1.0, round(rng.uniform(0.05, 1), 2)]))
        inputs = dict(advantages=adv, entropy=ent, completion_mask=mask, keep_ratio=ratio)
        got = call(mod.token_keep_mask, adv, ent, mask, ratio)
        real, score = int(mask.sum()), adv.abs().unsqueeze(1) * ent
        K = real if ratio >= 1 else max(1, int(ratio * real + 1e-9))
        ok = (isinstance(got, torch.Tensor) and got.dtype == torch.bool and got.shape == mask.shape
              and int(got.sum()) == K and not (got & (mask == 0)).any())
        ok = ok and (K == real or score[got].min() >= score[~got & (mask == 1)].max())
        c.expect("token_keep_mask", f"random case {i}: K real tokens whose scores beat every token left out", inputs,
                 f"a {B} x {L} bool mask of {K} real tokens, none scoring below a dropped one", got, ok=ok)
        c.expect("token_keep_mask", f"random case {i}: the reference's mask (ties: row-major order)", inputs,
                 ref.token_keep_mask(adv, ent, mask, ratio), got)


# ---------------------------------------------------------------- CPPO

def check_cppo(c, mod, ref):
    fn = mod.prune_completions
    a = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, -1.5])
    one_group = torch.tensor([1.2, -0.7, -0.7, -0.7, 1.2, 1.2, -0.7, -0.7])
    for adv, rate, G, expected, why in [
        (a, 0.5, None, [0, 1, 2, 7], "global: both |A| = 1.5, then the first ties"),
        (a, 0.5, 4, [0, 1, 4, 7], "per group: two of each"),
        (one_group, 0.5, None, [0, 1, 4, 5], "the three successes and the first failure"),
        (one_group, 0.75, None, [0, 4], "two of the three successes"),
        (one_group, 0.875, None, [0], "one survivor"),
        (torch.zeros(10), 0.7, None, [0, 1, 2], "floor(10 x 0.7) = 7 pruned"),
        (torch.zeros(50), 0.58, None, list(range(21)), "floor(50 x 0.58) = 29, though 50 * 0.58 = 28.999..."),
        (torch.zeros(100), 0.58, 50, list(range(21)) + list(range(50, 71)), "the same floor in every group"),
        (torch.zeros(5), 0.5, None, [0, 1, 2], "all |A| equal: the lowest indices survive"),
        (torch.ones(4), 0.0, None, [0, 1, 2, 3], "rate 0 keeps everything"),
        (torch.tensor([0.1]), 0.9, None, [0], "something always survives"),
    ]:
        c.expect("prune_completions", f"hand-picked case: {why}", dict(advantages=adv, prune_rate=rate, group_size=G),
                 torch.tensor(expected), call(fn, adv, rate, G))
    rng = np.random.default_rng(2)
    for i in range(200):
        G, groups = int(rng.integers(1, 9)), int(rng.integers(1, 6))
        rate = float(rng.choice([0.0, 0.25, 0.5, 0.7, 0.75, 0.875, 0.9375, round(rng.uniform(0, 0.99), 2)]))
        adv = random_values(rng, G * groups, [0.0, 0.5, -0.5, 1.5])
        size = G if rng.random() < 0.5 else None
        inputs = dict(advantages=adv, prune_rate=rate, group_size=size)
        got = call(fn, adv, rate, size)
        block = size or len(adv)
        keep = block - int(block * rate + 1e-9)
        ok = is_subset(got, len(adv), keep * (len(adv) // block))
        if ok:  # in every block, no kept |A| below a pruned one
            kept = torch.zeros(len(adv), dtype=torch.bool).index_fill_(0, got, True).view(-1, block)
            scores = adv.abs().view(-1, block)
            ok = all(kept[b].all() or scores[b][kept[b]].min() >= scores[b][~kept[b]].max() for b in range(len(kept)))
        c.expect("prune_completions", f"random case {i}: {keep} of every {block} kept, the largest |A|", inputs,
                 f"{keep} ascending indices per block of {block}, no kept |A| below a pruned one", got, ok=ok)
        c.expect("prune_completions", f"random case {i}: the reference's survivors (ties: the lower index)", inputs,
                 ref.prune_completions(adv, rate, size), got)


# ---------------------------------------------------------------- DPPO

def check_dppo(c, mod, ref):
    fn = mod.completion_weights
    gen = torch.Generator().manual_seed(0)
    for adv, G in [(torch.randn(8, generator=gen), 4), (torch.randn(6, generator=gen), 6), (torch.zeros(0), 4)]:
        state = gen.get_state()
        got = call(fn, adv, 0.0, G, 0.75, gen)
        c.expect("completion_weights", "rate 0: all ones, and no random number drawn",
                 dict(advantages=adv, rate=0.0, group_size=G), torch.ones(len(adv)), got,
                 ok=same(torch.ones(len(adv)), got) and torch.equal(gen.get_state(), state))
    adv = torch.tensor([2.0, -0.1, 0.0, 1.5, -3.0, 0.2, 0.05, -1.0])
    for x, G, outside, why in [(adv, 4, [0, 4], "the pool is the 3 smallest |A| of each group; q = 0.8"),
                               (adv, 8, [0, 4], "scope step: the pool is the 6 smallest |A| of all 8; q = 0.8"),
                               (torch.zeros(4), 4, [3], "ties (all |A| equal): the pool is the first 3")]:
        draws = [call(fn, x, 0.6, G, 0.75, gen) for _ in range(100)]
        pool = [j for j in range(len(x)) if j not in outside]
        ok = all(isinstance(w, torch.Tensor) and w.shape == x.shape for w in draws)
        ok = ok and all(w[outside].eq(1).all() and (w[pool].eq(0) | w[pool].sub(5).abs().lt(1e-6)).all() for w in draws)
        ok = ok and all(any(w[j] == 0 for w in draws) and any(w[j] > 0 for w in draws) for j in pool)
        c.expect("completion_weights", f"hand-picked case, 100 draws: {why}",
                 dict(advantages=x, rate=0.6, group_size=G, pool_fraction=0.75),
                 f"weight 1 at {outside}; 0 or 1 / (1 - 0.8) = 5 elsewhere, both seen", draws[0], ok=ok)
    for rate, G, pool in [(0.5, 8, 0.75), (0.5, 5, 0.75), (0.3, 8, 1.0), (0.7, 4, 0.8), (0.2, 3, 0.5)]:
        x = torch.randn(2 * G, generator=gen).round(decimals=2)
        draws = [call(fn, x, rate, G, pool, gen) for _ in range(1000)]
        inputs = dict(advantages=x, rate=rate, group_size=G, pool_fraction=pool)
        shaped = all(isinstance(d, torch.Tensor) and d.shape == x.shape for d in draws)
        w = torch.stack(draws).double() if shaped else None
        mean, err = (w.mean(0), 5 * w.std(0) / 1000 ** 0.5) if w is not None else (draws[0], None)
        c.expect("completion_weights", "1000 draws: every completion's expected weight is 1 (an unbiased loss)", inputs,
                 "the mean weight of every completion within 5 standard errors of 1", mean, note="(the mean weights)",
                 ok=w is not None and bool(((mean - 1).abs() <= err + 1e-9).all()))
        frac, err = (w == 0).double().mean(1), 5 * (w == 0).double().mean(1).std() / 1000 ** 0.5
        c.expect("completion_weights", "1000 draws: the expected pruned fraction is the rate", inputs,
                 f"a mean pruned fraction of {rate} within {float(err):.3g}", f"{float(frac.mean()):.4f}",
                 ok=abs(float(frac.mean()) - rate) <= err + 1e-9)
    rng = np.random.default_rng(3)
    for i in range(100):
        G, groups = int(rng.integers(2, 11)), int(rng.integers(1, 4))
        pool = float(rng.choice([0.5, 0.7, 0.75, 0.8, 1.0]))
        rate = float(rng.choice([0.0, math.floor(rng.uniform(0, pool) * 100) / 100]))  # below the pool
        x = random_values(rng, G * groups, [0.0, 0.5, -0.5, 1.5])
        inputs = dict(advantages=x, rate=rate, group_size=G, pool_fraction=pool,
                      generator=f"torch.Generator().manual_seed({i})")
        c.expect("completion_weights", f"random case {i}: the reference's weights from the same generator (step 3)",
                 inputs, ref.completion_weights(x, rate, G, pool, torch.Generator().manual_seed(i)),
                 call(fn, x, rate, G, pool, torch.Generator().manual_seed(i)))


# ---------------------------------------------------------------- GVM

def check_gvm_raft(c, mod, ref):
    fn = mod.allocate_budget
    for g, p, budget, kwargs, expected, why in [
        ([2.0, 1.0, 1.0, 3.0], [0.5, 0.125, 1.0, 0.0], 32, {}, [14, 13, 5, 0], "p = 0 gets nothing, however large G"),
        ([1.0, 1.0, 1.0], [0.125, 0.5, 1.0], 24, {}, [13, 6, 5], "shares 12.77, 6.57, 4.66: the largest remainders"),
        ([1.0, 1.0], [0.01, 0.25], 16, {}, [10, 6], "alpha tames a nearly impossible prompt"),
        ([0.0, 0.0, 0.0], [0.0, 0.5, 1.0], 9, {}, [3, 3, 3], "every weight 0: uniform"),
        ([5.0, 1.0], [0.5, 0.5], 10, dict(max_per_prompt=6), [6, 4], "the excess over the cap is re-spread"),
        ([5.0, 0.0], [0.5, 0.5], 10, dict(max_per_prompt=6), [6, 4], "... even to a zero weight"),
        ([1.0], [0.5], 7, {}, [7], "one prompt takes it all"),
        ([1.0, 2.0], [0.5, 0.5], 0, {}, [0, 0], "budget 0"),
        ([0.0, 2.0], [0.0, 0.0], 8, dict(zero_allocation="skip"), [0, 0], "skip: no weight anywhere, no sample"),
        ([0.0, 2.0], [0.0, 0.5], 8, dict(zero_allocation="skip"), [0, 8], "skip only when every weight is 0"),
    ]:
        c.expect("allocate_budget", f"hand-picked case: {why}",
                 dict(grad_norms=g, accept_rates=p, budget=budget, **kwargs),
                 torch.tensor(expected), call(fn, g, p, budget, **kwargs))
    rng = np.random.default_rng(4)
    for i in range(200):
        k = int(rng.integers(1, 12))
        g = torch.tensor((rng.exponential(size=k) * (rng.random(k) < 0.8)).round(2), dtype=torch.float64)
        p = torch.tensor(rng.choice([0.0, 0.125, 0.25, 0.5, 0.75, 1.0], k), dtype=torch.float64)
        cap = int(rng.choice([0, 3, 8, 24]))
        budget = int(rng.integers(0, (cap or 30) * k + 1))
        kwargs = dict(max_per_prompt=cap or None, zero_allocation=str(rng.choice(["uniform", "skip"])))
        inputs = dict(grad_norms=g, accept_rates=p, budget=budget, **kwargs)
        got = call(fn, g, p, budget, **kwargs)
        signal = (g > 0) & (p > 0)
        skipped = not signal.any() and kwargs["zero_allocation"] == "skip"
        ok = isinstance(got, torch.Tensor) and got.dtype == torch.long and got.shape == (k,) and bool((got >= 0).all())
        ok = ok and int(got.sum()) == (0 if skipped else budget) and (not cap or bool((got <= cap).all()))
        if ok and signal.any() and (not cap or cap * int(signal.sum()) >= budget):
            ok = not got[~signal].any()  # the prompts with signal can take the whole budget
        c.expect("allocate_budget", f"random case {i}: the budget spent exactly, under the cap, where there is signal",
                 inputs, f"{k} counts >= 0 summing to {0 if skipped else budget}, none above the cap, 0 where G p = 0 "
                 "if the others can take the budget", got, ok=ok)
        c.expect("allocate_budget", f"random case {i}: the reference's counts (remainder ties: the lower index)",
                 inputs, ref.allocate_budget(g, p, budget, **kwargs), got)


# ---------------------------------------------------------------- DGG

def feed(gate, batches):
    """Each batch is its passes' gradient norms; returns what the gate said at every pass."""
    return [[call(gate.should_drop, g, k) for k, g in enumerate(norms, 1)] for norms in batches]


def increments(xs, start=1.0):
    """Two-pass batches whose pass-2 increment is each of xs (pass 1 wanders from batch to batch)."""
    return [[start + 7 * i, start + 7 * i + x] for i, x in enumerate(xs)]


def check_dgg(c, mod, ref):
    nan, inf = math.nan, math.inf
    window = [0.10, -0.10, 0.05, 0.00]
    for config, batches, expected, why in [
        (dict(window=4, tau=0.5), increments(window), [False, False], "the window fills up: nothing is scored yet"),
        (dict(window=4, tau=0.5), increments(window) + [[2.0, 2.5]], [False, True], "z = 6.59 > 0.5: drop"),
        (dict(window=4, tau=0.5), increments(window) + [[2.0, 2.05]], [False, True], "z = 0.507 > 0.5: drop"),
        (dict(window=4, tau=1.0), increments(window) + [[2.0, 2.05]], [False, False], "z = 0.507 <= 1: keep"),
        (dict(window=3, tau=0.5), [[1.0, 1.1], [1.0, 1.2], [1.0, 5.0]], [False, False], "the window must be full"),
        (dict(window=3, tau=0.5), [[1.0, 100.0], [1.0, 1.1], [1.0, 1.2], [1e9, 1e9 + 1e6]], [False, True],
         "pass 1 only remembers its norm, pass 2 is scored"),
        (dict(window=2, tau=0.5), [[1.0, 1.1], [5.0, 5.1], [0.2, 0.3], [100.0, 100.1]], [False, False],
         "the jumps between batches (pass 1) never enter a window"),
        (dict(window=2, tau=0.5), increments([0.0, 0.2]) + [[3.0, 3.5], [4.0, 4.4, 4.4]], [False, False, False],
         "a fired increment joins its window (else 0.4 would score 3.0)"),
        (dict(window=4, tau=0.5, scope="shared"), [[1.0, 0.9, 0.88], [1.0, 0.88, 0.86], [1.0, 0.89, 0.87]],
         [False, False, True], "shared: passes 2 and 3 in one window"),
        (dict(window=4, tau=0.5), [[1.0, 0.9, 0.88], [1.0, 0.88, 0.86]] * 2 + [[1.0, 0.89, 0.87]],
         [False, False, False], "per_pass: each pass against its own window"),
        (dict(window=2, tau=1.2, statistic="energy"), [[1.0, 2.0], [3.0, 1.0], [2.0, 3.0]], [False, True],
         "energy: increments of g^2 (3, -8, then 5: z = 1.36)"),
        (dict(window=2, tau=1.2), [[1.0, 2.0], [3.0, 1.0], [2.0, 3.0]], [False, False],
         "norm: the same passes score z = 1.0"),
        (dict(window=3, tau=0.5), increments([0.5] * 3) + [[5.0, 5.5]], [False, False], "constant increments: z = 0"),
        (dict(window=3, tau=0.5), increments([0.5] * 3) + [[5.0, 5.75]], [False, True], "std 0: z = 0.25 / 1e-8"),
        (dict(window=2, tau=inf), increments([0.0, 0.1, 1e9, -1e9]), [False, False], "tau = inf never fires"),
        (dict(window=2, tau=0.5, scope="shared"), [[1.0, 1.1], [1.0, 1.1], [1.0, nan, 5.0]], [False, False, False],
         "no increment touches a nan pass"),
        (dict(window=2, tau=0.5, scope="shared"), [[1.0, 1.1], [1.0, 1.1], [1.0, nan, 5.0], [1.0, 3.0]], [False, True],
         "nor enters the window"),
        (dict(window=2, tau=0.5), [[1.0, 1.1], [1.0, 1.1], [1.0, inf, 5.0, 5.1], [1.0, 3.0]], [False, True],
         "inf breaks the chain too"),
    ]:
        got = feed(mod.GradientGate(**config), batches)
        c.expect("GradientGate.should_drop", f"hand-picked case: {why} (the decisions at the last batch's passes)",
                 dict(config=config, batches=batches), expected, got[-1])
    rng = np.random.default_rng(5)
    for i in range(60):
        config = dict(window=int(rng.choice([2, 3, 5])), tau=float(rng.choice([0.0, 0.5, 1.0, 2.0, inf])),
                      statistic=str(rng.choice(["norm", "energy"])), scope=str(rng.choice(["per_pass", "shared"])))
        batches = []
        for _ in range(25):
            g, passes = float(rng.uniform(0.5, 2.0)), []
            for _ in range(int(rng.integers(1, 5))):
                g *= 3.0 if rng.random() < 0.1 else float(rng.uniform(0.85, 1.05))  # a spike now and then
                passes.append(round(g, 3) if rng.random() > 0.03 else float(rng.choice([nan, inf])))
            batches.append(passes)
        got, expected = feed(mod.GradientGate(**config), batches), feed(ref.GradientGate(**config), batches)
        b = next((b for b in range(len(batches)) if got[b] != expected[b]), len(batches) - 1)  # the first difference
        c.expect("GradientGate.should_drop", f"random case {i}: the reference's decisions at the last batch's passes",
                 dict(config=config, batches=batches[:b + 1]), expected[b], got[b])


CHECKS = dict(pods=check_pods, cppo=check_cppo, dppo=check_dppo, d3s=check_d3s, gvm_raft=check_gvm_raft, dgg=check_dgg)


def run(method: str, reference: bool = False) -> bool:
    """Check one method's exercise (or, with reference, the project's own code); print one result."""
    ref = importlib.import_module(method)  # the top-level script
    mod = ref if reference else importlib.import_module(f"exercises.{method}")
    where = f"{method}.py" if reference else f"exercises/{method}.py"
    c = Checker()
    try:
        CHECKS[method](c, mod, ref)
    except Unfinished as stub:
        print(f"{method}: not implemented yet: {stub}")
        return False
    except Failed as failure:
        print(f"{method}: FAIL ({where}) in {failure}")
        return False
    print(f"{method}: all {c.count} cases pass ({where})")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exercises.check", description=__doc__.splitlines()[0])
    parser.add_argument("method", nargs="?", help=", ".join(METHODS))
    parser.add_argument("--all", action="store_true", help="check all six")
    parser.add_argument("--reference", action="store_true", help="check the project's own functions instead")
    args = parser.parse_args(argv)
    if args.method is not None and args.method not in METHODS:
        raise SystemExit(f"error: unknown method {args.method!r} (valid: {', '.join(METHODS)})")
    if args.all == (args.method is not None):
        raise SystemExit(f"error: name one method ({', '.join(METHODS)}) or pass --all")
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    results = [run(method, args.reference) for method in (METHODS if args.all else [args.method])]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
