"""The one benchmark protocol (shared/spec/BENCHMARK.md) as a few functions every benchmark script uses.

- `run(script, seed, label, flags)` trains one configuration in a subprocess (so each run gets a clean
  process and the same threads) into benchmarks/results/<label>/seed<S>/, or reuses a finished run.
- `curve(run_dir)` reads metrics.jsonl into evaluation points: updates, training seconds (evaluation
  excluded), rollouts generated, tokens trained and held-out sampled/greedy accuracy.
- `report(groups, baseline)` takes the baseline's mean curve over seeds, its peak P, the target 0.99 P,
  and for every configuration: peak accuracy (mean, min-max over seeds), updates and training seconds
  until its mean curve first reaches the target, the speed-ups over the baseline, per-step costs
  (c_gen = generate seconds per rollout generated, c_train = old/ref + update seconds per rollout
  trained) and totals. It returns a markdown table.

Accuracy is sampled pass@1 (4 samples per problem at temperature 1, 256 held-out problems) unless a
script says otherwise: it is what RL optimises, and greedy accuracy saturates earlier.
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


def run(script, seed, label, flags=(), results=RESULTS, fresh=False):
    """Train `script` with `flags` for one seed (or reuse a finished run); returns the run directory."""
    out = os.path.join(results, label)
    run_dir = os.path.join(out, f"seed{seed}")
    if not fresh and os.path.exists(os.path.join(run_dir, "final", "config.json")):
        return run_dir
    cmd = [sys.executable, script, "--seed", str(seed), "--output_dir", out, "--run_name", f"seed{seed}",
           "--log_samples_every", "0", *EVAL_FLAGS, *flags]
    print(f"[{time.strftime('%H:%M:%S')}] {label} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    env = dict(os.environ, TQDM_DISABLE="1")
    subprocess.run(cmd, cwd=ROOT, check=True, env=env, stdout=subprocess.DEVNULL)
    return run_dir


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def curve(run_dir, metric="sampled_acc"):
    """Evaluation points [(optimizer updates, train seconds, rollouts generated, tokens trained, accuracy)]."""
    recs = records(run_dir)
    points = [(0, 0.0, 0, 0, recs[0][f"eval/{metric}"])]
    for r in recs:
        if f"eval_after/{metric}" in r:
            points.append((r.get("updates_total", r["step"] + 1), r["time/train_total"], r["rollouts/generated_total"],
                           r["tokens/trained_total"], r[f"eval_after/{metric}"]))
    return points


def mean_curve(run_dirs, metric="sampled_acc"):
    """Average the seeds' curves point by point (they share the evaluation steps)."""
    curves = [curve(d, metric) for d in run_dirs]
    n = min(len(c) for c in curves)
    return [tuple(statistics.mean(c[i][j] for c in curves) for j in range(5)) for i in range(n)], curves


def first_reach(points, target):
    return next((p for p in points if p[4] >= target), None)


def step_costs(run_dirs):
    """Median seconds per rollout: generating it (c_gen) and training on it (c_train), over all steps."""
    gen, train = [], []
    for d in run_dirs:
        recs = records(d)
        for prev, r in zip(recs[1:], recs[2:]):  # the first step pays one-off warm-up costs
            gen.append(r["time/generate"] / (r["rollouts/generated_total"] - prev["rollouts/generated_total"]))
            if r["rollouts/trained"]:
                train.append((r["time/logps"] + r["time/update"]) / r["rollouts/trained"])
    return statistics.median(gen), statistics.median(train)


def report(groups, baseline, metric="sampled_acc"):
    """groups: {label: [run_dir per seed]} -> a markdown table against `baseline`'s 99%-of-peak target."""
    base_mean, _ = mean_curve(groups[baseline], metric)
    peak = max(p[4] for p in base_mean)
    target = 0.99 * peak
    base_hit = first_reach(base_mean, target)
    lines = [f"Target: 99% of {baseline}'s peak mean {metric} {peak:.3f} = **{target:.3f}**.", "",
             "| config | peak acc, mean (min-max) | updates / rollouts / train s to target "
             "| speed-up in updates / rollouts / time | s per step | c_gen / c_train (ms per rollout) "
             "| tokens trained (total) |",
             "|---|---|---|---|---|---|---|"]
    for label, dirs in groups.items():
        mean, curves = mean_curve(dirs, metric)
        peaks = [max(p[4] for p in c) for c in curves]
        hit = first_reach(mean, target)
        recs = [records(d) for d in dirs]
        step_s = statistics.mean(r[-1]["time/train_total"] / len(r) for r in recs)
        c_gen, c_train = step_costs(dirs)
        if hit and base_hit:
            reach = (f"{hit[0]:.0f} / {hit[2]:.0f} / {hit[1]:.0f} s",
                     f"{base_hit[0] / hit[0]:.2f}x / {base_hit[2] / hit[2]:.2f}x / {base_hit[1] / hit[1]:.2f}x")
        else:
            reach = "not reached", "-"
        lines.append(f"| {label} | {statistics.mean(peaks):.3f} ({min(peaks):.3f}-{max(peaks):.3f}) | {reach[0]} "
                     f"| {reach[1]} | {step_s:.2f} | {1e3 * c_gen:.2f} / {1e3 * c_train:.2f} "
                     f"| {statistics.mean(r[-1]['tokens/trained_total'] for r in recs):.0f} |")
    return "\n".join(lines)


def machine():
    import platform

    import torch
    import transformers
    return (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}, transformers {transformers.__version__}")
