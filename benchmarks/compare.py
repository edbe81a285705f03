"""Every method on the tiny task, side by side: target-free accuracy, speed-ups with valid tests, the power arithmetic.

    python benchmarks/compare.py                                   # 7 methods x 10 seeds x 60 steps
    python benchmarks/compare.py --methods pods_paper cppo_paper --seeds 0 1 2 3 4   # paper settings + their baselines
    python benchmarks/compare.py --methods grpo "cppo_p0.6=cppo.py:--prune_rate 0.6" --seeds 0 --steps 10 --eval_size 64
    python benchmarks/compare.py --existing --out docs/results     # redo the analysis from the saved runs alone

Configs: a name in benchmarks/harness.py's CONFIGS, any top-level script with marked method regions (its
defaults), or NAME=script.py:--flag value. Each run has one thread, `--workers` at a time, evaluated every 5
steps on 512 held-out problems x 4 samples; finished runs under --results are reused, interrupted ones
resumed. The defaults are compared with grpo.py, a paper's setting (`<method>_paper`) with its paper's own
GRPO baseline (PAPER_BASELINE, added automatically). benchmarks/run_queue.py schedules the same runs in
pairs (each seed beside its baseline's same seed); its baseline twins are used here where they exist.

The rule (benchmarks/stats.py): a speed-up is *resolved* only when its Holm-adjusted p is below 0.05 over
its table's family; the test is an exact permutation test on log values, paired (sign flips) over the seeds
both configs ran, since the same seed draws the same prompt stream; CPU seconds pair a config's seed only
with the baseline twin that ran beside it. A seed one side lacks is left out of the pairs (the test never
falls back to unpaired because a run is unfinished); with no seed in common it is unpaired. The primary family is every
config's cost to 95% of its baseline's peak on updates and CPU seconds, plus its paper's own axis (DGG:
rollouts generated; GVM: rollout steps and rollouts). 90% and 100% of the peak are shown beside it.

Writes into --out (tables first, then figures):
  table.md        accuracy at fixed budgets (target-free); costs to 0.90 / 0.95 / 1.00 of the baseline's peak
                  (Kaplan-Meier medians: seeds that never reach it are censored, not dropped); the claims with
                  p, Holm-adjusted p and the probability of improvement; per-seed rows; the power arithmetic;
                  per-step costs and the cost model scored on cost ratios
  readme.md       the README's results tables: the claims that survive, the rest "not resolved" with numbers
  runs/           each run's compact copy (config + the per-step fields read here): --existing needs no more
  curves.json     mean and sd over seeds at every evaluation
  panels.png      one row per method: accuracy against its paper's axis and against CPU seconds
  break_even.png  speed-up in updates vs cost per update, both with 95% intervals
The figures need matplotlib (optional: pip install matplotlib).
"""

import argparse
import json
import os
import shlex
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import stats  # noqa: E402

# What each comparison with GRPO holds equal, following each paper's protocol.
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
    "dppo": "prompts generated per step (16 x 8 on average; skipped prompts are refilled), 256 train prompts",
    "dppo_grpo": "dppo's baseline: dppo.py's neutral setting (= grpo.py, the same loss_type grpo), 256 train prompts",
    "dppo_paper": "as dppo_paper_grpo (16 x 5 generated on average, 128 train prompts); r_q = 0.25, r_o = 0.5",
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
    "gvm_paper": "samples trained per step (128, drawn fresh after 8 pilot samples per prompt); 32 optimiser steps per "
                 "rollout step vs raft++_paper's 4 (the official mini-batch counts)",
    "gvm_paper_prompt_mean": "as gvm_paper, M-step = per-prompt mean (the paper's Algorithm 1)",
    "gvm_paper_spg4": "as gvm_paper, 4 optimiser steps per rollout step as its baseline (no update-count confound)",
    "raft++_paper": "gvm_paper's baseline: 128 samples uniform (16 x 8), all in the token mean, KL 0.001, 4 steps",
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

# Each paper setting is compared with its own paper's GRPO baseline, dppo with its neutral setting (the same
# loss_type and train prompts); everything else with grpo. A config from the second warm start (suffix _tiny1)
# is compared with its baseline from the same warm start.
PAPER_BASELINE = {"dppo": "dppo_grpo", "dppo_nopack": "dppo_grpo", "pods_paper": "grpo_pods_paper",
                  "cppo_paper": "grpo_cppo_paper", "cppo_paper_p0.75": "grpo_cppo_paper", "cppo_paper_p0.875": "grpo_cppo_paper", "dppo_paper": "dppo_paper_grpo", "gvm_paper": "raft++_paper",
                  "gvm_paper_prompt_mean": "raft++_paper", "gvm_paper_spg4": "raft++_paper", "dgg_paper": "grpo_dgg_paper",
                  "dgg_paper_tau0.1": "grpo_dgg_paper", "dgg_paper_tau1.0": "grpo_dgg_paper", "reuse_k4_paper": "grpo_dgg_paper"}
SCRIPT_FAMILY = {"grpo.py": "GRPO", "pods.py": "PODS", "cppo.py": "CPPO", "dppo.py": "DPPO", "d3s.py": "D3S",
                 "gvm_raft.py": "GVM", "dgg.py": "DGG"}  # a script not listed is its own family, named after it
# Where each paper makes its claim, tested beside the common axes (the paper's own words: DGG counts rollouts
# generated, GVM rollout steps and samples; CPPO and PODS updates and time, as every config here).
COMMON_AXES = ("updates", "cpu_s")
OWN_AXES = {"DGG": ("rollouts",), "GVM": ("steps", "rollouts")}
AXIS_NAME = {"updates": "updates", "steps": "rollout steps", "rollouts": "rollouts generated", "tokens": "tokens trained",
             "cpu_s": "CPU s"}
FRACTIONS, PRIMARY = (0.90, 0.95, 1.00), 0.95
BUDGETS = (0.25, 0.5, 1.0)  # accuracy at these fractions of the comparison's shortest run, on each axis
PROTOCOL = {"steps": harness.STEPS, "eval_size": 512, "eval_num_samples": 4}


def name(label):
    return label.split(" (")[0]


def baseline_of(label):
    c = name(label)
    if c.endswith(harness.WARM_START_1):
        return baseline_of(c[:-len(harness.WARM_START_1)]) + harness.WARM_START_1
    return PAPER_BASELINE.get(c, "grpo")


def family(label):
    """The method a config belongs to (its script's); a paper's own GRPO baseline belongs to its method, and
    grpo itself to none (it is drawn beside every method)."""
    c = name(label).removesuffix(harness.WARM_START_1)
    if c == "grpo":
        return None
    for key, base in PAPER_BASELINE.items():
        if c == base:
            return family(key)
    script = harness.CONFIGS[c][0]
    return SCRIPT_FAMILY.get(script, script[:-3].upper())


def claim_axes(label):
    return COMMON_AXES + OWN_AXES.get(family(label), ())


def fmt_cell(mean, lo, hi, digits=3):
    return f"{mean:.{digits}f}" + (f" [{lo:.{digits}f}-{hi:.{digits}f}]" if lo == lo else "")


def cpu_per_update(run):
    last = run["records"][-1]
    return last["time/train_cpu_total"] / max(last["updates_total"], 1)


def summary(runs):
    """Per-step costs of one config: medians over all steps after the first of every seed (wall seconds as
    logged), and per seed the run's own CPU seconds per step and per optimizer update."""
    recs = [r for run in runs for r in run["records"][1:]] or [r for run in runs for r in run["records"]]
    med = lambda key: statistics.median(r.get(key, 0.0) for r in recs)  # noqa: E731
    last = [run["records"][-1] for run in runs]
    steps = [len(run["records"]) for run in runs]
    per_update = [cpu_per_update(run) for run in runs]
    return {"generate_s": med("time/generate"), "update_s": statistics.median(r.get("time/logps", 0) + r.get("time/update", 0) for r in recs),
            "tokens_trained_per_step": med("tokens/trained"),
            "rollouts_generated_per_step": statistics.mean(r["rollouts/generated_total"] / n for r, n in zip(last, steps)),
            "cpu_s_per_step": statistics.mean(r["time/train_cpu_total"] / n for r, n in zip(last, steps)),
            "cpu_s_per_update": statistics.mean(per_update)}


class Comparison:
    """One baseline and the configs compared with it: every number of its tables, from the runs' curves."""

    def __init__(self, groups, base, members, twins):
        self.base, self.members = base, [base] + [m for m in members if m != base]
        self.runs = {lb: groups[lb] for lb in self.members}
        self.pts = {lb: [np.asarray(harness.curve(r), float) for r in runs] for lb, runs in self.runs.items()}
        n_eval = min(len(p) for p in self.pts[base])
        self.base_acc = np.stack([p[:n_eval, 4] for p in self.pts[base]])  # (seeds, evaluations)
        self.peak = float(self.base_acc.mean(0).max())
        self.twins = twins  # {config: the baseline's runs made beside it, seed for seed} (benchmarks/run_queue.py)
        self.seeds = {lb: [r["seed"] for r in runs] for lb, runs in self.runs.items()}

    def pairs(self, label, axis):
        """(baseline runs, indices of `label`'s runs, paired) for one test. A seed that both have is a pair: the same
        seed gives the same prompt stream. On the CPU axis the pair's baseline is the twin that ran beside this
        config (same co-runner, same time) wherever the queue made one, and seeds without a twin are left out; on
        the count axes any baseline run of that seed will do (a twin's curve is the same run's). With no seed in
        common, the test is unpaired over every run. Pairing never depends on which other runs have finished."""
        own = dict(zip(self.seeds[self.base], self.runs[self.base]))
        twin = {r["seed"]: r for r in self.twins.get(label, [])}
        by_seed = twin if axis == "cpu_s" and twin else {**twin, **own}
        idx = [j for j, s in enumerate(self.seeds[label]) if s in by_seed]
        if not idx:
            return self.runs[self.base], list(range(len(self.runs[label]))), False
        return [by_seed[self.seeds[label][j]] for j in idx], idx, True

    def target(self, idx, fraction, acc=None):
        """`fraction` of the peak of the baseline's mean curve over the seeds `idx` (any leading shape) of `acc`
        ((seeds, evaluations); the baseline's own runs by default)."""
        return fraction * (self.base_acc if acc is None else acc)[idx].mean(-2).max(-1)

    def costs(self, curves, targets, axis):
        """(values, reached) of every curve at `targets` (shape (...)), stacked on a last axis of runs."""
        found = [harness.crossings(c, targets, axis) for c in curves]
        return np.stack([v for v, _ in found], -1), np.stack([r for _, r in found], -1)

    def claim(self, label, axis, fraction):
        """The test of `label` against the baseline on `axis` at `fraction` of the baseline's peak, with the target
        re-derived inside every bootstrap resample from the resampled baseline runs of the test itself (so a
        paired test's target comes from its pairs)."""
        base_runs, idx, paired = self.pairs(label, axis)
        base_curves = [np.asarray(harness.curve(r), float) for r in base_runs]
        curves = [self.pts[label][j] for j in idx]
        acc = np.stack([p[:min(len(q) for q in base_curves), 4] for p in base_curves])  # (runs, evaluations)
        take = lambda a, i: np.take_along_axis(a, i, -1)  # noqa: E731

        def resample(i, j):
            t = self.target(i, fraction, acc)
            bv, br = self.costs(base_curves, t, axis)
            cv, cr = self.costs(curves, t, axis)
            return take(bv, i), take(br, i), take(cv, j), take(cr, j)

        bv, br, cv, cr = resample(np.arange(len(base_curves)), np.arange(len(curves)))
        c = stats.claim(bv, cv, br, cr, paired=paired, resample=resample)
        return c and {**c, "config": label, "axis": axis, "fraction": fraction}

    def claims(self, fraction):
        """Every claim of one table (one family), Holm-adjusted together."""
        rows = [self.claim(lb, a, fraction) for lb in self.members[1:] for a in claim_axes(lb)]
        rows = [r for r in rows if r]
        for r, adj in zip(rows, stats.holm([r["p"] for r in rows])):
            r["adjusted"] = adj
        return rows

    def budgets(self):
        """{axis: budgets}: fractions of the shortest run of the comparison on each axis, so every run covers them."""
        return {axis: [f * min(p[-1, harness.AXES[axis]] for ps in self.pts.values() for p in ps) for f in BUDGETS]
                for axis in ("updates", "rollouts", "cpu_s")}


def direction(row):
    return "faster" if row["speedup"] > 1 else "slower"


def verdict(row):
    """Resolved by the adjusted p alone; but a censored seed's cost is only a lower bound, so a config that missed
    the target cannot be resolved faster (nor its baseline, if that missed it, make a config resolved slower)."""
    kb, nb, kc, nc = row["reached"]
    if not stats.resolved(row["adjusted"]):
        return "not resolved"
    if (direction(row) == "faster" and kc < nc) or (direction(row) == "slower" and kb < nb):
        return "not resolved (censored seeds: the speed-up is only a bound)"
    return f"**resolved: {direction(row)}**"


def claim_cells(r):
    (lo, hi), (plo, phi), (kb, nb, kc, nc) = r["interval"], r["pi_interval"], r["reached"]
    interval = f" [{lo:.2f}-{hi:.2f}]" if lo == lo else ""
    # censored costs are lower bounds: the config's make the speed-up an upper bound, the baseline's a lower one
    bound = {(False, True): "<= ", (True, False): ">= ", (True, True): "~ "}.get((kb < nb, kc < nc), "")
    pi = f"{r['pi']:.2f}" + (f" [{plo:.2f}-{phi:.2f}]" if plo == plo else "")
    return (f"{kb}/{nb}, {kc}/{nc}", f"{bound}{r['speedup']:.2f}x{interval}", "paired" if r["paired"] else "unpaired",
            f"{r['p']:.4f}", f"{r['adjusted']:.3f}", pi)


def report(cmp, equal_note):
    """Markdown of one comparison, and its primary claims."""
    base, lines = cmp.base, []
    # 1. target-free: accuracy at fixed budgets
    budgets = cmp.budgets()
    head = [f"{AXIS_NAME[a]} {b:.0f}" for a, bs in budgets.items() for b in bs]
    lines += ["Accuracy at fixed budgets (target-free): mean over seeds and 95% t-interval, at 1/4, 1/2 and all of the "
              "comparison's shortest run on each axis.", "",
              "| config | seeds | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for lb in cmp.members:
        cells = []
        for a, bs in budgets.items():
            for b in bs:
                accs = [harness.at_budget(p, b, a) for p in cmp.pts[lb]]
                cells.append(fmt_cell(*stats.t_interval(accs)) if None not in accs else "-")
        lines.append(f"| {lb} | {len(cmp.pts[lb])} | " + " | ".join(cells) + " |")
    # 2. costs to the targets, censored seeds kept
    lines += ["", f"Cost to reach {', '.join(f'{f:.0%}' for f in FRACTIONS)} of {base}'s peak mean accuracy "
              f"{cmp.peak:.3f}: Kaplan-Meier median over seeds (a seed that never reaches the target is censored at its "
              f"run's end, and counted: 'k/n reached').", "",
              "| config | target | " + " | ".join(AXIS_NAME[a] for a in ("updates", "steps", "rollouts", "tokens", "cpu_s"))
              + " |", "|---|---|---|---|---|---|---|"]
    for lb in cmp.members:
        for f in FRACTIONS:
            t = f * cmp.peak
            cells = [stats.censored_summary(*cmp.costs(cmp.pts[lb], t, a), digits=1 if a == "cpu_s" else 0)
                     for a in ("updates", "steps", "rollouts", "tokens", "cpu_s")]
            lines.append(f"| {lb} | {f:.0%} = {t:.3f} | " + " | ".join(cells) + " |")
    # 3. the claims: the primary family, then the other targets beside it
    primary = cmp.claims(PRIMARY)
    others = {f: {(r["config"], r["axis"]): r for r in cmp.claims(f)} for f in FRACTIONS if f != PRIMARY}
    lines += ["", f"Claims against {base} at {PRIMARY:.0%} of its peak (one family of {len(primary)} tests, Holm-adjusted). "
              "Speed-up: ratio of geometric means (> 1: the config needs less), 95% bootstrap interval with the target "
              "re-derived in each resample; p: exact permutation test on log costs at the observed target; P(impr.): probability that a random seed of the config needs less than one "
              f"of {base}'s. The other targets' columns show whether a verdict depends on the target (each its own family).",
              "", "| config | axis | reached (base, config) | speed-up | test | p | Holm p | P(impr.) | verdict | "
              + " | ".join(f"at {f:.0%}: speed-up, Holm p" for f in others) + " |", "|---|---|---|---|---|---|---|---|---|"
              + "---|" * len(others)]
    for r in primary:
        extra = [others[f].get((r["config"], r["axis"])) for f in others]
        lines.append(f"| {r['config']} | {AXIS_NAME[r['axis']]} | " + " | ".join(claim_cells(r)) + f" | {verdict(r)} | "
                     + " | ".join(f"{o['speedup']:.2f}x, {o['adjusted']:.3f}" if o else "-" for o in extra) + " |")
    # 4. per seed, at the primary target
    t = PRIMARY * cmp.peak
    lines += ["", f"Per seed at {PRIMARY:.0%} = {t:.3f} (updates / rollouts / tokens / CPU s to target; peak; final accuracy):", "",
              "| config | seed | updates | rollouts | tokens | CPU s | peak | final |", "|---|---|---|---|---|---|---|---|"]
    for lb in cmp.members:
        for run, p in zip(cmp.runs[lb], cmp.pts[lb]):
            hit = harness.crossing(p, t)
            got = (f"{hit['updates']:.1f} | {hit['rollouts']:.0f} | {hit['tokens']:.0f} | {hit['cpu_s']:.1f}" if hit else
                   "not reached | - | - | -")
            lines.append(f"| {lb} | seed{run['seed']} | {got} | {p[:, 4].max():.3f} | {p[-1, 4]:.3f} |")
    lines += ["", equal_note] if equal_note else []
    return lines, primary


def power(cmp, primary):
    """How many seeds the claims need: each config's own spread (sd of log costs, about the cv, with its interval),
    t-based sample sizes for a 10% difference, and the smallest p the current seeds can give at all."""
    base, t = cmp.base, PRIMARY * cmp.peak
    m = max(len(primary), 1)
    lines = [f"Power at {PRIMARY:.0%} of {base}'s peak. A test here can never give p below 2 / 2^n for n pairs (unpaired: "
             f"one or two splits of C(n_a + n_b, n_a)); times this family's {m} tests, that must be below 0.05: it takes "
             f"at least **{stats.seeds_for_family(m)} pairs of seeds** before a claim can be resolved at all. Seeds for a 10% "
             "difference: the fewest per config at which a two-sided t-test on log costs (this config's and the "
             "baseline's spreads pooled) has 80% power; in brackets, the same at the ends of the spread's 95% interval.", "",
             "| config | axis | seeds | sd of log cost (~cv) [95%] | smallest p possible x family | seeds for a 10% difference |",
             "|---|---|---|---|---|---|"]
    base_sd = {}
    for lb in cmp.members:
        for a in (COMMON_AXES if lb == base else claim_axes(lb)):
            v, r = cmp.costs(cmp.pts[lb], t, a)
            if not r.all() or min(v) <= 0 or len(v) < 2:
                lines.append(f"| {lb} | {AXIS_NAME[a]} | {len(v)} | - ({int(r.sum())}/{len(r)} reached) | - | - |")
                continue
            sd, lo, hi = stats.log_sd(v)
            if lb == base:
                base_sd[a] = (sd, lo, hi)
                lines.append(f"| {lb} | {AXIS_NAME[a]} | {len(v)} | {sd:.3f} [{lo:.3f}-{hi:.3f}] | - | - |")
                continue
            b = base_sd.get(a, (sd, lo, hi))
            need = [stats.seeds_needed(((x ** 2 + y ** 2) / 2) ** 0.5) for x, y in zip((sd, lo, hi), b)]
            _, idx, paired = cmp.pairs(lb, a)
            best = min(1.0, m * stats.smallest_p(len(idx) if paired else len(cmp.seeds[base]), len(idx), paired))
            lines.append(f"| {lb} | {AXIS_NAME[a]} | {len(v)} | {sd:.3f} [{lo:.3f}-{hi:.3f}] | {best:.3f} "
                         f"| {need[0]} [{need[1]}-{need[2]}] |")
    diffs = [b - a for acc in cmp.base_acc for a, b in zip(acc[len(acc) // 2:], acc[len(acc) // 2 + 1:])]
    if len(diffs) > 1:
        lines += ["", f"Evaluation noise: successive evaluations of {base} over the second half of its runs differ by sd "
                  f"{statistics.pstdev(diffs):.4f}, i.e. {statistics.pstdev(diffs) / 2 ** 0.5:.4f} per evaluation. The "
                  "evaluation reuses one sampling seed on a fixed problem set, so this is mostly the policy's own "
                  "fluctuation from step to step (and the curve's drift), not binomial sampling noise."]
    return lines


def break_even_points(groups, comparisons, claims):
    """{label: (speed-up in updates, lo, hi, cost-per-update ratio, lo, hi)} for configs every seed of which reached
    the primary target; {label: 'k/n'} for the others (drawn as a note, never silently left out)."""
    points, missed = {}, {}
    for r in claims:
        if r["axis"] != "updates":
            continue
        lb, base = r["config"], baseline_of(r["config"])
        kb, nb, kc, nc = r["reached"]
        if kb < nb or kc < nc:
            missed[lb] = f"{kc}/{nc} seeds reached"
            continue
        base_runs, idx, paired = comparisons[base].pairs(lb, "cpu_s")  # CPU per update beside the same co-runner
        b = np.asarray([cpu_per_update(run) for run in base_runs])
        c = np.asarray([cpu_per_update(groups[lb][j]) for j in idx])
        lo, hi = stats.bootstrap_interval(lambda i, j: c[j].mean(-1) / b[i].mean(-1), len(b), len(c), paired)
        points[lb] = (r["speedup"], *r["interval"], c.mean() / b.mean(), lo, hi)
    return points, missed


def plot_panels(groups, comparisons, path):
    """One row per method: its configs against GRPO (always grey) and its paper's baseline (always black, dashed),
    accuracy against its paper's axis (left) and CPU seconds (right), 95% t-bands over seeds; x up to the
    baseline's horizon, longer runs noted in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(dict.fromkeys(family(lb) for lb in groups if family(lb)))
    if not fams:  # grpo alone: one row for it
        fams = [None]
    fig, axes = plt.subplots(len(fams), 2, figsize=(8.4, 3.9 * len(fams)), squeeze=False, layout="constrained")
    cycle = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:pink", "tab:olive", "tab:cyan"]
    drawn = set()
    for row, fam in enumerate(fams):
        members = [lb for lb in groups if family(lb) == fam]
        base = next((baseline_of(m) for m in members if baseline_of(m) != "grpo"), "grpo")
        shown = list(dict.fromkeys(["grpo"] + ([base] if base in groups else []) + members))
        own = OWN_AXES.get(fam, ("updates",))[0]
        for col, axis in enumerate((own, "cpu_s")):
            ax, k, cut = axes[row][col], 0, []
            horizon = max(np.asarray(harness.curve(r))[-1, harness.AXES[axis]] for r in groups[base if base in groups else "grpo"])
            for lb in shown:
                curves = [np.asarray(harness.curve(r), float) for r in groups[lb]]
                n = min(len(c) for c in curves)
                x = np.mean([c[:n, harness.AXES[axis]] for c in curves], 0)
                mean, lo, hi = map(np.asarray, zip(*(stats.t_interval([c[i, 4] for c in curves]) for i in range(n))))
                style = (dict(color="0.55", lw=2.4) if lb == "grpo" else dict(color="black", lw=1.8, ls="--") if lb == base
                         else dict(color=cycle[k % len(cycle)], lw=1.6))
                k += lb not in ("grpo", base)
                ax.plot(x, mean, label=f"{lb} ({len(curves)})", **style)
                if len(curves) > 1:
                    ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15, lw=0)
                if x[-1] > horizon * 1.05:
                    cut.append(f"{lb} to {x[-1]:.0f}")
                drawn.add(lb)
            ax.set_xlim(0, horizon * 1.02)
            ax.grid(alpha=0.3)
            ax.set_xlabel(AXIS_NAME[axis] if axis != "cpu_s" else "training CPU seconds (1 thread)")
            ax.set_ylabel("held-out accuracy")
            ax.set_title((fam or "GRPO") + (f" (cut: {', '.join(cut)})" if cut else ""), fontsize=9)
        axes[row][0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=2, frameon=False)
    missing = sorted(set(groups) - drawn)
    fig.suptitle("Each method against GRPO (grey) and its paper's baseline (black, dashed); 95% t-band over seeds "
                 "(n in the legend)" + (f"; not drawn: {', '.join(missing)}" if missing else ""), fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return missing


def plot_break_even(points, missed, path):
    """Speed-up in updates (x) against cost per update relative to the baseline (y), 95% intervals on both. Below
    the diagonal a config wins in training time; configs that did not reach the target are listed, not drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6.4), layout="constrained")
    finite = [v for p in points.values() for v in p if v == v]
    top = max([1.5] + finite) * 1.1
    ax.plot([0, top], [0, top], color="0.3", ls="--", lw=1, label="break-even: equal training time")
    ax.fill_between([0, top], [0, 0], [0, top], color="tab:green", alpha=0.07, label="faster than its baseline")
    for i, (lb, (s, slo, shi, c, clo, chi)) in enumerate(points.items()):
        colour = f"C{i % 10}"
        err = lambda v, lo, hi: [[v - lo], [hi - v]] if lo == lo else None  # noqa: E731
        ax.errorbar([s], [c], xerr=err(s, slo, shi), yerr=err(c, clo, chi), fmt="o", color=colour, capsize=3)
        ax.annotate(lb, (s, c), textcoords="offset points", xytext=(5, 4), fontsize=8, color=colour)
    ax.set_xlim(0, top), ax.set_ylim(0, top)
    ax.set_xlabel("speed-up in updates to 95% of the baseline's peak (x, 95% interval)")
    ax.set_ylabel("CPU seconds per update / its baseline's (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if missed:
        ax.text(0.99, 0.01, "not drawn (target not reached by every seed):\n" + "\n".join(f"{k}: {v}" for k, v in missed.items()),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_groups(methods, args, tag):
    """{config: [runs]}, and the baseline twins {config: [runs]}: a finished run under --results (its compact copy
    written to <out>/runs), else that compact copy if its settings match; a config with no run is left out."""
    want = {"max_steps": args.steps, "eval_size": args.eval_size, "eval_num_samples": args.eval_num_samples}

    def one(label, seed):
        path = harness.run_dir(label, seed, args.steps, args.results, tag)
        copy = os.path.join(args.out, "runs", label, f"seed{seed}.jsonl")
        if harness.finished(path):
            run = harness.load(path)
            harness.save(run, copy)
            return run
        if os.path.exists(copy):
            run = harness.load(copy)
            if all(run["config"].get(k) == v for k, v in want.items()):
                return run
        return None

    def own_beside(base, seed, c):
        run = one(base, seed)
        return run if run and run.get("beside") == c else None

    groups, twins = {}, {}
    for c in methods:
        runs = [r for s in args.seeds if (r := one(c, s))]
        if runs:
            groups[c] = runs
        base = baseline_of(c)
        if c != base and runs:  # per seed, the baseline's run made beside this config's: its twin, or its own run
            twin = [t for r in runs if (t := one(f"{base}_beside_{c}", r["seed"]) or own_beside(base, r["seed"], c))]
            if twin:  # seeds without one are paired on the count axes only (Comparison.pairs)
                twins[c] = twin
    return groups, twins


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["grpo", "pods", "cppo", "dppo", "d3s", "gvm_raft++", "dgg"],
                        help="configs: harness.CONFIGS names, scripts with marked regions, or NAME=script.py:--flag value; "
                             "grpo is always included")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--steps", type=int, default=PROTOCOL["steps"])
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--eval_size", type=int, default=PROTOCOL["eval_size"], help="held-out problems per evaluation")
    parser.add_argument("--eval_num_samples", type=int, default=PROTOCOL["eval_num_samples"],
                        help="samples per problem (0: greedy accuracy only)")
    parser.add_argument("--results", default=harness.RESULTS, help="where the runs live (reused when finished)")
    parser.add_argument("--out", default=os.path.join(harness.RESULTS, "compare"))
    parser.add_argument("--existing", action="store_true",
                        help="train nothing: report the finished runs under --results, or their compact copies in <out>/runs")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_size < 1 or args.eval_num_samples < 0 or not args.seeds:
        raise SystemExit("error: --steps and --eval_size must be >= 1, --eval_num_samples >= 0, and --seeds not empty")
    methods = ["grpo"] + [m for m in map(harness.resolve, args.methods) if m != "grpo"]
    methods += [b for m in methods if (b := PAPER_BASELINE.get(m)) and b not in methods]  # each paper's own baseline
    setting = {"steps": args.steps, "eval_size": args.eval_size, "eval_num_samples": args.eval_num_samples}
    trial = setting != PROTOCOL
    tag = "" if setting["eval_size"] == PROTOCOL["eval_size"] and setting["eval_num_samples"] == PROTOCOL["eval_num_samples"] \
        else f"_eval{args.eval_size}x{args.eval_num_samples}"
    if not args.existing:
        harness.run_all(methods, args.seeds, args.steps, args.workers, args.results, tag=tag,
                        extra=["--eval_size", str(args.eval_size), "--eval_num_samples", str(args.eval_num_samples)])
    os.makedirs(args.out, exist_ok=True)
    groups, twins = load_groups(methods, args, tag)
    if "grpo" not in groups:
        raise SystemExit(f"error: no finished grpo run under {args.results} or {os.path.join(args.out, 'runs')} "
                         f"(steps {args.steps}, eval {args.eval_size} x {args.eval_num_samples})")

    curves = {}
    for label, runs in groups.items():
        mean, per_seed = harness.mean_curve(runs)
        accs = list(zip(*[[p[4] for p in c[:len(mean)]] for c in per_seed]))
        curves[label] = {"steps": [p[5] for p in mean], "updates": [p[0] for p in mean], "cpu_s": [p[1] for p in mean],
                         "rollouts": [p[2] for p in mean], "tokens_trained": [p[3] for p in mean],
                         "acc_mean": [p[4] for p in mean], "acc_std": [statistics.pstdev(a) for a in accs],
                         "accuracy": harness.accuracy(runs[0]), "seeds": [r["seed"] for r in runs]}
    with open(os.path.join(args.out, "curves.json"), "w") as f:
        json.dump(curves, f, indent=1)

    costs = {label: summary(runs) for label, runs in groups.items()}
    metric = {harness.accuracy(r) for runs in groups.values() for r in runs}
    lines = [f"# Every method on the tiny task ({harness.machine()})", "",
             f"Command: `python benchmarks/compare.py {shlex.join(argv)}`", ""]
    if trial:
        lines += [f"**A quick trial, not the protocol** ({args.steps} steps, evaluation {args.eval_size} problems x "
                  f"{args.eval_num_samples} samples; the protocol is {PROTOCOL['steps']} steps, "
                  f"{PROTOCOL['eval_size']} x {PROTOCOL['eval_num_samples']}): its numbers are not comparable with the "
                  "protocol's.", ""]
    if "greedy_acc" in metric:
        lines += ["Accuracy is greedy for runs that sampled nothing (--eval_num_samples 0), sampled pass@1 otherwise.", ""]
    missing = [c for c in methods if c not in groups]
    if missing:
        lines += [f"No finished runs (left out): {', '.join(missing)}.", ""]
    comparisons, all_claims, readme = {}, [], []
    for base in ["grpo"] + sorted({baseline_of(lb) for lb in groups} - {"grpo"}):
        members = [lb for lb in groups if lb != base and baseline_of(lb) == base and lb not in PAPER_BASELINE.values()]
        if base not in groups:
            if members:
                lines += [f"## {', '.join(members)}: no finished {base} run to compare with", ""]
            continue
        cmp = comparisons[base] = Comparison(groups, base, members, twins)
        paired_cpu = [m for m in members if m in twins]
        note = ("CPU seconds depend on whatever shared the machine with a run. " +
                (f"{', '.join(paired_cpu)} ran seed for seed beside a twin of {base} (benchmarks/run_queue.py: same co-runner, "
                 "same time), and are compared with that twin." if paired_cpu else
                 f"No config here ran beside its own seed of {base} (benchmarks/run_queue.py schedules that)."))
        body, primary = report(cmp, note)
        lines += [f"## Against {base}" + (" (the defaults)" if base == "grpo" else " (its own baseline)"),
                  ""] + body + ["", "### Statistical power", ""] + power(cmp, primary) + [""]
        all_claims += primary
        readme += [f"| {r['config']} | {base} | {AXIS_NAME[r['axis']]} | " + " | ".join(claim_cells(r)) + f" | {verdict(r)} |"
                   for r in primary]
    lines += costs_table(groups, costs) + [""]
    lines += cost_check(groups, costs, args, {r["config"]: r["speedup"] for r in all_claims if r["axis"] == "updates"})
    lines += ["", "Figures: panels.png (each method against GRPO), break_even.png (speed-up vs cost per update). "
              "Raw curves: curves.json; each run's per-step records: runs/<config>/seed<k>.jsonl."]
    with open(os.path.join(args.out, "table.md"), "w") as f:  # the tables first: a figure that fails loses no table
        f.write("\n".join(lines) + "\n")
    resolved = [r for r in all_claims if verdict(r).startswith("**")]
    head = ([f"**A quick trial, not the protocol** ({args.steps} steps, evaluation {args.eval_size} x {args.eval_num_samples}).", ""]
            if trial else [])
    seeds = ", ".join(f"{lb} {len(runs)}" for lb, runs in groups.items())
    paired = sorted(m for cmp in comparisons.values() for m in cmp.members[1:] if m in twins)
    head += [f"{harness.machine()}, {args.steps} steps per run. Seeds per config: {seeds}."
             + (f" Run in pairs, each seed at the same time as its baseline's run of that seed "
                f"(benchmarks/run_queue.py): {', '.join(paired)}." if paired else ""), ""]
    with open(os.path.join(args.out, "readme.md"), "w") as f:
        f.write("\n".join(head + [
            f"Each config against its baseline at {PRIMARY:.0%} of the baseline's peak accuracy; resolved = Holm-adjusted "
            "p < 0.05 over its table's family (exact permutation test on log costs, paired over the seeds both ran). "
            + ("Resolved: " + "; ".join(f"{r['config']} {direction(r)} than {baseline_of(r['config'])} in "
                                         f"{AXIS_NAME[r['axis']]} ({r['speedup']:.2f}x, Holm p {r['adjusted']:.3f})"
                                         for r in resolved) + "." if resolved else "No claim is resolved."),
            "", "| config | baseline | axis | reached (base, config) | speed-up [95%] | test | p | Holm p | P(improvement) | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|"] + readme) + "\n")
    try:
        not_drawn = plot_panels(groups, comparisons, os.path.join(args.out, "panels.png"))
        plot_break_even(*break_even_points(groups, comparisons, all_claims), os.path.join(args.out, "break_even.png"))
        if not_drawn:
            print(f"panels.png: not drawn: {', '.join(not_drawn)}", file=sys.stderr)
    except ImportError:
        print("matplotlib is not installed: no figures (pip install matplotlib); the tables and curves.json are written.")
    print("\n".join(lines))
    return args.out


def costs_table(groups, costs):
    lines = ["## Costs per step", "",
             "Medians over steps; generate and update are wall seconds as logged (two runs shared the two cores); "
             "CPU s is the run's own work. A config beats its baseline in training time only if its speed-up in "
             "updates exceeds its cost-per-update ratio (break_even.png).", "",
             "| config | held equal to its baseline | rollouts generated | generate s | old/ref + update s | tokens trained "
             "| CPU s per step | CPU s per update | cost per update / baseline's |", "|---|---|---|---|---|---|---|---|---|"]
    for label, c in costs.items():
        b = costs.get(baseline_of(label), costs["grpo"])
        held = EQUAL.get(name(label)) or " ".join(harness.CONFIGS[name(label)][1]) or "the script's defaults"
        lines.append(f"| {label} | {held} | {c['rollouts_generated_per_step']:.0f} | {c['generate_s']:.2f} "
                     f"| {c['update_s']:.2f} | {c['tokens_trained_per_step']:.0f} | {c['cpu_s_per_step']:.2f} "
                     f"| {c['cpu_s_per_update']:.3f} | {c['cpu_s_per_update'] / b['cpu_s_per_update']:.2f}x |")
    return lines


def cost_check(groups, costs, args, speedups):
    """Predicted against measured costs, from benchmarks/cost_model.py's calibration (under --results or --out)."""
    path = next((p for p in (os.path.join(args.results, "cost_model.json"), os.path.join(args.out, "cost_model.json"))
                 if os.path.exists(p)), None)
    if not path:
        return ["(No cost-model calibration: run `python benchmarks/cost_model.py` for predicted vs measured step costs.)"]
    import cost_model

    return cost_model.check(groups, costs, path, baseline_of, speedups)


if __name__ == "__main__":
    main()
