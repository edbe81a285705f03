"""Training curves of one or more runs, from their metrics.jsonl, in one PNG.

    python -m tools.plot runs/grpo_add_seed0 runs/pods_add_seed0 -o curves.png
    python -m tools.plot runs/dgg_add_seed0 --metrics 'dgg/*' reward     # any logged metric, by name or pattern

Top row against steps, bottom row against training time (`time/train_total`, evaluation
excluded). By default: reward, held-out sampled and greedy accuracy, completions/mean_length,
frac_reward_zero_std and tokens/trained; --metrics picks any logged metrics instead (shell-style
patterns: 'dppo/*' draws every metric a method logs under its prefix). One colour per run, labelled
with the run folder's name. Accuracy points are the evaluation before the first step (eval/*, at 0)
and those after a step (eval_after/*, at the number of steps done); a run that sampled nothing
(--eval_num_samples 0) has no sampled accuracy, and its greedy accuracy is drawn in that panel,
dashed, and labelled so. Per-step metrics are plotted at the steps done after their step, so both
share one axis; --smooth K draws a K-step moving average of them. -o may name a folder (the figure
is then curves.png inside it) or a file without an extension (.png is added); the path written is
printed. Needs matplotlib (optional: pip install matplotlib).
"""

import argparse
import fnmatch
import json
import os
import sys

PANELS = [("reward", "reward"), ("sampled_acc", "held-out sampled pass@1"),
          ("greedy_acc", "held-out greedy pass@1"), ("completions/mean_length", "completion length (tokens)"),
          ("frac_reward_zero_std", "groups with zero reward std"), ("tokens/trained", "tokens trained per step")]


def load_run(run_dir: str) -> dict:
    """{metric: (steps, seconds, values)} from RUN_DIR/metrics.jsonl, evaluations under their bare names
    (eval/sampled_acc and eval_after/sampled_acc are both 'sampled_acc'). A torn last line is skipped, and so
    is a line that is valid JSON but not a record (a bare number, a list), with a note."""
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SystemExit(f"error: cannot read {path}: {e.strerror or e}") from None
    records, odd = [], 0
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if i < len(lines) - 1:  # only the line a running script is writing may be incomplete
                raise SystemExit(f"error: {path} line {i + 1} is not JSON") from None
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            odd += 1
    if odd:
        print(f"note: {path}: skipped {odd} line(s) that are not step records", file=sys.stderr)
    if not records:
        raise SystemExit(f"error: {path} has no records yet")
    curves = {}
    for r in records:
        done, seconds = r["step"] + 1, r.get("time/train_total", float("nan"))
        for key, value in r.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or key in ("step", "time/train_total"):
                continue
            if key.startswith("eval/"):
                key, done_at = key[len("eval/"):], 0  # the warm start, before any step
            elif key.startswith("eval_after/"):
                key, done_at = key[len("eval_after/"):], done
            else:
                done_at = done
            series = curves.setdefault(key, ([], [], []))
            for s, v in zip(series, (done_at, 0.0 if done_at == 0 else seconds, value)):
                s.append(v)
    if sampled_nothing(run_dir):  # a sampled accuracy logged with nothing sampled is not an accuracy
        curves.pop("sampled_acc", None)
    return curves


def sampled_nothing(run_dir: str) -> bool:
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("eval_num_samples") == 0
    except (OSError, ValueError, AttributeError):
        return False


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


def select(runs: list, patterns: list) -> list:
    """[(metric, title)]: the default panels, or every logged metric matching one of the patterns."""
    if not patterns:
        return PANELS
    logged = sorted({k for c in runs for k in c})
    chosen = [k for k in logged if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"error: no logged metric matches {' '.join(patterns)}; logged: {', '.join(logged)}")
    return [(k, k) for k in chosen]


def output_path(out: str, formats: dict) -> str:
    """Where the figure goes: inside a folder as curves.png, '.png' added to a name without an extension."""
    if os.path.isdir(out):
        return os.path.join(out, "curves.png")
    ext = os.path.splitext(out)[1][1:].lower()
    if not ext:
        return out + ".png"
    if ext not in formats:
        raise SystemExit(f"error: -o {out}: matplotlib cannot write .{ext} (use one of {', '.join(sorted(formats))})")
    return out


def plot(run_dirs: list, out: str, smooth: int = 1, metrics: list = ()) -> str:
    runs = [load_run(d) for d in run_dirs]  # read everything first: a bad folder fails before drawing
    panels = select(runs, metrics)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: tools.plot needs matplotlib, which is optional: pip install matplotlib") from None
    fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 7), squeeze=False)
    out = output_path(out, fig.canvas.get_supported_filetypes())
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    greedy_for_sampled = False
    for i, (curves, label) in enumerate(zip(runs, labels(run_dirs))):
        colour = colours[i % len(colours)]
        for col, (key, title) in enumerate(panels):
            style = {}
            if key == "sampled_acc" and key not in curves and "greedy_acc" in curves:
                key, style, greedy_for_sampled = "greedy_acc", {"linestyle": "--"}, True
                label_here = f"{label} (greedy: nothing sampled)"
            else:
                label_here = label
            if key not in curves:
                continue
            steps, seconds, values = curves[key]
            evaluated = steps[:1] == [0]  # only an evaluation has a point before the first step
            if not evaluated and smooth > 1:
                values = moving_average(values, smooth)
            for row, x in enumerate((steps, seconds)):
                axes[row][col].plot(x, values, color=colour, marker="o" if evaluated else None, markersize=3,
                                    linewidth=1.2, label=label_here, **style)
    for col, (key, title) in enumerate(panels):
        if key == "sampled_acc" and greedy_for_sampled:
            title += "\n(dashed: greedy, where nothing was sampled)"
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
    p.add_argument("-o", "--out", default="curves.png", help="output image, or a folder (default curves.png)")
    p.add_argument("--smooth", type=int, default=1, help="moving average over K steps for per-step metrics")
    p.add_argument("--metrics", nargs="+", default=[], metavar="PATTERN",
                   help="metrics to draw instead of the default panels: names or patterns ('dgg/*', 'time/*')")
    a = p.parse_args(argv)
    if a.smooth < 1:
        raise SystemExit("error: --smooth must be >= 1")
    print(plot(a.run_dirs, a.out, a.smooth, a.metrics))


if __name__ == "__main__":
    main()
