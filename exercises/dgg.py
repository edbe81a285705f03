"""Exercise: DGG's gate (the `# === DGG` region of dgg.py).

DGG reuses each batch for several optimiser passes and drops a pass's update when its gradient
norm jumps far more than such jumps usually do (a z-score against a sliding window). Write
`GradientGate.should_drop` (and the state it needs in `__init__`), then check it with

    python -m exercises.check dgg
"""


class GradientGate:
    """Decides, pass after pass, whether to drop the update.

    The training loop makes K passes (k = 1..K) over each batch and calls should_drop(g, k) once
    per pass, in order, with that pass's gradient norm g; the next batch starts again at k = 1.

    Args:
        window: W >= 2, how many past increments the z-score compares against.
        tau: the threshold, >= 0 (math.inf: the gate never fires).
        statistic: "norm" tracks s = g, "energy" tracks s = g^2.
        scope: "per_pass" keeps one window per pass index k; "shared" one window for every k >= 2.
    """

    def __init__(self, window: int, tau: float, statistic: str = "norm", scope: str = "per_pass"):
        self.window, self.tau, self.statistic, self.scope = window, tau, statistic, scope
        # Add here the state that should_drop needs between calls.

    def should_drop(self, grad_norm: float, pass_index: int) -> bool:
        """True when this pass's update should be dropped.

        1. s = grad_norm ("norm") or grad_norm^2 ("energy").
        2. Pass 1 (pass_index == 1) only remembers s and returns False: the jump from the previous
           batch's last pass is not a reuse increment and never enters a window.
        3. Pass k >= 2 forms the increment x = s - (s of the previous pass over this batch). Its
           window holds the last W increments of pass k ("per_pass") or of all passes ("shared").
           If the window already holds W increments, z = (x - mean) / (std + 1e-8), with the
           population std (numpy's np.std default). Then x joins the window (the oldest leaves
           beyond W), whether the gate fires or not. Return True exactly when the window was full
           before x joined and z > tau.
        4. A non-finite grad_norm (nan or inf) returns False and forms no increment, neither its
           own nor the next pass's: the next finite pass only remembers its s, as pass 1 does.

        Example (W = 4, tau = 0.5, "per_pass"): after four two-pass batches whose pass-2
        increments are 0.10, -0.10, 0.05, 0.00 (all False: the window fills up), a batch with
        norms [2.0, 2.5] returns False, then True: z = (0.5 - 0.0125) / 0.0740 = 6.59.
        """
        raise NotImplementedError
