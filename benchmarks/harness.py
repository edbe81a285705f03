"""The one benchmark protocol (shared/spec/BENCHMARK.md) as a few functions every benchmark script uses.

- CONFIGS names every configuration the benchmarks run (script + flags), so that every script and
  the comparison share one set of runs under benchmarks/results/<config>_steps<T>/seed<S>/.
- `run_all(jobs)` trains (config, seed) pairs in subprocesses, `workers` at a time, each on one
  thread; a finished run is reused, so an interrupted benchmark resumes where it stopped.
- `curve(run_dir)` reads metrics.jsonl into evaluation points: optimizer updates, training CPU
  seconds, rollouts generated, tokens trained and held-out accuracy.
- `report(groups, baseline)` takes the baseline's mean curve over seeds, its peak P and the target
  0.95 P; per seed, the updates, rollouts generated, tokens trained and training CPU seconds at which
  its curve first reaches the target (`crossing`, interpolated between evaluations), its peak, and
  its mean accuracy over the first K updates (`area`, target-free); then means with 95% bootstrap
  intervals over seeds (`interval`) and speed-ups over the baseline (`ratio_interval`). It returns a
  markdown table and the numbers.

The clock. Each run uses one thread, and the training time we report is its CPU time
(`time/train_cpu_total`, evaluation excluded): on a shared 2-core machine, wall clock also measures
whatever else is running, CPU time measures the run's own work, and with one thread the two agree
on an idle machine. benchmarks/step_time.py measures wall-clock step times on an idle machine as a
cross-check.

Accuracy is sampled pass@1 (4 samples per problem at temperature 1, 512 held-out problems, every 5
steps): it is what RL optimises, and greedy accuracy saturates earlier.
"""

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
# every 5 steps on 512 held-out problems x 4 samples: the arithmetic behind this choice is in compare.py's power
# section (issue 16); an evaluation costs about 6 s of one core, as much as 6 GRPO steps
EVAL_FLAGS = ["--eval_every", "5", "--eval_size", "512", "--eval_num_samples", "4", "--save_every", "0"]
STEPS = 60  # rollout batches per run: GRPO's warm start (v3) is at ~0.6 and plateaus near 0.95 by then

GVM_PAPER = ["--num_pilot", "8", "--max_per_prompt", "0", "--reuse_pilot", "False", "--zero_allocation", "skip",
             "--train_rejected", "True", "--beta", "0.001", "--steps_per_generation", "8"]
# config -> (script, flags): the defaults of each script, and the variants the method benchmarks need
CONFIGS = {
    "grpo": ("grpo.py", []),
    "pods": ("pods.py", []),  # n = 16, m = 8
    "pods_n32": ("pods.py", ["--num_generations", "32", "--num_keep", "8"]),
    # PODS paper: n = 4m (the MATH setting 32/8) with the single-GPU trainer's per-sequence mean loss, and its
    # GRPO baseline with n = m = 8 and the same loss (pods_n32 above is the multi-GPU fork's token mean)
    "pods_paper": ("pods.py", ["--num_generations", "32", "--num_keep", "8", "--loss_type", "grpo"]),
    "grpo_pods_paper": ("grpo.py", ["--loss_type", "grpo"]),
    "cppo": ("cppo.py", []),  # P = 0.5 with allocation
    "cppo_p0.75": ("cppo.py", ["--prune_rate", "0.75"]),
    "cppo_p0.875": ("cppo.py", ["--prune_rate", "0.875"]),
    # CPPO paper: G = 16, mu = 2, beta = 0.04, global pruning with allocation, token mean over the survivors;
    # 8 prompts x 16 keeps 128 rollouts trained per step as in every other config; and its GRPO baseline
    "cppo_paper": ("cppo.py", ["--num_generations", "16", "--prompts_per_step", "8", "--num_iterations", "2",
                               "--beta", "0.04"]),  # P = 0.5
    "cppo_paper_p0.75": ("cppo.py", ["--num_generations", "16", "--prompts_per_step", "8", "--num_iterations", "2",
                                     "--beta", "0.04", "--prune_rate", "0.75"]),
    "cppo_paper_p0.875": ("cppo.py", ["--num_generations", "16", "--prompts_per_step", "8", "--num_iterations", "2",
                                      "--beta", "0.04", "--prune_rate", "0.875"]),
    "grpo_cppo_paper": ("grpo.py", ["--num_generations", "16", "--prompts_per_step", "8", "--num_iterations", "2",
                                    "--beta", "0.04"]),
    "dppo": ("dppo.py", []),
    "dppo_nopack": ("dppo.py", ["--pack_max_tokens", "0"]),
    # the paper's setting scaled: G = 5, a fixed train set revisited (128 prompts = 7.5 epochs in 60 steps);
    # its rates are not public, 0.5 is ours; and its GRPO baseline (dppo.py's neutral setting = grpo.py
    # --loss_type grpo) on the same 128 prompts, since grpo.py has no --max_train_samples
    "dppo_paper": ("dppo.py", ["--num_generations", "5", "--max_train_samples", "128"]),
    "dppo_paper_grpo": ("dppo.py", ["--num_generations", "5", "--max_train_samples", "128", "--prompt_prune_rate", "0",
                                    "--completion_prune_rate", "0", "--pack_max_tokens", "0"]),
    "d3s": ("d3s.py", []),  # D3S: cross-group samples + tokens, linear schedule (the paper's variants below)
    "d3s_paper": ("d3s.py", ["--sample_ratio_start", "0.25", "--sample_ratio_end", "0.75",
                             "--token_ratio_start", "0.2", "--token_ratio_end", "0.5"]),  # paper-like; its values are not public
    # the schedule sweep (issue 14) that chose d3s's defaults (tokens 0.2 -> 0.5, samples 0.5 -> 1)
    "d3s_tokens0.5": ("d3s.py", ["--token_ratio_start", "0.5", "--token_ratio_end", "1"]),  # the earlier default
    "d3s_samples0.25": ("d3s.py", ["--sample_ratio_start", "0.25", "--sample_ratio_end", "0.75",
                                   "--token_ratio_start", "0.5", "--token_ratio_end", "1"]),
    "d3s_i": ("d3s.py", ["--scope", "intra"]),  # D3S-I: per-group samples + tokens, schedule
    "d2s": ("d3s.py", ["--schedule", "none"]),  # D2S: cross-group samples + tokens, no schedule
    "d1s_cross": ("d3s.py", ["--token_ratio_start", "1", "--token_ratio_end", "1", "--schedule", "none"]),
    "d1s": ("d3s.py", ["--scope", "intra", "--token_ratio_start", "1", "--token_ratio_end", "1", "--schedule", "none"]),
    "gvm_raft++": ("gvm_raft.py", []),
    "raft++": ("gvm_raft.py", ["--allocation", "uniform"]),
    "gvm_grpo": ("gvm_raft.py", ["--estimator", "grpo"]),
    # GVM's official setting (RLHFlow/GVM): N' = 8, no cap, n_i fresh, all-zero skips, RAFT++ token mean over all
    # samples, KL 0.001, 8x the baseline's optimiser steps per rollout step (official: 32 vs 4 mini-batches);
    # the paper's Algorithm 1 M-step (per-prompt mean) on top; and the paper's RAFT++ baseline (n = 8 uniform)
    "gvm_paper": ("gvm_raft.py", GVM_PAPER),
    "gvm_paper_prompt_mean": ("gvm_raft.py", GVM_PAPER + ["--mstep_mean", "prompt"]),
    "gvm_paper_spg1": ("gvm_raft.py", GVM_PAPER + ["--steps_per_generation", "1"]),  # without the 8x confound
    "raft++_paper": ("gvm_raft.py", ["--allocation", "uniform", "--train_rejected", "True", "--beta", "0.001"]),
    "dgg": ("dgg.py", []),  # K = 4, tau = 0.5
    "reuse_k4": ("dgg.py", ["--gate_tau", "inf"]),
    "dgg_tau0.1": ("dgg.py", ["--gate_tau", "0.1"]),
    "dgg_tau1.0": ("dgg.py", ["--gate_tau", "1.0"]),
    "dgg_shared": ("dgg.py", ["--gate_scope", "shared"]),  # one window for every pass index
    # DGG paper: group 16 (math), K = 4, tau 0.5 (the sources' grid: 0.1, 0.5, 1.0), 8 prompts x 16 = 128 rollouts
    # per batch as GRPO's default; its baselines are single-use GRPO and naive 4-fold reuse at the same shape
    "dgg_paper": ("dgg.py", ["--num_generations", "16", "--prompts_per_step", "8"]),
    "dgg_paper_tau0.1": ("dgg.py", ["--num_generations", "16", "--prompts_per_step", "8", "--gate_tau", "0.1"]),
    "dgg_paper_tau1.0": ("dgg.py", ["--num_generations", "16", "--prompts_per_step", "8", "--gate_tau", "1.0"]),
    "reuse_k4_paper": ("dgg.py", ["--num_generations", "16", "--prompts_per_step", "8", "--gate_tau", "inf"]),
    "grpo_dgg_paper": ("grpo.py", ["--num_generations", "16", "--prompts_per_step", "8"]),
}


def run(config, seed, steps=STEPS, results=RESULTS, extra=()):
    """Train one (config, seed) on one thread, or reuse the finished run; returns the run directory."""
    script, flags = CONFIGS[config]
    out = os.path.join(results, f"{config}_steps{steps}")
    run_dir = os.path.join(out, f"seed{seed}")
    if os.path.exists(os.path.join(run_dir, "final", "config.json")):
        return run_dir
    cmd = [sys.executable, script, "--seed", str(seed), "--max_steps", str(steps), "--output_dir", out,
           "--run_name", f"seed{seed}", "--log_samples_every", "0", *EVAL_FLAGS, *flags, *extra]
    print(f"[{time.strftime('%H:%M:%S')}] start {config} seed {seed}", flush=True)
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(os.path.join(results, f"{config}_steps{steps}_seed{seed}.log"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"[{time.strftime('%H:%M:%S')}] done  {config} seed {seed}", flush=True)
    return run_dir


def run_all(configs, seeds, steps=STEPS, workers=2, results=RESULTS, extra=()):
    """{config: [run_dir per seed]}, training what is missing `workers` runs at a time, seed by seed (every
    config's seed 0 first), so that a benchmark stopped early has every config at fewer seeds."""
    from concurrent.futures import ThreadPoolExecutor

    os.makedirs(results, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        futures = {(c, s): pool.submit(run, c, s, steps, results, extra) for s in seeds for c in configs}
        return {c: [futures[c, s].result() for s in seeds] for c in configs}


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def curve(run_dir, metric="sampled_acc"):
    """Evaluation points [(optimizer updates, train CPU seconds, rollouts generated, tokens trained, accuracy,
    steps)], starting before the first step."""
    recs = records(run_dir)
    points = [(0, 0.0, 0, 0, recs[0][f"eval/{metric}"], 0)]
    for r in recs:
        if f"eval_after/{metric}" in r:
            points.append((r["updates_total"], r["time/train_cpu_total"], r["rollouts/generated_total"],
                           r["tokens/trained_total"], r[f"eval_after/{metric}"], r["step"] + 1))
    return points


def mean_curve(run_dirs, metric="sampled_acc"):
    """Average the seeds' curves point by point (they share the evaluation steps)."""
    curves = [curve(d, metric) for d in run_dirs]
    n = min(len(c) for c in curves)
    return [tuple(statistics.mean(c[i][j] for c in curves) for j in range(6)) for i in range(n)], curves


AXES = {"updates": 0, "cpu_s": 1, "rollouts": 2, "tokens": 3, "steps": 5}


def crossing(points, target):
    """Where a curve first reaches `target`, linearly interpolated between the two evaluations around
    it on every axis at once: {axis: value}, or None if it never does. Interpolation turns the
    evaluation grid (every 5 steps) into a continuous estimate; its error is the evaluation noise
    divided by the curve's slope there (compare.py's power section)."""
    if points[0][4] >= target:
        return {a: float(points[0][i]) for a, i in AXES.items()}
    for a, b in zip(points, points[1:]):
        if b[4] >= target:
            f = (target - a[4]) / (b[4] - a[4])
            return {axis: a[i] + f * (b[i] - a[i]) for axis, i in AXES.items()}
    return None


def area(points, limit, axis="updates"):
    """Mean accuracy over [0, limit] on `axis` (trapezoids between evaluations): a target-free number
    for how fast and how high a curve rises. None if the run stops short of `limit`."""
    i = AXES[axis]
    xs, ys = [p[i] for p in points], [p[4] for p in points]
    if xs[-1] < limit - 1e-9:
        return None
    total = 0.0
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
        if x0 >= limit:
            break
        if x1 > limit:  # cut the last trapezoid at the limit
            y1, x1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0), limit
        total += (x1 - x0) * (y0 + y1) / 2
    return total / limit


def interval(values, resamples=10_000, seed=0):
    """(mean, low, high): the mean over seeds and its 95% percentile-bootstrap interval (resampling seeds).
    With 3 to 5 seeds a bootstrap interval is somewhat too narrow; read it as a lower bound on the uncertainty."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return float(v[0]), float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(v, (resamples, len(v))).mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def ratio_interval(base, values, resamples=10_000, seed=0):
    """(mean(base) / mean(values), low, high): a speed-up over the baseline, with both sets of seeds
    resampled independently (the runs share no randomness beyond the seed numbers)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    b, v = np.asarray(base, dtype=float), np.asarray(values, dtype=float)
    if min(len(b), len(v)) < 2:  # one seed on either side: no interval
        return float(b.mean() / v.mean()), float("nan"), float("nan")
    ratios = rng.choice(b, (resamples, len(b))).mean(1) / rng.choice(v, (resamples, len(v))).mean(1)
    return float(b.mean() / v.mean()), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def fmt(est, lo, hi, digits=0, unit=""):
    """'12 [10-15]': an estimate and its interval (no interval for a single seed)."""
    if lo != lo:  # nan: one seed
        return f"{est:.{digits}f}{unit}"
    return f"{est:.{digits}f}{unit} [{lo:.{digits}f}-{hi:.{digits}f}]"


def per_seed(groups, target, auc_updates, metric="sampled_acc"):
    """{label: [{seed-level numbers}]}: the crossing of `target` on every axis, the peak, and the mean
    accuracy over the first `auc_updates` optimizer updates."""
    out = {}
    for label, dirs in groups.items():
        rows = []
        for d in dirs:
            pts = curve(d, metric)
            rows.append({"run": d, "hit": crossing(pts, target), "peak": max(p[4] for p in pts),
                         "auc": area(pts, auc_updates), "final": pts[-1][4]})
        out[label] = rows
    return out


def report(groups, baseline, metric="sampled_acc", fraction=0.95):
    """groups: {label: [run_dir per seed]} -> (markdown, numbers). The target is `fraction` of the peak of
    the baseline's mean curve; every number is per seed first, then a mean with a 95% bootstrap interval
    over seeds. A speed-up is *resolved* when its interval excludes 1."""
    base_mean, _ = mean_curve(groups[baseline], metric)
    peak = max(p[4] for p in base_mean)
    target = fraction * peak
    # K: the fewest updates any run of the comparison reached (a step with no gradient applies no update),
    # so that every run's AUC covers the same range
    auc_updates = min(curve(d, metric)[-1][0] for dirs in groups.values() for d in dirs)
    seeds = per_seed(groups, target, auc_updates, metric)
    base_hits = [r["hit"] for r in seeds[baseline]]
    lines = [f"Target: {fraction:.0%} of {baseline}'s peak mean {metric} {peak:.3f} = **{target:.3f}**, reached by "
             f"each seed's curve (interpolated between evaluations). AUC = mean accuracy over the first "
             f"{auc_updates:.0f} optimizer updates. Brackets: 95% bootstrap intervals over seeds; * = the interval "
             f"of a speed-up excludes 1 (resolved).", "",
             "| config | seeds | reached | updates to target | rollouts generated to target | tokens trained to target "
             "| CPU s to target | peak acc | AUC | speed-up in updates | speed-up in CPU time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    numbers = {}
    for label, rows in seeds.items():
        hits = [r["hit"] for r in rows if r["hit"]]
        cells = []
        for axis, digits in (("updates", 0), ("rollouts", 0), ("tokens", 0), ("cpu_s", 0)):
            cells.append(fmt(*interval([h[axis] for h in hits]), digits) if len(hits) == len(rows) else
                         f"{len(hits)}/{len(rows)} seeds" + (f" (those: {statistics.mean(h[axis] for h in hits):.0f})" if hits else ""))
        peaks, aucs = [r["peak"] for r in rows], [r["auc"] for r in rows if r["auc"] is not None]
        speed = []
        for axis in ("updates", "cpu_s"):
            if label == baseline:
                speed.append("1.00x")
            elif len(hits) == len(rows) and all(base_hits) and min(h[axis] for h in hits) > 0:
                est, lo, hi = ratio_interval([h[axis] for h in base_hits], [h[axis] for h in hits])
                resolved = "*" if lo == lo and (lo > 1 or hi < 1) else ""
                speed.append(fmt(est, lo, hi, 2, "x") + resolved)
            else:
                speed.append("-")
        peak_cell, auc_cell = fmt(*interval(peaks), 3), (fmt(*interval(aucs), 3) if len(aucs) == len(rows) else "-")
        numbers[label] = {"hits": hits, "peaks": peaks, "aucs": aucs, "speed_updates": speed[0], "speed_cpu": speed[1],
                          "cells": dict(zip(("updates", "rollouts", "tokens", "cpu_s"), cells), peak=peak_cell, auc=auc_cell,
                                        seeds=len(rows))}
        lines.append(f"| {label} | {len(rows)} | {len(hits)}/{len(rows)} | " + " | ".join(cells)
                     + f" | {peak_cell} | {auc_cell} | {speed[0]} | {speed[1]} |")
    lines += ["", "Per seed (updates / rollouts / tokens / CPU s to target; peak; AUC):", "",
              "| config | seed | updates | rollouts | tokens | CPU s | peak | AUC |", "|---|---|---|---|---|---|---|---|"]
    for label, rows in seeds.items():
        for r in rows:
            h = r["hit"]
            got = (f"{h['updates']:.1f} | {h['rollouts']:.0f} | {h['tokens']:.0f} | {h['cpu_s']:.1f}" if h
                   else "not reached | - | - | -")
            lines.append(f"| {label} | {os.path.basename(r['run'])} | {got} | {r['peak']:.3f} | "
                         + ("-" if r["auc"] is None else f"{r['auc']:.3f}") + " |")
    return "\n".join(lines), {"target": target, "peak": peak, "auc_updates": auc_updates, "seeds": seeds,
                              "numbers": numbers}


def machine():
    import platform

    import torch
    import transformers
    return (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}, transformers {transformers.__version__}")
