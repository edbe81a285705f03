"""Exercise: PODS's down-sampling rule (the `# === PODS` region of pods.py).

PODS generates n rollouts per prompt but trains on only m < n of them: the m whose rewards have the
largest variance, since a group of all-right or all-wrong answers teaches nothing. Write
`select_max_variance`, then check it with

    python -m exercises.check pods
"""

import torch


def select_max_variance(rewards: torch.Tensor, num_keep: int, rule: str = "max_variance") -> torch.Tensor:
    """Choose which of one prompt's n rollouts to train on.

    Args:
        rewards: shape (n,), float: one group's rewards r_1..r_n (any real values; ties are common).
        num_keep: m, with 2 <= m <= n.
        rule: "max_variance" (PODS), or one of the paper's ablations: "max_reward" (the m largest
            rewards) or "random" (m distinct indices drawn uniformly with torch's global generator).

    Returns:
        A 1-D torch.long tensor of m distinct indices into `rewards`, in ascending order.

    "max_variance" returns a subset S, |S| = m, that maximises the population variance of
    {r_i : i in S}. Trying all C(n, m) subsets is too slow; use the lemma that some optimal S is
    "the k largest rewards + the m - k smallest" for some k in 0..m:
      1. Order the indices by reward, largest first; equal rewards keep their index order
         (a stable descending sort, i.e. sort by (-r_i, i)).
      2. Candidate C_k = the first k indices of that order + the last m - k, for k = 0..m.
      3. Score each candidate in float64: m * Var(C_k) = sum of r^2 - (sum of r)^2 / m over C_k
         (prefix sums of r and r^2 make each score O(1); any exact computation is fine).
      4. Visit the candidates in the order k = m, 0, 1, ..., m - 1. The first is the best so far; a
         later one replaces it only if its score is larger by more than 1e-9 * (1 + |best score|).
         So equal variances, up to rounding, keep the earlier candidate.
    "max_reward" returns the first m indices of the order of step 1 (sorted ascending).

    Examples (m = 4 unless said):
        [1, 0, 0, 0, 1, 1, 0, 0]   -> [0, 4, 6, 7]   two ones and two zeros (k = 2)
        [0.9, 0.1, 0.5, 0.3, 0.7, 0.2], m = 3 -> [0, 1, 5]   the largest with the two smallest (k = 1)
        [1, 1, 1, 1], m = 2        -> [0, 1]         all equal: C_m is visited first and never beaten
        [1, 0, 0, 0, 0, 0, 0, 0]   -> [0, 1, 2, 3]   every k >= 1 ties: C_m wins
        [0.3, 0.9, 0.1, 0.5], m = 2, rule "max_reward" -> [1, 3]
    """
    raise NotImplementedError
