"""Exercise: DPPO's completion level (the `# === DPPO` region of dppo.py).

DPPO prunes completions at random, favouring those with a small |advantage|, and reweights the
survivors so that the weighted loss stays an unbiased estimate of the unpruned one. Write
`completion_weights`, then check it with

    python -m exercises.check dppo
"""

import torch


def completion_weights(advantages: torch.Tensor, rate: float, group_size: int, pool_fraction: float = 0.75,
                       generator=None) -> torch.Tensor:
    """Random pruning with importance weights.

    Args:
        advantages: shape (N,), float32, N a multiple of group_size: the step's advantages, group
            after group.
        rate: r, the expected fraction of completions pruned: 0 <= r < pool_fraction.
        group_size: n, the size of a block judged on its own (dppo.py passes N for scope "step").
        pool_fraction: f in (0, 1], the share of each block that may be pruned.
        generator: the torch.Generator that draws the coins (None: torch's global generator).

    Returns:
        Shape (N,), float32: 0 for a pruned completion, 1 / (1 - q) for a pool member that
        survived, 1 for a completion outside the pool.

    In each block of n consecutive completions:
      1. The pool is the ceil(f n - 1e-9) completions with the smallest |A| (ties: the lower index
         first), taken in that order.
      2. Each pool member is pruned with probability q = r n / (pool size), so r n are pruned on average.
      3. The coins come from ONE call, u = torch.rand(N // n, pool size, generator=generator):
         u[b, j] belongs to the j-th pool member of block b (in the order of step 1), which is
         pruned when u[b, j] < q.
      4. A surviving pool member weighs 1 / (1 - q), so every completion's expected weight is 1.
    When r = 0 (or N = 0) return all ones and draw no random number.

    Example: A = [2.0, -0.1, 0.0, 1.5], r = 0.6, n = 4, f = 0.75: the pool is [2, 1, 3] (|A| 0, 0.1,
    1.5), q = 0.6 * 4 / 3 = 0.8, so index 0 always weighs 1 and each of 1, 2, 3 weighs 0 or 5.
    """
    raise NotImplementedError
