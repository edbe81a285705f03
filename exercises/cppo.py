"""Exercise: CPPO's completion pruning (the `# === CPPO` region of cppo.py).

CPPO drops the completions whose advantage is closest to zero before the expensive passes: their
gradient is the smallest. Write `prune_completions`, then check it with

    python -m exercises.check cppo
"""

import torch


def prune_completions(advantages: torch.Tensor, prune_rate: float, group_size: int | None = None) -> torch.Tensor:
    """Which completions of a step survive the pruning.

    Args:
        advantages: shape (N,), float: the step's advantages A_i, group after group.
        prune_rate: P, with 0 <= P < 1.
        group_size: None prunes across the whole step ("global"); an int G (dividing N) prunes each
            consecutive block of G completions on its own ("group").

    Returns:
        A 1-D torch.long tensor of the kept indices into `advantages`, in ascending order.

    Global: drop the floor(N P) completions with the smallest |A_i|, i.e. keep the N - floor(N P)
    with the largest. Per group: every block keeps G - floor(G P) of its own.
    Ties in |A|: the lower index is kept first (rank by (-|A_i|, i)).
    Floors: compute floor(N P + 1e-9), because 50 * 0.58 is 28.999999999999996 in floating point
    and must floor to 29. Since P < 1 at least one completion survives (in every group).

    Examples:
        A = [1.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, -1.5], P = 0.5
            global     -> [0, 1, 2, 7]   both |A| = 1.5, then the first two of the ties
            G = 4      -> [0, 1, 4, 7]   two per group
        A = ten zeros, P = 0.7           -> [0, 1, 2]
    """
    raise NotImplementedError
