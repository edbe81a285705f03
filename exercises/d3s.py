"""Exercise: D3S's two selections (the `# === D3S` region of d3s.py).

D3S trains on fewer rollouts (sample level: the subset whose advantages vary the most) and, inside
them, on fewer tokens (token level: the largest |advantage| x entropy). Write the three functions
below in order, then check them with

    python -m exercises.check d3s
"""

import torch


def select_max_variance(values: torch.Tensor, num_keep: int) -> torch.Tensor:
    """Indices (a 1-D torch.long tensor, ascending) of the num_keep values whose population variance
    is the largest, with 2 <= num_keep <= n = values.numel().

    The same specification as PODS's select_max_variance with rule "max_variance" (exercises/pods.py):
    if you solved that one, `return pods.select_max_variance(values, num_keep)` (with
    `from exercises import pods`) is a complete answer. In short: order the indices by value, largest
    first, ties by lower index; candidate C_k = the first k + the last num_keep - k of that order;
    visit k = num_keep, 0, 1, ..., num_keep - 1, scoring num_keep * Var(C_k) in float64; a later
    candidate wins only if it beats the best by more than 1e-9 * (1 + |best|).

    Example: [1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, -1.5], num_keep = 4
        -> [0, 3, 8, 11]   (1.5, -0.5, 0.5, -1.5; the zeros of a zero-variance group never help)
    """
    raise NotImplementedError


def select_rollouts(advantages: torch.Tensor, num_generations: int, keep_ratio: float, scope: str) -> torch.Tensor:
    """D3S's sample level: the rollouts to train on.

    Args:
        advantages: shape (N,), float: the step's advantages, group after group (N = prompts x n).
        num_generations: n, the size of a group.
        keep_ratio: rho, with 0 < rho <= 1.
        scope: "cross": select_max_variance over the whole step, keeping max(2, floor(rho N + 1e-9));
               "intra": select_max_variance inside each group, keeping max(2, floor(rho n + 1e-9)) of it.

    Returns:
        A 1-D torch.long tensor of indices into `advantages`, in ascending order.

    Examples, n = 4, A = [1.5, -0.5, -0.5, -0.5, 0.5, 0.5, -1.5, 0.5, 0, 0, 0, 0]:
        rho = 0.5, "cross"  -> [0, 2, 3, 4, 5, 6]   the 3 largest + the 3 smallest
        rho = 0.5, "intra"  -> [0, 1, 6, 7, 8, 9]   2 of every group, the zero group too
        rho = 0.01, "cross" -> [0, 6]               never fewer than 2
    """
    raise NotImplementedError


def token_keep_mask(advantages, entropy, completion_mask, keep_ratio: float) -> torch.Tensor:
    """D3S's token level: which completion tokens of the step enter the loss.

    Args:
        advantages: shape (B,), float: A_i of each completion.
        entropy: shape (B, L), float >= 0: H_it, the policy's entropy at completion token t of row i.
        completion_mask: shape (B, L), 0/1 integers: 1 for a real completion token, 0 for padding
            (at least one 1 in the whole mask).
        keep_ratio: in (0, 1].

    Returns:
        A (B, L) bool tensor: True for a kept token. Padding is never kept.

    keep_ratio >= 1 keeps every real token (the mask itself, as bool). Otherwise score every real
    token by |A_i| x H_it and keep the K = max(1, floor(keep_ratio x (number of real tokens) + 1e-9))
    with the largest scores, over the whole step (not per row). Ties: the token earlier in row-major
    order (row i, position t -> i * L + t) is kept first.

    Example: A = [1.2, 1.2, 1.2, -0.8, -0.8], one token each with H = [0.1, 2.0, 0.5, 1.5, 0.05]:
    the scores are 0.12, 2.4, 0.6, 1.2, 0.04 and keep_ratio 0.4 keeps rows 1 and 3.
    """
    raise NotImplementedError
