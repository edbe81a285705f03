"""Exercise: GVM's sample-budget allocation (the `# === GVM` region of gvm_raft.py).

GVM spends a fixed budget of samples unevenly: more on the prompts whose gradient is large and
whose acceptance rate makes extra samples pay off, to minimise the variance of the gradient
estimate. Write `allocate_budget`, then check it with

    python -m exercises.check gvm_raft
"""

import torch


def allocate_budget(grad_norms, accept_rates, budget: int, alpha: float = 1e-3, beta: float = 2.0,
                    max_per_prompt: int | None = None, zero_allocation: str = "uniform") -> torch.Tensor:
    """How many samples each prompt gets.

    Args:
        grad_norms: G_i >= 0, one per prompt (a list or a 1-D tensor).
        accept_rates: p_i in [0, 1], one per prompt (a list or a 1-D tensor).
        budget: the total number of samples, >= 0.
        alpha, beta: the regulariser of the weight below (alpha >= 0).
        max_per_prompt: a cap on every count; None or 0 means no cap. The budget fits under the cap
            (cap x number of prompts >= budget).
        zero_allocation: what to do when every weight is 0: "uniform" spreads the budget as if all
            weights were 1; "skip" returns all zeros.

    Returns:
        A 1-D torch.long tensor of counts n_i >= 0 summing exactly to `budget` (or all zeros, see
        "skip"), none above the cap.

    Work in float64:
      1. w_i = G_i / sqrt(p_i + alpha / p_i^(beta - 1)) when p_i > 0 and G_i > 0, else w_i = 0.
      2. If every w_i is 0: "skip" -> return zeros; "uniform" -> w_i = 1 for all i.
      3. Start from n_i = 0 and repeat while left = budget - sum(n) > 0:
         a. room_i = w_i for the prompts below the cap, 0 for those at it; if every room_i is 0
            (only zero-weight prompts have room left), room_i = 1 for each prompt below the cap.
         b. share_i = left x room_i / sum(room); add_i = floor(share_i).
         c. The left - sum(add) prompts with the largest remainders share_i - add_i get one more
            (largest remainder rounding; ties: the lower index first).
         d. n_i = min(n_i + add_i, cap): what the cap cuts off is spread again by the next round.

    Examples (alpha = 1e-3, beta = 2):
        G = [2, 1, 1, 3], p = [0.5, 0.125, 1, 0], budget 32      -> [14, 13, 5, 0]   p = 0 gets nothing
        G = [1, 1, 1], p = [0.125, 0.5, 1], budget 24             -> [13, 6, 5]   shares 12.77, 6.57, 4.66
        G = [5, 1], p = [0.5, 0.5], budget 10, max_per_prompt 6   -> [6, 4]       the excess is re-spread
        G = [0, 2], p = [0, 0], budget 8, zero_allocation "skip"  -> [0, 0]
    """
    raise NotImplementedError
