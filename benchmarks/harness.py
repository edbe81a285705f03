"""The one benchmark protocol (shared/spec/BENCHMARK.md) as a few functions every benchmark script uses.

- CONFIGS names every configuration the benchmarks run (script + flags), so that every script and
  the comparison share one set of runs under benchmarks/results/<config>_steps<T>/seed<S>/.
- `run_all(jobs)` trains (config, seed) pairs in subprocesses, `workers` at a time, each on one
  thread; a finished run is reused, so an interrupted benchmark resumes where it stopped.
- `curve(run_dir)` reads metrics.jsonl into evaluation points: optimizer updates, training CPU
  seconds, rollouts generated, tokens trained and held-out accuracy.
- `report(groups, baseline)` takes the baseline's mean curve over seeds, its peak P, the target
  0.99 P, and for every configuration: the peak of its mean curve and the per-seed peaks (mean,
  min-max), updates / rollouts /
  training seconds until its mean curve first reaches the target, the speed-ups over the baseline,
  per-step costs (c_gen = generate seconds per rollout generated, c_train = old/ref + update seconds
  per rollout trained) and tokens trained. It returns a markdown table.

The clock. Each run uses one thread, and the training time we report is its CPU time
(`time/train_cpu_total`, evaluation excluded): on a shared 2-core machine, wall clock also measures
whatever else is running, CPU time measures the run's own work, and with one thread the two agree
on an idle machine. benchmarks/step_time.py measures wall-clock step times on an idle machine as a
cross-check.

Accuracy is sampled pass@1 (4 samples per problem at temperature 1, 256 held-out problems): it is
what RL optimises, and greedy accuracy saturates earlier.
"""

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
EVAL_FLAGS = ["--eval_every", "10", "--eval_size", "256", "--eval_num_samples", "4", "--save_every", "0"]

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
    # the paper's setting scaled: G = 5, a fixed train set revisited (128 prompts = 15 epochs in 120 steps);
    # its rates are not public, 0.5 is ours; and its GRPO baseline (dppo.py's neutral setting = grpo.py
    # --loss_type grpo) on the same 128 prompts, since grpo.py has no --max_train_samples
    "dppo_paper": ("dppo.py", ["--num_generations", "5", "--max_train_samples", "128"]),
    "dppo_paper_grpo": ("dppo.py", ["--num_generations", "5", "--max_train_samples", "128", "--prompt_prune_rate", "0",
                                    "--completion_prune_rate", "0", "--pack_max_tokens", "0"]),
    "d3s": ("d3s.py", []),  # D3S: cross-group samples + tokens, linear schedule (the paper's variants below)
    "d3s_paper": ("d3s.py", ["--sample_ratio_start", "0.25", "--sample_ratio_end", "0.75",
                             "--token_ratio_start", "0.2", "--token_ratio_end", "0.5"]),  # paper-like; its values are not public
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


def run(config, seed, steps=120, results=RESULTS, extra=()):
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


def run_all(configs, seeds, steps=120, workers=2, results=RESULTS, extra=()):
    """{config: [run_dir per seed]}, training what is missing `workers` runs at a time."""
    from concurrent.futures import ThreadPoolExecutor

    os.makedirs(results, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        futures = {(c, s): pool.submit(run, c, s, steps, results, extra) for c in configs for s in seeds}
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


def first_reach(points, target):
    return next((p for p in points if p[4] >= target), None)


def report(groups, baseline, metric="sampled_acc"):
    """groups: {label: [run_dir per seed]} -> a markdown table against `baseline`'s 99%-of-peak target."""
    base_mean, _ = mean_curve(groups[baseline], metric)
    peak = max(p[4] for p in base_mean)
    target = 0.99 * peak
    base_hit = first_reach(base_mean, target)
    lines = [f"Target: 99% of {baseline}'s peak mean {metric} {peak:.3f} = **{target:.3f}**.", "",
             "| config | peak of the mean curve | per-seed peak, mean (min-max) | updates / rollouts / CPU s to target "
             "| speed-up in updates / rollouts / CPU time | updates / CPU s to 95% of the peak | CPU s per step "
             "| tokens trained per step |",
             "|---|---|---|---|---|---|---|---|"]
    for label, dirs in groups.items():
        mean, curves = mean_curve(dirs, metric)
        peaks = [max(p[4] for p in c) for c in curves]
        hit, early = first_reach(mean, target), first_reach(mean, 0.95 * peak)  # 95%: a less noisy second look
        recs = [records(d) for d in dirs]
        if hit and base_hit:
            ratio = lambda a, b: f"{a / b:.2f}x" if b > 0 else "-"  # noqa: E731 (0: the warm start is at target)
            reach = (f"{hit[0]:.0f} / {hit[2]:.0f} / {hit[1]:.0f} s",
                     f"{ratio(base_hit[0], hit[0])} / {ratio(base_hit[2], hit[2])} / {ratio(base_hit[1], hit[1])}")
        else:
            reach = "not reached", "-"
        lines.append(f"| {label} | {max(p[4] for p in mean):.3f} | {statistics.mean(peaks):.3f} ({min(peaks):.3f}-{max(peaks):.3f}) | {reach[0]} "
                     f"| {reach[1]} | {'%.0f / %.0f s' % (early[0], early[1]) if early else 'not reached'} "
                     f"| {statistics.mean(r[-1]['time/train_cpu_total'] / len(r) for r in recs):.2f} "
                     f"| {statistics.mean(r[-1]['tokens/trained_total'] / len(r) for r in recs):.0f} |")
    return "\n".join(lines)


def machine():
    import platform

    import torch
    import transformers
    return (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}, transformers {transformers.__version__}")
