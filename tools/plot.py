"""Training curves of one or more runs, from their metrics.jsonl, in one PNG.

    python -m tools.plot runs/grpo_add_seed0 runs/pods_add_seed0 -o curves.png

Top row against steps, bottom row against training time (`time/train_total`, evaluation
excluded): reward, held-out sampled and greedy accuracy, completions/mean_length,
frac_reward_zero_std and tokens/trained. One colour per run, labelled with the run folder's name.
Accuracy points are the evaluation before the first step (eval/*, at 0) and those after a step
(eval_after/*, at the number of steps done). Per-step metrics are plotted at the steps done
after their step, so both share one axis; --smooth K draws a K-step moving average of them.
Needs matplotlib (optional: pip install matplotlib).
"""

import argparse
import json
import os

PANELS = [("reward", "reward"), ("sampled_acc", "held-out sampled pass@1"),
          ("greedy_acc", "held-out greedy pass@1"), ("completions/mean_length", "completion length (tokens)"),
          ("frac_reward_zero_std", "groups with zero reward std"), ("tokens/trained", "tokens trained per step")]
ACCURACIES = ("sampled_acc", "greedy_acc")


def load_run(run_dir: str) -> dict:
    """{panel key: (steps, seconds, values)} from RUN_DIR/metrics.jsonl; a torn last line is skipped."""
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SystemExit(f"error: cannot read {path}: {e.strerror or e}") from None
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:  # only the line a running script is writing may be incomplete
                raise SystemExit(f"error: {path} line {i + 1} is not JSON") from None
    if not records:
        raise SystemExit(f"error: {path} has no records yet")
    curves = {key: ([], [], []) for key, _ in PANELS}
    for r in records:
        done, seconds = r["step"] + 1, r.get("time/train_total", float("nan"))
        for key, _ in PANELS:
            if key in ACCURACIES:
                if f"eval/{key}" in r:  # the warm start, before any step
                    for series, value in zip(curves[key], (0, 0.0, r[f"eval/{key}"])):
                        series.append(value)
                if f"eval_after/{key}" in r:
                    for series, value in zip(curves[key], (done, seconds, r[f"eval_after/{key}"])):
                        series.append(value)
            elif key in r:
                for series, value in zip(curves[key], (done, seconds, r[key])):
                    series.append(value)
    return curves


def moving_average(values: list, k: int) -> list:
    """Mean of the last k values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - k] if i >= k else 0.0)
        out.append(total / min(i + 1, k))
    return out


def labels(run_dirs: list) -> list:
    """The run folders' names, or their paths where two names clash."""
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    return [n if names.count(n) == 1 else os.path.normpath(d) for n, d in zip(names, run_dirs)]


def plot(run_dirs: list, out: str, smooth: int = 1) -> str:
    runs = [load_run(d) for d in run_dirs]  # read everything first: a bad folder fails before drawing
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: tools.plot needs matplotlib, which is optional: pip install matplotlib") from None
    fig, axes = plt.subplots(2, len(PANELS), figsize=(4 * len(PANELS), 7), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (curves, label) in enumerate(zip(runs, labels(run_dirs))):
        colour = colours[i % len(colours)]
        for col, (key, title) in enumerate(PANELS):
            steps, seconds, values = curves[key]
            if key not in ACCURACIES and smooth > 1:
                values = moving_average(values, smooth)
            marker = "o" if key in ACCURACIES else None
            for row, x in enumerate((steps, seconds)):
                axes[row][col].plot(x, values, color=colour, marker=marker, markersize=3, linewidth=1.2,
                                    label=label)
    for col, (key, title) in enumerate(PANELS):
        axes[0][col].set_title(title)
        axes[0][col].set_xlabel("steps")
        axes[1][col].set_xlabel("training time (s)")
        for row in (0, 1):
            axes[row][col].grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders holding a metrics.jsonl")
    p.add_argument("-o", "--out", default="curves.png", help="output PNG (default curves.png)")
    p.add_argument("--smooth", type=int, default=1, help="moving average over K steps for per-step metrics")
    a = p.parse_args(argv)
    if a.smooth < 1:
        raise SystemExit("error: --smooth must be >= 1")
    print(plot(a.run_dirs, a.out, a.smooth))


if __name__ == "__main__":
    main()
