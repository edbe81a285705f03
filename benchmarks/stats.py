"""The statistics behind every claim the comparison makes, small enough to check by hand.

A claim compares a cost (updates, rollouts, CPU seconds ... to reach a target) of a config with its
baseline's over a handful of seeds. The rules:

- Tests are exact permutation tests on log values (a speed-up is a ratio, so its log is a
  difference), two-sided with the |statistic| convention: the p-value is the fraction of relabellings
  whose |mean log difference| is at least the observed one. Unpaired, the relabellings are the splits
  of the pooled seeds into two groups of the same sizes (exact up to 10^5 splits, Monte Carlo beyond);
  paired, where the two configs ran the same seeds (the same seed draws the same prompt stream), they
  are the 2^n sign flips of the per-seed log differences. scipy.stats.permutation_test does the work.
- A table's p-values form one family, adjusted by Holm's step-down method; a claim is *resolved* only
  when its adjusted p is below 0.05. Nothing else (no interval that "excludes 1") makes a claim.
- The probability of improvement is the chance that a random seed of the config does better than a
  random seed of its baseline (ties count a half), as in rliable (Agarwal et al., 2021, "Deep RL at
  the Edge of the Statistical Precipice"); its interval is a percentile bootstrap over seeds
  (scipy.stats.bootstrap), descriptive only.
- A seed that never reaches the target is censored at its run's horizon, never dropped: counts say
  k/n reached, and the Kaplan-Meier median (scipy.stats.ecdf) summarises them.
- The power arithmetic works on the sd of log values (about the cv for small spreads), with a
  chi-square interval on it and t-based sample sizes (noncentral t), and on the smallest p-value a
  number of seeds can give at all: with 5 vs 5 seeds no exact test goes below 2/252 = 0.008, and with
  5 pairs below 2/32 = 0.0625, so no correction over a family of 18 can leave a claim standing.
"""

import math

import numpy as np
from scipy import stats

ALPHA = 0.05
EXACT_UP_TO = 100_000  # relabellings; beyond this many, a Monte Carlo sample of as many


def _abs_mean_diff(x, y, axis=-1):
    return np.abs(np.mean(x, axis=axis) - np.mean(y, axis=axis))


def permutation_p(a, b, seed=0):
    """Two-sided permutation p-value for a difference in mean log value between independent samples."""
    a, b = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    if min(len(a), len(b)) < 1:
        return float("nan")
    if min(len(a), len(b)) < 2:  # scipy wants two per sample: enumerate the len(a) + len(b) relabellings here
        pooled, obs = np.concatenate([a, b]), _abs_mean_diff(a, b)
        splits = [_abs_mean_diff(np.delete(pooled, i), pooled[i:i + 1]) for i in range(len(pooled))] \
            if len(b) == 1 else [_abs_mean_diff(pooled[i:i + 1], np.delete(pooled, i)) for i in range(len(pooled))]
        return float(np.mean(np.asarray(splits) >= obs - 1e-12))
    res = stats.permutation_test((a, b), _abs_mean_diff, permutation_type="independent", alternative="greater",
                                 n_resamples=EXACT_UP_TO, vectorized=True, random_state=np.random.default_rng(seed))
    return float(res.pvalue)


def sign_flip_p(a, b, seed=0):
    """Two-sided paired permutation p-value: the per-pair log differences log(a_i / b_i), signs flipped."""
    a, b = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    if len(a) != len(b) or len(a) < 1:
        raise ValueError("a paired test needs two samples of the same length")
    if len(a) == 1:  # one pair: both signs give the same |difference|
        return 1.0
    res = stats.permutation_test((a, b), lambda x, y, axis=-1: np.abs(np.mean(x - y, axis=axis)),
                                 permutation_type="samples", alternative="greater", n_resamples=EXACT_UP_TO,
                                 vectorized=True, random_state=np.random.default_rng(seed))
    return float(res.pvalue)


def holm(pvalues):
    """Holm's step-down adjustment of one family of p-values (NaN: no test, left out of the family)."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def resolved(adjusted_p):
    return bool(adjusted_p == adjusted_p and adjusted_p < ALPHA)


def prob_improvement(base, other, base_reached=None, other_reached=None):
    """P(a random seed of `other` costs less than a random seed of `base`), ties a half. A censored value is the
    run's horizon, a lower bound: a reached value below it wins, anything else against it is undetermined (a half),
    as in Gehan's generalisation of the Mann-Whitney statistic."""
    b, o = np.asarray(base, float), np.asarray(other, float)
    rb = np.ones(b.shape, bool) if base_reached is None else np.asarray(base_reached, bool)
    ro = np.ones(o.shape, bool) if other_reached is None else np.asarray(other_reached, bool)
    return float(np.mean(_wins(b[:, None], o[None, :], rb[:, None], ro[None, :])))


def _wins(b, o, rb, ro):
    """1 where o beats b, 0 where b beats o, 0.5 where tied or undetermined (broadcasts)."""
    o_first = ro & (o < b)  # o reached before b reached, or before b's horizon
    b_first = rb & (b < o)
    return np.where(o_first, 1.0, np.where(b_first, 0.0, 0.5))


def bootstrap_interval(statistic, n_base, n_other, paired, resamples=4000, seed=0):
    """Percentile 95% interval of statistic(base_idx, other_idx) over seeds resampled with replacement (the same
    indices on both sides when paired). The statistic receives index arrays of shape (..., n) and returns (...),
    so that it can recompute anything (a target, crossings) inside each resample. NaN with a single seed."""
    if min(n_base, n_other) < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap((np.arange(n_base), np.arange(n_other)),
                          lambda i, j, axis=-1: statistic(i.astype(int), j.astype(int)), paired=paired,
                          vectorized=True, n_resamples=resamples, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def km_median(values, reached):
    """Kaplan-Meier median of a cost with censored seeds (reached False: the value is the run's horizon): the
    smallest value at which at most half the seeds are still short of the target; None when fewer than half
    reached it (then the median lies beyond the horizon)."""
    v, r = np.asarray(values, float), np.asarray(reached, bool)
    if not r.any():
        return None
    sf = stats.ecdf(stats.CensoredData(uncensored=v[r], right=v[~r])).sf
    below = np.flatnonzero(sf.probabilities <= 0.5 + 1e-12)
    return float(sf.quantiles[below[0]]) if len(below) else None


def censored_summary(values, reached, digits=0):
    """'34' when every seed reached the target; '3/5 reached, median 41' or '2/5 reached, median > horizon'."""
    r = np.asarray(reached, bool)
    med = km_median(values, r)
    if r.all():
        return f"{med:.{digits}f}"
    return f"{r.sum()}/{len(r)} reached, median " + (f"{med:.{digits}f}" if med is not None else "> horizon")


def t_interval(values):
    """(mean, low, high): the mean over seeds and its 95% Student-t interval (NaN bounds for one seed)."""
    v = np.asarray(values, float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def log_sd(values):
    """(sd of the log values, low, high): the spread over seeds that a test on log values sees (about the cv),
    with its 95% chi-square interval (normal log values)."""
    v = np.log(np.asarray(values, float))
    n = len(v)
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    s = float(np.std(v, ddof=1))
    lo, hi = (s * math.sqrt((n - 1) / stats.chi2.ppf(q, n - 1)) for q in (0.975, 0.025))
    return s, lo, hi


def t_power(n, sd, effect, paired=False, alpha=ALPHA):
    """Power of a two-sided t-test on log values to detect a ratio of `effect` (e.g. 1.1) with n seeds per config
    (n pairs when paired; sd is then the sd of the per-pair log differences, else each config's sd of logs)."""
    if paired:
        df, se = n - 1, sd / math.sqrt(n)
    else:
        df, se = 2 * n - 2, sd * math.sqrt(2 / n)
    if df < 1 or not sd > 0:
        return float("nan")
    nc, crit = math.log(effect) / se, stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(sd, effect=1.1, power=0.8, paired=False, alpha=ALPHA, most=1000):
    """The fewest seeds per config (pairs when paired) whose t-test reaches `power` for a ratio of `effect`."""
    if not sd > 0:
        return float("nan")
    return next((n for n in range(2, most + 1) if t_power(n, sd, effect, paired, alpha) >= power), float("inf"))


def smallest_p(n_a, n_b, paired=False):
    """The smallest p-value an exact two-sided test can give at these sizes, whatever the data: 2 of the 2^n sign
    flips paired; unpaired one split (two, by symmetry, when the sizes are equal) of C(n_a + n_b, n_a)."""
    if paired:
        return 2 / 2 ** n_a
    return (2 if n_a == n_b else 1) / math.comb(n_a + n_b, n_a)


def seeds_for_family(m, paired=True, alpha=ALPHA):
    """The fewest seeds per config at which a family of m Holm-adjusted tests can resolve anything at all."""
    return next(n for n in range(1, 64) if smallest_p(n, n, paired) * m < alpha)


def claim(base, other, base_reached=None, other_reached=None, paired=False, resample=None, seed=0):
    """Every number one claim needs: the speed-up base / other (a ratio of geometric means; >1: `other` costs
    less), its 95% bootstrap interval, the permutation p-value (sign flips when paired), and the probability of
    improvement with its interval (None when a value is 0: a seed already at the target). Censored values (reached False) enter at their horizon, a lower bound, so a
    config that misses the target looks better than it is, never worse. `resample(i, j)` may recompute the four
    arrays for resampled seed indices (e.g. with the target re-derived inside each resample); by default the
    fixed values are indexed."""
    b, o = np.asarray(base, float), np.asarray(other, float)
    if min(b.min(), o.min()) <= 0:  # a seed at the target before training: a cost of 0 has no log
        return None
    rb = np.ones(len(b), bool) if base_reached is None else np.asarray(base_reached, bool)
    ro = np.ones(len(o), bool) if other_reached is None else np.asarray(other_reached, bool)
    resample = resample or (lambda i, j: (b[i], rb[i], o[j], ro[j]))
    floor = min(b.min(), o.min()) / 2  # a resample's re-derived target may sit below a warm start: keep logs finite

    def speed(i, j):
        bv, _, ov, _ = resample(i, j)
        return np.exp(np.mean(np.log(np.maximum(bv, floor)), -1) - np.mean(np.log(np.maximum(ov, floor)), -1))

    def improvement(i, j):
        bv, br, ov, orr = resample(i, j)
        return np.mean(_wins(bv[..., :, None], ov[..., None, :], br[..., :, None], orr[..., None, :]), (-2, -1))

    paired = paired and len(b) == len(o)
    return {"speedup": float(np.exp(np.mean(np.log(b)) - np.mean(np.log(o)))),
            "interval": bootstrap_interval(speed, len(b), len(o), paired, seed=seed),
            "p": sign_flip_p(b, o, seed) if paired else permutation_p(b, o, seed), "paired": paired,
            "pi": prob_improvement(b, o, rb, ro), "pi_interval": bootstrap_interval(improvement, len(b), len(o), paired, seed=seed),
            "reached": (int(rb.sum()), len(rb), int(ro.sum()), len(ro))}
