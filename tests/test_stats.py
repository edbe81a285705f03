"""benchmarks/stats.py on hand-computed values: the resolved rule, censoring and the power arithmetic, and why the
percentile-bootstrap rule that came before would fail the same checks."""

import math
import os
import sys

import numpy as np
import pytest

from tests.helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import stats  # noqa: E402


def old_rule_resolved(base, values, resamples=10_000, seed=0):
    """The rule this module replaced: a speed-up was 'resolved' when its 95% percentile-bootstrap interval (the two
    configs' seeds resampled independently, no correction for the number of comparisons) excluded 1."""
    rng = np.random.default_rng(seed)
    b, v = np.asarray(base, float), np.asarray(values, float)
    ratios = rng.choice(b, (resamples, len(b))).mean(1) / rng.choice(v, (resamples, len(v))).mean(1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return bool(lo > 1 or hi < 1)


def test_three_against_three_fully_separated_is_p_one_tenth_and_never_resolved():
    base, faster = [40.0, 44.0, 36.0], [20.0, 22.0, 18.0]
    p = stats.permutation_p(base, faster)
    assert p == pytest.approx(2 / 20)  # 20 splits of 6 seeds into 3 + 3; the observed one and its mirror
    assert not stats.resolved(p) and not stats.resolved(stats.holm([p])[0])
    assert old_rule_resolved(base, faster)  # the old rule called this resolved


def test_five_against_five_fully_separated_is_two_in_252():
    base, faster = [31.9, 35.4, 33.1, 38.4, 32.9], [25.0, 26.0, 27.0, 28.0, 29.0]
    assert stats.permutation_p(base, faster) == pytest.approx(2 / 252)
    assert stats.smallest_p(5, 5) == pytest.approx(2 / 252)
    # the smallest possible p, times a family of 18, is above 0.05: no claim can survive the correction
    assert stats.holm([2 / 252] + [0.5] * 17)[0] == pytest.approx(18 * 2 / 252) and 18 * 2 / 252 > 0.05


def test_unequal_sizes_and_overlap_count_splits_by_hand():
    # 3 vs 5, fully separated: only the observed split of C(8, 3) = 56 is as extreme (its mirror is not)
    assert stats.permutation_p([52.6, 40.7, 40.7], [31.9, 35.4, 33.1, 38.4, 32.9]) == pytest.approx(1 / 56)
    # 2 vs 2 on log values 0, 1 | 2, 3: |diff| 2; splits {0,1}|{2,3} and mirror give 2, the other four give 0 or 1
    e = math.e
    assert stats.permutation_p([1, e], [e ** 2, e ** 3]) == pytest.approx(2 / 6)
    # 2 vs 2 on log values 0, 2 | 1, 3: |diff| 1; splits with |diff| >= 1: {0,2}|{1,3}, {0,1}|{2,3} and mirrors -> 4/6
    assert stats.permutation_p([1, e ** 2], [e, e ** 3]) == pytest.approx(4 / 6)


def test_paired_sign_flip_on_a_hand_vector():
    # log differences 1, 2, 3, -0.5: sum 5.5; of the 16 sign patterns of (1, 2, 3, 0.5), |sum| >= 5.5 for
    # +1+2+3+0.5 = 6.5, +1+2+3-0.5 = 5.5 and their negations: 4 of 16
    e = math.e
    a, b = [e ** 1, e ** 2, e ** 3, e ** -0.5], [1.0, 1.0, 1.0, 1.0]
    assert stats.sign_flip_p(a, b) == pytest.approx(4 / 16)
    assert stats.sign_flip_p([2.0] * 5, [1.0] * 5) == pytest.approx(2 / 32) == stats.smallest_p(5, 5, paired=True)
    assert stats.seeds_for_family(18) == 10  # 2 / 2^10 * 18 = 0.035: ten pairs, all of one sign, can survive
    with pytest.raises(ValueError):
        stats.sign_flip_p([1.0, 2.0], [1.0])


def test_monte_carlo_beyond_the_exact_limit():
    rng = np.random.default_rng(1)
    a, b = np.exp(rng.normal(0, 0.1, 12)), np.exp(rng.normal(0.3, 0.1, 12))  # C(24, 12) = 2.7e6 splits
    p = stats.permutation_p(a, b)
    assert 0 < p < 0.001 and p >= 1 / (stats.EXACT_UP_TO + 1)  # Monte Carlo p never reaches zero


def test_holm_on_a_hand_vector():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [stats.resolved(p) for p in adj] == [True, False, False, True]
    adj = stats.holm([0.3, float("nan"), 0.02])  # an untested cell is not part of the family
    assert adj[0] == pytest.approx(0.3) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.04)
    assert stats.holm([0.9, 0.4]) == pytest.approx([0.9, 0.8])  # 0.4 * 2; then 0.9 * 1
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 * 2 capped at 1; the larger p never adjusts lower


def test_probability_of_improvement_counts_ties_and_censored_pairs_as_a_half():
    assert stats.prob_improvement([10, 20], [5, 20]) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    # other = [5 reached, 60 censored]; base = [10 reached, 30 censored at its horizon]
    # 5 vs 10: 1; 5 vs 30 (censored, 5 before its horizon): 1; 60c vs 10 (base first): 0; 60c vs 30c: 0.5
    assert stats.prob_improvement([10, 30], [5, 60], [True, False], [True, False]) == pytest.approx(2.5 / 4)
    # a reached value beyond a censored horizon is undetermined, not a win
    assert stats.prob_improvement([30], [40], [False], [True]) == 0.5


def test_censored_seeds_are_kept_in_the_median():
    # four seeds, one never reaches (horizon 60): survival 3/4 after 10, 2/4 after 20 -> median 20
    assert stats.km_median([10, 20, 60, 30], [True, True, False, True]) == 20
    assert stats.km_median([10, 60, 60, 30], [True, False, False, True]) == 30  # 3/4, then 3/4 * 2/3 = 1/2 at 30
    assert stats.km_median([10, 60, 60, 60], [True, False, False, False]) is None  # fewer than half reached
    assert stats.censored_summary([10, 20, 60, 30], [True, True, False, True]) == "3/4 reached, median 20"
    assert stats.censored_summary([10, 60, 60], [True, False, False]) == "1/3 reached, median > horizon"
    assert stats.censored_summary([12.0, 14.0], [True, True]) == "12"
    # dropping the censored seed would report the mean of the others (20): the censored median says 30
    assert np.mean([10, 30]) == 20 != stats.km_median([10, 60, 60, 30], [True, False, False, True])


def test_bootstrap_interval_resamples_indices_and_recomputes_the_statistic():
    base, other = np.array([10.0, 12.0, 14.0]), np.array([5.0, 6.0, 7.0])
    lo, hi = stats.bootstrap_interval(lambda i, j: np.mean(base[i], -1) / np.mean(other[j], -1), 3, 3, paired=False)
    assert 10 / 7 <= lo < 2 < hi <= 14 / 5  # within the extreme resamples' ratios
    lo, hi = stats.bootstrap_interval(lambda i, j: np.mean(base[i] / other[j], -1), 3, 3, paired=True)
    assert lo == pytest.approx(2) and hi == pytest.approx(2)  # paired: each pair's ratio is exactly 2
    assert all(math.isnan(x) for x in stats.bootstrap_interval(lambda i, j: i, 1, 3, paired=False))


def test_power_arithmetic_on_hand_values():
    s, lo, hi = stats.log_sd([1.0, math.e ** 0.2, math.e ** 0.4])  # log values 0, 0.2, 0.4: sd 0.2
    assert s == pytest.approx(0.2) and lo < 0.2 < hi
    # chi-square interval, 2 df: sd * sqrt(2 / chi2(0.975, 2) = 7.378) and sqrt(2 / chi2(0.025, 2) = 0.0506)
    assert lo == pytest.approx(0.2 * math.sqrt(2 / 7.3778), rel=1e-3) and hi == pytest.approx(0.2 * math.sqrt(2 / 0.05064), rel=1e-3)
    # the z formula 2 (1.96 + 0.84)^2 sd^2 / log(1.1)^2 at sd = 0.08 says 11.05, so 12 seeds; with t quantiles at
    # n = 12 (22 df: 2.074 + 0.858) the same formula says 12.1 > 12, so the t-based answer is 13
    z = 2 * (1.96 + 0.84) ** 2 * 0.08 ** 2 / math.log(1.1) ** 2
    t12 = 2 * (2.074 + 0.858) ** 2 * 0.08 ** 2 / math.log(1.1) ** 2
    n = stats.seeds_needed(0.08)
    assert z == pytest.approx(11.05, abs=0.01) and t12 == pytest.approx(12.1, abs=0.05) and n == 13
    assert stats.t_power(n, 0.08, 1.1) >= 0.8 > stats.t_power(n - 1, 0.08, 1.1)
    assert stats.seeds_needed(0.40) > stats.seeds_needed(0.23) > n  # each method's own spread matters
    assert stats.t_power(5, 0.05, 1.0) == pytest.approx(0.05)  # no effect: the power is the test's size


def test_one_seed_gives_an_exact_p_and_never_a_claim():
    """A one-seed quick trial: 1 vs 1 and one pair can only give p = 1; 1 vs 3 enumerates its 4 relabellings."""
    assert stats.permutation_p([1.0], [2.0]) == 1.0 and stats.sign_flip_p([1.0], [2.0]) == 1.0
    assert stats.permutation_p([1.0], [2.0, 3.0, 4.0]) == 0.25  # only the observed labelling is as extreme
