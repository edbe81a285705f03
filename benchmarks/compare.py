"""Every method on the tiny task, side by side: one table, one figure, the raw curves.

    python benchmarks/compare.py                                   # 7 methods x 3 seeds x 120 steps (hours on 2 cores)
    python benchmarks/compare.py --methods grpo pods --seeds 0 --steps 20

Each method runs at its script's defaults (grpo.py's batch: 16 prompts x 8 completions, lr 1e-4),
one thread per run, `--workers` runs at a time; finished runs under --results are reused. Writes
into --out: table.md (the protocol of shared/spec/BENCHMARK.md: 99% of GRPO's peak mean sampled
accuracy as the target; updates, rollouts and training CPU seconds to reach it; peak accuracy;
per-step costs and the break-even each method's step cost implies), curves.json (mean and std over
seeds at every evaluation) and curves.png (accuracy against CPU seconds, steps and tokens trained;
needs matplotlib, which is optional: pip install matplotlib). Steps are rollout batches; curves.json
also has optimizer updates (several per step for DGG) and rollouts generated.
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
    "d3s": "rollouts generated (16 x 8); trains on 50% -> 100% of them and of their tokens",
    "d1s": "as d3s, sample level only",
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


def summary(dirs):
    """Per-step costs, medians over all steps after the first of every seed (wall clock, as logged)."""
    recs = [r for d in dirs for r in harness.records(d)[1:]]
    med = lambda key: statistics.median(r.get(key, 0.0) for r in recs)  # noqa: E731
    return {"generate_s": med("time/generate"), "update_s": statistics.median(r["time/logps"] + r["time/update"] for r in recs),
            "tokens_trained_per_step": med("tokens/trained"),
            "cpu_s_per_step": statistics.mean(harness.records(d)[-1]["time/train_cpu_total"] / len(harness.records(d))
                                              for d in dirs)}


def plot(curves, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib). The table and curves.json are written.")
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharey=True)
    for label, c in curves.items():
        for ax, x in zip(axes, ("cpu_s", "steps", "tokens_trained")):
            ax.plot(c[x], c["acc_mean"], label=label)
            lo = [m - s for m, s in zip(c["acc_mean"], c["acc_std"])]
            hi = [m + s for m, s in zip(c["acc_mean"], c["acc_std"])]
            ax.fill_between(c[x], lo, hi, alpha=0.15)
    for ax, x, name in zip(axes, ("cpu_s", "steps", "tokens_trained"),
                           ("training CPU seconds (1 thread)", "steps (rollout batches)", "tokens trained")):
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
        if "grpo" in curves:  # keep the baseline's range readable; a costlier method runs off to the right
            ax.set_xlim(0, (1.02 if x == "steps" else 1.6) * max(curves["grpo"][x]))
    axes[0].set_ylabel("held-out sampled pass@1 (mean ± std over seeds)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["grpo", "pods", "cppo", "dppo", "d3s", "gvm_raft++", "dgg"],
                        choices=sorted(harness.CONFIGS), help="configurations (harness.CONFIGS); grpo is always included")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--eval_size", type=int, default=256, help="held-out problems per evaluation")
    parser.add_argument("--results", default=harness.RESULTS, help="where the runs live (reused when finished)")
    parser.add_argument("--out", default=os.path.join(harness.RESULTS, "compare"))
    parser.add_argument("--existing", action="store_true", help="train nothing: report the runs that have finished")
    args = parser.parse_args(argv)
    methods = ["grpo"] + [m for m in args.methods if m != "grpo"]
    if args.existing:  # report the finished runs only; a config with fewer seeds says so in its label
        groups = {}
        for c in methods:
            dirs = [os.path.join(args.results, f"{c}_steps{args.steps}", f"seed{s}") for s in args.seeds]
            dirs = [d for d in dirs if os.path.exists(os.path.join(d, "final", "config.json"))]
            if dirs:
                groups[c if len(dirs) == len(args.seeds) else f"{c} ({len(dirs)} seed{'s' * (len(dirs) > 1)})"] = dirs
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
    base = costs["grpo"]["cpu_s_per_step"]
    lines = [f"# Every method on the tiny task ({harness.machine()})", "",
             f"Command: `python benchmarks/compare.py --methods {' '.join(methods)} --seeds "
             f"{' '.join(map(str, args.seeds))} --steps {args.steps} --workers {args.workers} --eval_size {args.eval_size}"
             f"{' --existing' if args.existing else ''}`",
             "", harness.report(groups, "grpo"), "",
             "Costs per step (medians over steps; generate and update are wall seconds as logged, so they include "
             "whatever else ran on the machine; CPU s per step is the run's own work). A method beats GRPO in "
             "training time only if its speed-up in updates exceeds its step-cost ratio.", "",
             "| config | held equal to GRPO | generate s | old/ref + update s | tokens trained | CPU s per step "
             "| step-cost ratio = break-even update speed-up |", "|---|---|---|---|---|---|---|"]
    for label, c in costs.items():
        lines.append(f"| {label} | {EQUAL.get(label.split(' (')[0], '')} | {c['generate_s']:.2f} | {c['update_s']:.2f} "
                     f"| {c['tokens_trained_per_step']:.0f} | {c['cpu_s_per_step']:.2f} | {c['cpu_s_per_step'] / base:.2f}x |")
    figure = plot(curves, os.path.join(args.out, "curves.png"))
    lines += ["", "Raw curves: curves.json; per-step records: the metrics.jsonl of each run listed there."
              + (" Figure: curves.png." if figure else "")]
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return args.out


if __name__ == "__main__":
    main()
