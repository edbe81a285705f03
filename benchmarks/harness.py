"""The one benchmark protocol (docs/benchmarks.md) as a few functions every benchmark script uses.

- CONFIGS names every configuration the benchmarks run (script + flags), so that every script and
  the comparison share one set of runs under benchmarks/results/<config>_steps<T>/seed<S>/.
- `run_all(configs, seeds)` trains (config, seed) pairs in subprocesses, `workers` at a time, each on
  one thread; a finished run is reused, an interrupted one resumed from its checkpoint (or restarted if
  it had none), so an interrupted benchmark goes on where it stopped. `resolve(name)` also accepts a
  discovered script (its defaults) and an inline config NAME=script.py:--flag value.
- `load(path)` reads a run folder or its compact copy (`save`: the config and the few per-step fields
  the analysis reads, committed under docs/results/runs/ so that the analysis can be redone from the
  repository alone); `curve(run)` turns it into evaluation points: optimizer updates, training CPU
  seconds, rollouts generated, tokens trained, held-out accuracy and rollout steps.
- `crossings(points, targets, axis)` says where a curve first reaches each target (interpolated between
  evaluations, censored at the run's horizon when it never does); `at_budget` reads its accuracy at a
  fixed budget. benchmarks/compare.py builds the tables and tests (benchmarks/stats.py) on these.

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
import re
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
# every 5 steps on 512 held-out problems x 4 samples: the arithmetic behind this choice is in compare.py's power
# section; an evaluation costs about 6 s of one core, as much as 6 GRPO steps
EVAL_FLAGS = ["--eval_every", "5", "--eval_size", "512", "--eval_num_samples", "4", "--save_every", "0"]
STEPS = 60  # rollout batches per run: GRPO's warm start (v3) is at ~0.6 and plateaus near 0.95 by then

GVM_PAPER = ["--num_pilot", "8", "--max_per_prompt", "0", "--reuse_pilot", "False", "--zero_allocation", "skip",
             "--train_rejected", "True", "--beta", "0.001", "--steps_per_generation", "32"]
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
    # dppo's baseline: dppo.py's neutral setting (= grpo.py with the same loss_type, grpo) on the same 256 prompts
    "dppo_grpo": ("dppo.py", ["--prompt_prune_rate", "0", "--completion_prune_rate", "0", "--pack_max_tokens", "0"]),
    # the paper's setting scaled: G = 5, a fixed train set revisited (128 prompts = 7.5 epochs in 60 steps);
    # its rates are not public, 0.5 is ours; and its GRPO baseline (dppo.py's neutral setting = grpo.py
    # --loss_type grpo) on the same 128 prompts, since grpo.py has no --max_train_samples
    "dppo_paper": ("dppo.py", ["--num_generations", "5", "--max_train_samples", "128"]),
    "dppo_paper_grpo": ("dppo.py", ["--num_generations", "5", "--max_train_samples", "128", "--prompt_prune_rate", "0",
                                    "--completion_prune_rate", "0", "--pack_max_tokens", "0"]),
    "d3s": ("d3s.py", []),  # D3S: cross-group samples + tokens, linear schedule (the paper's variants below)
    "d3s_paper": ("d3s.py", ["--sample_ratio_start", "0.25", "--sample_ratio_end", "0.75",
                             "--token_ratio_start", "0.2", "--token_ratio_end", "0.5"]),  # paper-like; its values are not public
    # the schedule sweep that chose d3s's defaults (tokens 0.2 -> 0.5, samples 0.5 -> 1)
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
    # samples, KL 0.001, the official mini-batch counts: 32 optimiser steps per rollout step against the baseline's
    # 4; the paper's Algorithm 1 M-step (per-prompt mean) on top; and the paper's RAFT++ baseline (n = 8 uniform)
    "gvm_paper": ("gvm_raft.py", GVM_PAPER),
    "gvm_paper_prompt_mean": ("gvm_raft.py", GVM_PAPER + ["--mstep_mean", "prompt"]),
    "gvm_paper_spg4": ("gvm_raft.py", GVM_PAPER + ["--steps_per_generation", "4"]),  # without the 8x confound
    "raft++_paper": ("gvm_raft.py", ["--allocation", "uniform", "--train_rejected", "True", "--beta", "0.001",
                                     "--steps_per_generation", "4"]),
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

# The headline configs (each script's default and dppo's baseline) again from the second warm start, tiny:1, to
# see whether the ordering survives a different starting policy: <config>_tiny1.
HEADLINE = ("grpo", "pods", "cppo", "dppo", "dppo_grpo", "d3s", "gvm_raft++", "dgg")
WARM_START_1 = "_tiny1"
CONFIGS.update({c + WARM_START_1: (CONFIGS[c][0], CONFIGS[c][1] + ["--model", "tiny:1"]) for c in HEADLINE})


def resolve(name):
    """(script, flags) of a config: a CONFIGS entry, a top-level script with marked method regions (run with its
    defaults), or an inline config NAME=script.py:--flag value ... (registered in CONFIGS under NAME)."""
    if "=" in name:
        label, _, spec = name.partition("=")
        script, _, flags = spec.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", label) or not os.path.isfile(os.path.join(ROOT, script)):
            raise SystemExit(f"error: inline config {name!r} must read NAME=script.py:--flag value, with a plain NAME "
                             f"and a script in {ROOT}")
        if label in CONFIGS and CONFIGS[label] != (script, shlex.split(flags)):
            raise SystemExit(f"error: {label!r} is already a config ({CONFIGS[label]}); give the inline one another name")
        CONFIGS[label] = (script, shlex.split(flags))
        return label
    if name not in CONFIGS and name in scripts():
        CONFIGS[name] = (f"{name}.py", [])
    if name not in CONFIGS:
        raise SystemExit(f"error: unknown config {name!r}: use one of benchmarks/harness.py's CONFIGS, a script with "
                         f"marked regions ({', '.join(sorted(scripts()))}), or NAME=script.py:--flag value")
    return name


def scripts():
    """The top-level training scripts: grpo.py and every script that marks its method's regions with '# === '."""
    found = {"grpo"}
    for f in os.listdir(ROOT):
        if f.endswith(".py"):
            with open(os.path.join(ROOT, f), encoding="utf-8") as fh:
                if any(line.startswith("# === ") for line in fh):
                    found.add(f[:-3])
    return found


def run_dir(config, seed, steps=STEPS, results=RESULTS, tag=""):
    """Where a (config, seed) run lives: benchmarks/results/<config>_steps<T><tag>/seed<S> (tag: a non-protocol
    evaluation, so that a quick trial never reuses or replaces a protocol run)."""
    return os.path.join(results, f"{config}_steps{steps}{tag}", f"seed{seed}")


def finished(path):
    return os.path.exists(os.path.join(path, "final", "config.json"))


def command(config, seed, path, steps=STEPS, extra=()):
    """The training command of one run into the folder `path`, on one thread; `--resume` if it was interrupted
    after a checkpoint, `--overwrite` if it was interrupted before one (its folder then holds nothing to keep)."""
    script, flags = CONFIGS[config]
    again = (["--resume"] if os.path.exists(os.path.join(path, "checkpoint.pt")) else
             ["--overwrite"] if os.path.exists(path) else [])
    return [sys.executable, script, "--seed", str(seed), "--max_steps", str(steps), "--output_dir", os.path.dirname(path),
            "--run_name", os.path.basename(path), "--log_samples_every", "0", *EVAL_FLAGS, *flags, *extra, *again]


ENV = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run(config, seed, steps=STEPS, results=RESULTS, extra=(), tag=""):
    """Train one (config, seed) on one thread, or reuse the finished run; returns the run directory."""
    path = run_dir(config, seed, steps, results, tag)
    if finished(path):
        return path
    print(f"[{time.strftime('%H:%M:%S')}] start {config} seed {seed}", flush=True)
    with open(f"{os.path.dirname(path)}_seed{seed}.log", "a") as log:
        subprocess.run(command(config, seed, path, steps, extra), cwd=ROOT, check=True, env=ENV, stdout=log,
                       stderr=subprocess.STDOUT)
    print(f"[{time.strftime('%H:%M:%S')}] done  {config} seed {seed}", flush=True)
    return path


def run_all(configs, seeds, steps=STEPS, workers=2, results=RESULTS, extra=(), tag=""):
    """{config: [run_dir per seed]}, training what is missing `workers` runs at a time, seed by seed (every
    config's seed 0 first), so that a benchmark stopped early has every config at fewer seeds."""
    from concurrent.futures import ThreadPoolExecutor

    os.makedirs(results, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        futures = {(c, s): pool.submit(run, c, s, steps, results, extra, tag) for s in seeds for c in configs}
        return {c: [futures[c, s].result() for s in seeds] for c in configs}


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# What the analysis reads of each step's record: the compact copy of a run keeps these and nothing else.
KEEP = ("step", "updates_total", "time/train_cpu_total", "rollouts/generated_total", "tokens/trained_total",
        "tokens/trained", "tokens/generated", "time/generate", "time/score", "time/logps", "time/update", "reward",
        "eval/sampled_acc", "eval/greedy_acc", "eval_after/sampled_acc", "eval_after/greedy_acc", "rollouts/generate_calls")


def load(path):
    """A run as {"path", "seed", "config", "records", "beside"}: a run folder (config.json + metrics.jsonl), or its
    compact copy (a .jsonl whose first line is {"config": ...}); "beside" names the config that ran beside it
    (benchmarks/run_queue.py writes <folder>.beside), or is None."""
    if path.endswith(".jsonl"):
        with open(path) as f:
            lines = [json.loads(line) for line in f]
        config, recs, beside = lines[0]["config"], lines[1:], lines[0].get("beside")
    else:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        recs = records(path)
        try:
            with open(path + ".beside") as f:
                beside = f.read().strip() or None
        except OSError:
            beside = None
    return {"path": path, "seed": config.get("seed"), "config": config, "records": recs, "beside": beside}


def save(run, path):
    """Write a run's compact copy: its config, then each step's KEEP fields, floats to 6 significant digits."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    short = lambda v: float(f"{v:.6g}") if isinstance(v, float) else v  # noqa: E731
    with open(path + ".tmp", "w") as f:
        head = {"config": run["config"], **({"beside": run["beside"]} if run.get("beside") else {})}
        f.write(json.dumps(head, separators=(",", ":")) + "\n")
        for r in run["records"]:
            f.write(json.dumps({k: short(r[k]) for k in KEEP if k in r}, separators=(",", ":")) + "\n")
    os.replace(path + ".tmp", path)


def accuracy(run):
    """The accuracy a run's curve is drawn with: sampled pass@1, or greedy accuracy when the run sampled nothing
    (--eval_num_samples 0 logs no sampled accuracy; a logged 0 with nothing sampled is not an accuracy)."""
    first = run["records"][0] if run["records"] else {}
    return "sampled_acc" if run["config"].get("eval_num_samples", 1) > 0 and "eval/sampled_acc" in first else "greedy_acc"


def curve(run, metric=None):
    """Evaluation points [(optimizer updates, train CPU seconds, rollouts generated, tokens trained, accuracy,
    steps)], starting before the first step."""
    metric = metric or accuracy(run)
    recs = run["records"]
    points = [(0, 0.0, 0, 0, recs[0][f"eval/{metric}"], 0)]
    for r in recs:
        if f"eval_after/{metric}" in r:
            points.append((r["updates_total"], r["time/train_cpu_total"], r["rollouts/generated_total"],
                           r["tokens/trained_total"], r[f"eval_after/{metric}"], r["step"] + 1))
    return points


AXES = {"updates": 0, "cpu_s": 1, "rollouts": 2, "tokens": 3, "steps": 5}


def crossings(points, targets, axis="updates"):
    """Where a curve first reaches each target on `axis`, linearly interpolated between the two evaluations
    around it: (values, reached), shaped as `targets`. A target never reached gives the curve's last value on
    the axis, its horizon (a lower bound: the run is censored there). Interpolation turns the evaluation grid
    into a continuous estimate; its error is the evaluation noise divided by the curve's slope there."""
    p = np.asarray(points, float)
    acc, x = p[:, 4], p[:, AXES[axis]]
    t = np.asarray(targets, float)
    hit = acc >= t[..., None]
    reached = hit.any(-1)
    i = hit.argmax(-1)
    i0 = np.maximum(i - 1, 0)
    f = np.where(i > 0, (t - acc[i0]) / np.where(i > 0, acc[i] - acc[i0], 1.0), 0.0)
    return np.where(reached, x[i0] + f * (x[i] - x[i0]), x[-1]), reached


def crossing(points, target):
    """{axis: value} where a curve first reaches `target`, or None if it never does."""
    found = {axis: crossings(points, target, axis) for axis in AXES}
    return {a: float(v) for a, (v, _) in found.items()} if found["updates"][1] else None


def at_budget(points, budget, axis="updates"):
    """A curve's accuracy at `budget` on `axis` (interpolated between evaluations); None past the run's end."""
    p = np.asarray(points, float)
    x = p[:, AXES[axis]]
    return float(np.interp(budget, x, p[:, 4])) if budget <= x[-1] + 1e-9 else None


def mean_curve(runs):
    """Average the seeds' curves point by point (they share the evaluation steps)."""
    curves = [curve(r) for r in runs]
    n = min(len(c) for c in curves)
    return [tuple(statistics.mean(c[i][j] for c in curves) for j in range(6)) for i in range(n)], curves


def machine():
    import platform

    import torch
    import transformers
    return (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}, transformers {transformers.__version__}")
