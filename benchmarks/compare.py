"""Every method on the tiny task, side by side: tables with intervals, the power arithmetic, figures, the raw curves.

    python benchmarks/compare.py                                   # 7 methods x 5 seeds x 60 steps (~1.5 h on 2 cores)
    python benchmarks/compare.py --methods pods_paper cppo_paper --seeds 0 1 2   # paper settings + their baselines
    python benchmarks/compare.py --existing --methods ...          # rebuild tables and figures from saved runs

Each config runs as harness.CONFIGS says, one thread per run, `--workers` runs at a time, evaluated
every 5 steps on 512 held-out problems x 4 samples; finished runs under --results are reused. The
defaults are compared with grpo.py; a paper's setting (`<method>_paper`) with its paper's own GRPO
baseline (PAPER_BASELINE, added to the runs automatically). Writes into --out:
  table.md        per comparison: the target (95% of the baseline's peak mean sampled accuracy), per
                  seed the interpolated updates, rollouts generated, tokens trained and CPU seconds to
                  reach it, the peak, and the mean accuracy over the first K updates (AUC, target-free);
                  means with 95% bootstrap intervals over seeds; speed-ups marked resolved when their
                  interval excludes 1; the power arithmetic; per-step costs; predicted vs measured step
                  cost when benchmarks/cost_model.py has been run
  panels.png      one panel per method, its configs against GRPO (grey), vs updates and vs CPU seconds
  break_even.png  speed-up in updates vs cost per update, with the break-even diagonal
  curves.json     mean and std over seeds at every evaluation
  readme.md       the two tables of the README's results section (the defaults; the papers' settings)
The figures need matplotlib (optional: pip install matplotlib).
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# What each comparison with GRPO holds equal, following each paper's protocol (shared/spec/BENCHMARK.md).
EQUAL = {
    "grpo": "the baseline: 16 prompts x 8 completions, every one trained",
    "pods": "update batch (m = 8 trained per prompt, as GRPO's G); generates n = 16",
    "pods_n32": "update batch (m = 8); generates n = 32 (the paper's n = 4m)",
    "pods_paper": "as grpo_pods_paper's update batch (m = 8 per prompt); generates n = 32 = 4m; per-sequence mean loss",
    "grpo_pods_paper": "pods_paper's baseline: GRPO with n = m = 8, per-sequence mean loss (loss_type grpo)",
    "cppo": "update batch (P = 0.5 with allocation: 32 prompts generated, 128 completions trained)",
    "cppo_p0.75": "update batch (P = 0.75 with allocation: 64 prompts generated)",
    "cppo_p0.875": "update batch (P = 0.875 with allocation: 128 prompts generated)",
    "cppo_paper": "as grpo_cppo_paper's update batch (128); P = 0.5: 16 prompts x 16 generated; mu = 2, beta = 0.04",
    "cppo_paper_p0.75": "as cppo_paper, P = 0.75: 32 prompts x 16 generated",
    "cppo_paper_p0.875": "as cppo_paper, P = 0.875: 64 prompts x 16 generated",
    "grpo_cppo_paper": "the CPPO papers' baseline: 8 prompts x 16, all trained, mu = 2, beta = 0.04",
    "dppo": "prompts generated per step (16 x 8 on average; skipped prompts are refilled), loss_type grpo",
    "dppo_paper": "as dppo_paper_grpo (16 x 5 generated on average, 128 train prompts); r_q = r_o = 0.5",
    "dppo_paper_grpo": "dppo_paper's baseline: dppo.py's neutral setting (= grpo.py, loss_type grpo), G = 5, 128 prompts",
    "dppo_nopack": "as dppo, without packing (fixed micro-batches of 64)",
    "d3s": "rollouts generated (16 x 8); trains on 50% -> 100% of them, 20% -> 50% of their tokens",
    "d3s_paper": "as d3s; samples 0.25 -> 0.75, tokens 0.2 -> 0.5 (paper-like: its values are not public)",
    "d3s_tokens0.5": "as d3s; tokens 0.5 -> 1 (the earlier default)",
    "d3s_samples0.25": "as d3s; samples 0.25 -> 0.75 (tokens 0.5 -> 1)",
    "d3s_i": "as d3s, per-group sample selection (D3S-I)",
    "d2s": "as d3s, no schedule (ratios held at the schedule's mean)",
    "d1s_cross": "as d3s, sample level only, cross-group, no schedule (D1S-Cross)",
    "d1s": "as d3s, sample level only, per group, no schedule (D1S)",
    "gvm_raft++": "samples used per step (B x 8 = 128, plus 4 pilot samples per prompt)",
    "raft++": "samples per step (128), uniform",
    "gvm_grpo": "samples used per step (128 + pilot), GRPO loss",
    "gvm_paper": "samples trained per step (128, drawn fresh after 8 pilot samples per prompt); 8 optimiser steps per "
                 "rollout step vs raft++_paper's 1 (the official 32 vs 4)",
    "gvm_paper_prompt_mean": "as gvm_paper, M-step = per-prompt mean (the paper's Algorithm 1)",
    "gvm_paper_spg1": "as gvm_paper, 1 optimiser step per rollout step (no update-count confound)",
    "raft++_paper": "gvm_paper's baseline: 128 samples uniform (16 x 8), all in the token mean, KL 0.001, 1 step",
    "dgg": "rollouts generated per batch (16 x 8), reused up to K = 4 times",
    "reuse_k4": "rollouts generated per batch, reused K = 4 times, no gate",
    "dgg_tau0.1": "as dgg, tau = 0.1",
    "dgg_tau1.0": "as dgg, tau = 1.0",
    "dgg_shared": "as dgg, one window for every pass index",
    "dgg_paper": "rollouts per batch as grpo_dgg_paper (8 prompts x 16), reused up to K = 4 times, tau = 0.5",
    "dgg_paper_tau0.1": "as dgg_paper, tau = 0.1",
    "dgg_paper_tau1.0": "as dgg_paper, tau = 1.0",
    "reuse_k4_paper": "as dgg_paper, no gate (naive 4-fold reuse)",
    "grpo_dgg_paper": "the DGG paper's single-use baseline: 8 prompts x 16, one update per batch",
}


# Each paper setting is compared with its own paper's GRPO baseline; everything else with grpo.
PAPER_BASELINE = {"pods_paper": "grpo_pods_paper", "cppo_paper": "grpo_cppo_paper", "cppo_paper_p0.75": "grpo_cppo_paper",
                  "cppo_paper_p0.875": "grpo_cppo_paper", "dppo_paper": "dppo_paper_grpo", "gvm_paper": "raft++_paper",
                  "gvm_paper_prompt_mean": "raft++_paper", "gvm_paper_spg1": "raft++_paper", "dgg_paper": "grpo_dgg_paper",
                  "dgg_paper_tau0.1": "grpo_dgg_paper", "dgg_paper_tau1.0": "grpo_dgg_paper", "reuse_k4_paper": "grpo_dgg_paper"}
SCRIPT_FAMILY = {"pods.py": "PODS", "cppo.py": "CPPO", "dppo.py": "DPPO", "d3s.py": "D3S", "gvm_raft.py": "GVM", "dgg.py": "DGG"}


def name(label):
    return label.split(" (")[0]


def baseline_of(label):
    return PAPER_BASELINE.get(name(label), "grpo")


def family(label):
    """The method panel a config belongs to; a paper's own GRPO baseline sits in its method's panel."""
    c = name(label)
    for key, base in PAPER_BASELINE.items():
        if c == base:
            return SCRIPT_FAMILY[harness.CONFIGS[key][0]]
    return SCRIPT_FAMILY.get(harness.CONFIGS[c][0])  # None: grpo itself


def summary(dirs):
    """Per-step costs of one config: medians over all steps after the first of every seed (wall seconds as
    logged), and the means per step and per optimizer update of the run's own CPU seconds."""
    recs = [r for d in dirs for r in harness.records(d)[1:]]
    med = lambda key: statistics.median(r.get(key, 0.0) for r in recs)  # noqa: E731
    finals = [harness.records(d) for d in dirs]
    return {"generate_s": med("time/generate"), "update_s": statistics.median(r["time/logps"] + r["time/update"] for r in recs),
            "tokens_trained_per_step": med("tokens/trained"),
            "rollouts_generated_per_step": statistics.mean(r[-1]["rollouts/generated_total"] / len(r) for r in finals),
            "cpu_s_per_step": statistics.mean(r[-1]["time/train_cpu_total"] / len(r) for r in finals),
            "cpu_s_per_update": statistics.mean(r[-1]["time/train_cpu_total"] / max(r[-1]["updates_total"], 1) for r in finals)}


T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # Student t, 97.5%, by df


def band(per_seed_accs):
    """Mean and a 95% t-interval of the mean at every evaluation (no band for one seed)."""
    n = len(per_seed_accs)
    cols = list(zip(*per_seed_accs))
    mean = [statistics.mean(c) for c in cols]
    half = [T95.get(n - 1, 1.96) * statistics.stdev(c) / n ** 0.5 if n > 1 else 0.0 for c in cols]
    return mean, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)]


def power(groups, numbers, baseline="grpo"):
    """The arithmetic behind the protocol: how noisy one evaluation is, how far seeds spread, and how many
    seeds resolve a 10% difference in updates to target (two-sided 5%, power 80%)."""
    dirs = groups[baseline]
    diffs, tails, size = [], [], None
    for d in dirs:
        acc = [p[4] for p in harness.curve(d)]
        tail = acc[len(acc) // 2:]  # the second half of the run, where the curve is nearly flat
        diffs += [b - a for a, b in zip(tail, tail[1:])]
        tails += tail
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        size = (cfg["eval_size"], cfg["eval_num_samples"])
    p = statistics.mean(tails)
    sigma = statistics.pstdev(diffs) / 2 ** 0.5 if len(diffs) > 1 else float("nan")
    floor, ceiling = (p * (1 - p) / (size[0] * size[1])) ** 0.5, (p * (1 - p) / size[0]) ** 0.5
    mean, _ = harness.mean_curve(dirs)
    target = numbers["target"]
    seg = next(((a, b) for a, b in zip(mean, mean[1:]) if b[4] >= target > a[4]), None)
    slope = (seg[1][4] - seg[0][4]) / max(seg[1][0] - seg[0][0], 1e-9) if seg else float("nan")
    hits = [h["updates"] for h in numbers["numbers"][baseline]["hits"]]
    lines = ["### Statistical power (issue 16)", "",
             f"- One evaluation ({size[0]} problems x {size[1]} samples): the sd of successive evaluations over the "
             f"second half of {baseline}'s runs gives sigma_eval = {sigma:.4f} (it includes the curve's own drift, so "
             f"it is an upper bound); the binomial bounds at p = {p:.3f} are {floor:.4f} (all samples independent) "
             f"to {ceiling:.4f} (samples of a problem identical). Halving the problems (the 256 x 4 protocol before) multiplies both bounds by sqrt(2)."]
    if len(hits) > 1 and seg:
        sd, m = statistics.stdev(hits), statistics.mean(hits)
        cv = sd / m
        need = 2 * (1.96 + 0.84) ** 2 * cv ** 2 / 0.1 ** 2
        aucs = numbers["numbers"][baseline]["aucs"]
        auc_sd = statistics.stdev(aucs) if len(aucs) > 1 else float("nan")
        lines += [f"- Crossing the target: {baseline}'s mean curve climbs {slope:.4f} per update there, so one "
                  f"evaluation's noise moves a seed's interpolated crossing by about sigma_eval / slope = "
                  f"{sigma / slope:.1f} updates.",
                  f"- Seed to seed: {baseline}'s updates to target are {', '.join(f'{h:.1f}' for h in hits)} "
                  f"(mean {m:.1f}, sd {sd:.1f}, cv {cv:.2f}). Resolving a 10% difference between two configs "
                  f"with this spread needs n = 2 (1.96 + 0.84)^2 cv^2 / 0.1^2 = **{need:.1f} seeds each**; with "
                  f"{len(hits)} seeds the smallest resolvable difference is about "
                  f"{2.8 * cv * (2 / len(hits)) ** 0.5:.0%}.",
                  f"- AUC over the first {numbers['auc_updates']:.0f} updates: sd over seeds {auc_sd:.4f}; with "
                  f"{len(aucs)} seeds a difference of {2.8 * auc_sd * (2 / len(aucs)) ** 0.5:.3f} is resolvable."]
    return lines


def plot_panels(groups, path):
    """Small multiples: one column per method, its configs against GRPO (always the same grey), accuracy
    against optimizer updates (top) and training CPU seconds (bottom), 95% t-intervals shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = [f for f in SCRIPT_FAMILY.values() if any(family(lb) == f for lb in groups)]
    fig, axes = plt.subplots(2, len(fams), figsize=(3.6 * len(fams), 6.4), sharey=True, squeeze=False)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    for col, fam in enumerate(fams):
        members = ["grpo"] + [lb for lb in groups if family(lb) == fam]
        for row, axis in enumerate(("updates", "cpu_s")):
            ax = axes[row][col]
            k = 0
            for lb in members:
                curves = [harness.curve(d) for d in groups[lb]]
                n = min(len(c) for c in curves)
                x = [statistics.mean(c[i][harness.AXES[axis]] for c in curves) for i in range(n)]
                mean, lo, hi = band([[p[4] for p in c[:n]] for c in curves])
                colour = "0.45" if lb == "grpo" else colours[k % len(colours)]
                k += lb != "grpo"
                ax.plot(x, mean, color=colour, lw=2.2 if lb == "grpo" else 1.6, label=f"{lb} ({len(curves)})")
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(fam)
                ax.legend(fontsize=7, loc="lower right")
            ax.set_xlabel("optimizer updates" if axis == "updates" else "training CPU seconds (1 thread)")
        axes[0][0].set_ylabel("held-out sampled pass@1")
        axes[1][0].set_ylabel("held-out sampled pass@1")
    fig.suptitle("Each method against GRPO (grey); shaded: 95% t-interval of the mean over seeds (n seeds in the legend)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_break_even(points, path):
    """points: {label: (speed-up in updates, lo, hi, cost-per-update ratio)} against each config's own baseline.
    Below the diagonal a config wins in training time; above it, its cheaper updates do not pay for themselves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    top = max([1.5] + [max(p[0], p[2] if p[2] == p[2] else 0, p[3]) * 1.15 for p in points.values()])
    ax.plot([0, top], [0, top], color="0.3", ls="--", lw=1, label="break-even: equal training time")
    ax.fill_between([0, top], [0, 0], [0, top], color="tab:green", alpha=0.07, label="faster than its baseline")
    for i, (lb, (s, lo, hi, cost)) in enumerate(points.items()):
        colour = f"C{i % 10}"
        ax.errorbar([s], [cost], xerr=[[s - lo], [hi - s]] if lo == lo else None, fmt="o", color=colour, capsize=3)
        ax.annotate(lb, (s, cost), textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour)
    ax.set_xlim(0, top), ax.set_ylim(0, top)
    ax.set_xlabel("speed-up in updates to target (x, 95% interval)")
    ax.set_ylabel("CPU seconds per update / its baseline's")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_check(groups, costs, path, speedups):
    """Predicted against measured CPU seconds per step, from benchmarks/cost_model.py's calibration (if run)."""
    if not os.path.exists(path):
        return ["(No cost-model calibration: run `python benchmarks/cost_model.py` for predicted vs measured step costs.)"]
    import cost_model

    return cost_model.check(groups, costs, path, baseline_of, speedups)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["grpo", "pods", "cppo", "dppo", "d3s", "gvm_raft++", "dgg"],
                        choices=sorted(harness.CONFIGS), help="configurations (harness.CONFIGS); grpo is always included")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=harness.STEPS)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--eval_size", type=int, default=512, help="held-out problems per evaluation")
    parser.add_argument("--results", default=harness.RESULTS, help="where the runs live (reused when finished)")
    parser.add_argument("--out", default=os.path.join(harness.RESULTS, "compare"))
    parser.add_argument("--existing", action="store_true", help="train nothing: report the runs that have finished")
    args = parser.parse_args(argv)
    methods = ["grpo"] + [m for m in args.methods if m != "grpo"]
    methods += [b for m in methods if (b := PAPER_BASELINE.get(m)) and b not in methods]  # each paper's own baseline
    if args.existing:  # report the finished runs only; a config with fewer seeds says so in its label
        groups = {}
        for c in methods:
            dirs = [os.path.join(args.results, f"{c}_steps{args.steps}", f"seed{s}") for s in args.seeds]
            dirs = [d for d in dirs if os.path.exists(os.path.join(d, "final", "config.json"))]
            if dirs:
                groups[c] = dirs
        if "grpo" not in groups:
            raise SystemExit(f"error: no finished grpo run under {args.results} (steps {args.steps})")
    else:
        groups = harness.run_all(methods, args.seeds, args.steps, args.workers, args.results,
                                 extra=["--eval_size", str(args.eval_size)])
    os.makedirs(args.out, exist_ok=True)

    curves = {}
    for label, dirs in groups.items():
        mean, per_seed = harness.mean_curve(dirs)
        accs = list(zip(*[[p[4] for p in c[:len(mean)]] for c in per_seed]))
        curves[label] = {"steps": [p[5] for p in mean], "updates": [p[0] for p in mean], "cpu_s": [p[1] for p in mean],
                         "rollouts": [p[2] for p in mean],
                         "tokens_trained": [p[3] for p in mean], "acc_mean": [p[4] for p in mean],
                         "acc_std": [statistics.pstdev(a) for a in accs],
                         "runs": [os.path.relpath(d, harness.ROOT) for d in dirs]}
    with open(os.path.join(args.out, "curves.json"), "w") as f:
        json.dump(curves, f, indent=1)

    costs = {label: summary(dirs) for label, dirs in groups.items()}
    lines = [f"# Every method on the tiny task ({harness.machine()})", "",
             f"Command: `python benchmarks/compare.py --methods {' '.join(args.methods)} --seeds "
             f"{' '.join(map(str, args.seeds))} --steps {args.steps} --workers {args.workers} --eval_size {args.eval_size}"
             f"{' --existing' if args.existing else ''}`", ""]
    breakeven, speedups = {}, {}
    readme, paper_rows = [], []  # the README's two results tables, copied from readme.md
    for base in ["grpo"] + sorted({baseline_of(lb) for lb in groups} - {"grpo"}):
        sub = {lb: d for lb, d in groups.items() if lb == base or (baseline_of(lb) == base and lb not in PAPER_BASELINE.values())}
        if base not in groups or len(sub) < 1:
            continue
        table, numbers = harness.report(sub, base)
        lines += [f"## Against {base}" + (" (the defaults)" if base == "grpo" else " (a paper's setting and its baseline)"),
                  "", table, ""]
        if base == "grpo":
            lines += power(groups, numbers) + [""]
            readme += [table.split("\n\nPer seed")[0], ""]
        base_hits, b = numbers["numbers"][base]["hits"], numbers["numbers"][base]["cells"]
        for lb, num in numbers["numbers"].items():
            c = num["cells"]
            if base != "grpo" and lb != base:  # one row of the README's paper-settings table
                paper_rows.append(f"| {lb} | {base}: {b['updates']} updates, {b['cpu_s']} s, peak {b['peak']} "
                                  f"| {numbers['target']:.3f} | {c['seeds']} | {c['updates']} | {c['cpu_s']} | {c['peak']} "
                                  f"| {c['auc']} | {num['speed_updates']} | {num['speed_cpu']} |")
            if lb != base and num["hits"] and len(num["hits"]) == len(sub[lb]) and len(base_hits) == len(sub[base]):
                s = harness.ratio_interval([h["updates"] for h in base_hits], [h["updates"] for h in num["hits"]])
                breakeven[lb] = (*s, costs[lb]["cpu_s_per_update"] / costs[base]["cpu_s_per_update"])
                speedups[lb] = (s[0], num["speed_cpu"])
    lines += ["## Costs per step", "",
              "Medians over steps; generate and update are wall seconds as logged (two runs shared the two cores); "
              "CPU s is the run's own work. A config beats its baseline in training time only if its speed-up in "
              "updates exceeds its cost-per-update ratio (the break-even figure).", "",
              "| config | held equal to its baseline | rollouts generated | generate s | old/ref + update s | tokens trained "
              "| CPU s per step | CPU s per update | cost per update / baseline's |", "|---|---|---|---|---|---|---|---|---|"]
    for label, c in costs.items():
        b = costs.get(baseline_of(label), costs["grpo"])
        lines.append(f"| {label} | {EQUAL.get(name(label), '')} | {c['rollouts_generated_per_step']:.0f} | {c['generate_s']:.2f} "
                     f"| {c['update_s']:.2f} | {c['tokens_trained_per_step']:.0f} | {c['cpu_s_per_step']:.2f} "
                     f"| {c['cpu_s_per_update']:.3f} | {c['cpu_s_per_update'] / b['cpu_s_per_update']:.2f}x |")
    lines += [""] + cost_check(groups, costs, os.path.join(args.results, "cost_model.json"), speedups)
    try:
        plot_panels(groups, os.path.join(args.out, "panels.png"))
        plot_break_even(breakeven, os.path.join(args.out, "break_even.png"))
        lines += ["", "Figures: panels.png (each method against GRPO), break_even.png (speed-up vs cost per update)."]
    except ImportError:
        lines += ["", "matplotlib is not installed: no figures (pip install matplotlib); the tables and curves.json are written."]
    lines += ["Raw curves: curves.json; per-step records: the metrics.jsonl of each run listed there."]
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if paper_rows:
        readme += ["Each paper's own setting against its own paper's GRPO baseline (target = 95% of that baseline's peak):", "",
                   "| setting | its baseline | target | seeds | updates to target | CPU s to target | peak acc | AUC "
                   "| speed-up in updates | speed-up in CPU time |", "|---|---|---|---|---|---|---|---|---|---|"] + paper_rows
    with open(os.path.join(args.out, "readme.md"), "w") as f:
        f.write("\n".join(readme) + "\n")
    print("\n".join(lines))
    return args.out


if __name__ == "__main__":
    main()
