"""The TRL plug-ins (scale/) against the reference scripts: a learning curve, and step times. Needs the extra:
pip install -r requirements-scale.txt. Never run by the tests.

    python benchmarks/trl_plugins.py curve --seeds 0               # every plug-in vs its script, 1 and 2 processes
    python benchmarks/trl_plugins.py curve --methods pods --seeds 0 1 2
    python benchmarks/trl_plugins.py step_time --steps 12       # plug-ins vs plain GRPOTrainer, 1 process

curve: the tiny task, each method with its script's defaults (60 steps; PODS: 16 prompts, n = 16, keep
m = 8), held-out sampled pass@1 (512 problems x 4 samples, common.rollout.evaluate) every 5 steps
(harness.EVAL_FLAGS), for the script (harness.run, so the runs are shared with benchmarks/compare.py) and
for `scale/train.py --method <method>` in one process and in two (accelerate, gloo), the same seeds, one
thread per process. Same objective, same batch sizes; not the same prompt stream (TRL's sampler shuffles
with its own seed) nor the same random draws, so the curves agree in behaviour, not number for number.
Writes benchmarks/results/trl_curves.md (a table per method).

step_time: one process, the same tiny model and step (16 prompts, 128 completions trained), the
median of TRL's logged `step_time` after the warm-up steps:
    grpo      plain GRPOTrainer, G = 8
    pods      the plug-in, n = 16 -> m = 8  (generates twice as much, trains the same)
    cppo      the plug-in, P = 0.5 with allocation (32 prompts x 8 generated, 128 trained)
    grpo_g16  plain GRPOTrainer, G = 16, 256 trained  (what PODS saves in the update)
    pods_m16  the plug-in at its neutral setting m = n = 16 (the plug-in's own overhead over grpo_g16)
Writes benchmarks/results/trl_step_time.md. Run it on an idle machine: it is a wall-clock measurement.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

ROOT, RESULTS = harness.ROOT, harness.RESULTS
EVAL = harness.EVAL_FLAGS  # the comparison's protocol, so that the pods.py runs are shared with compare.py


def trl_run(name, seed, flags, processes=1, steps=harness.STEPS, results=RESULTS):
    """Train scale/train.py once (or reuse the finished run); returns the run directory."""
    out = os.path.join(results, f"{name}_steps{steps}")
    run_dir = os.path.join(out, f"seed{seed}")
    if os.path.exists(os.path.join(run_dir, "final", "config.json")):
        return run_dir
    launch = [sys.executable, "scale/train.py"] if processes == 1 else [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "scale/train.py"]
    cmd = [*launch, "--seed", str(seed), "--max_steps", str(steps), "--output_dir", out, "--run_name", f"seed{seed}",
           "--overwrite", *flags]  # an unfinished earlier attempt is replaced
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.makedirs(out, exist_ok=True)
    print(f"start {name} seed {seed}: {' '.join(cmd)}", flush=True)
    with open(os.path.join(out, f"seed{seed}.log"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return run_dir


def steps_per_batch(run_dir) -> int:
    """Optimizer steps per rollout batch: 1 for a script (one step = one batch) and for most TRL runs; a TRL
    run reusing each generation batch (num_iterations, steps_per_generation > gradient accumulation, as DGG's
    K passes) takes several."""
    with open(os.path.join(run_dir, "config.json")) as f:
        flags = json.load(f).get("flags")
    if not flags:
        return 1
    return flags["num_iterations"] * flags["steps_per_generation"] // flags["gradient_accumulation_steps"]


def accuracy_by_batch(run_dir):
    """{rollout batches done: sampled accuracy} from a metrics.jsonl of either kind (eval/ at 0, eval_after/ later);
    a TRL run's evaluations between two rollout batches are left out."""
    points, per = {}, steps_per_batch(run_dir)
    for r in harness.records(run_dir):
        if "eval/sampled_acc" in r:
            points[0] = r["eval/sampled_acc"]
        if "eval_after/sampled_acc" in r and (r["step"] + 1) % per == 0:
            points[(r["step"] + 1) // per] = r["eval_after/sampled_acc"]
    return points


PLUGINS = ("pods", "cppo", "d3s", "dppo", "dgg")


def curve(methods, seeds, steps, results=RESULTS):
    from concurrent.futures import ThreadPoolExecutor

    os.makedirs(results, exist_ok=True)
    sections = [f"Each TRL plug-in against its script on the tiny task, the script's defaults, {steps} steps, held-out "
                f"sampled pass@1 (512 problems x 4 samples) after each number of rollout batches, "
                + (f"mean over seeds {', '.join(map(str, seeds))} (min-max). " if len(seeds) > 1 else f"seed {seeds[0]}. ")
                + f"{harness.machine()}.", "",
                f"Command: `python benchmarks/trl_plugins.py curve --methods {' '.join(methods)} --seeds "
                f"{' '.join(map(str, seeds))}`"]
    for method in methods:
        runs = {f"{method}.py": lambda s, m=method: harness.run(m, s, steps, results),
                "TRL plug-in, 1 process": lambda s, m=method: trl_run(f"trl_{m}_1proc", s, ["--method", m, *EVAL], 1,
                                                                 steps, results),
                "TRL plug-in, 2 processes": lambda s, m=method: trl_run(f"trl_{m}_2proc", s, ["--method", m, *EVAL], 2,
                                                                   steps, results)}
        # Two single-process runs at a time, then the two-process runs: one thread per process on 2 cores.
        labels = list(runs)
        with ThreadPoolExecutor(2) as pool:
            futures = {label: [pool.submit(runs[label], s) for s in seeds] for label in labels[:2]}
            dirs = {label: [f.result() for f in fs] for label, fs in futures.items()}
        dirs[labels[2]] = [runs[labels[2]](s) for s in seeds]
        curves = {label: [accuracy_by_batch(d) for d in ds] for label, ds in dirs.items()}
        points = sorted(set.intersection(*(set(c) for cs in curves.values() for c in cs)))
        lines = ["", f"## {method}", "", "| rollout batches | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
        for p in points:
            cells = [f"{statistics.mean(c[p] for c in cs):.3f}" + (
                     f" ({min(c[p] for c in cs):.3f}-{max(c[p] for c in cs):.3f})" if len(seeds) > 1 else "")
                     for cs in curves.values()]
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        last = [f"{label}: {statistics.mean(c[points[-1]] for c in cs):.3f}" for label, cs in curves.items()]
        lines += ["", f"After {points[-1]} rollout batches: " + "; ".join(last) + "."]
        per = steps_per_batch(dirs[labels[1]][0])
        if per > 1:
            lines[-1] += (f" The plug-in takes {per} optimizer steps (TRL's steps) per rollout batch, so its {steps} "
                          f"steps are {steps // per} batches; the script's {steps} steps are {steps} batches.")
        sections += lines
    return "\n".join(sections)


STEP_CONFIGS = {
    "grpo": ["--method", "grpo"],
    "pods": ["--method", "pods"],
    "cppo": ["--method", "cppo"],
    "grpo_g16": ["--method", "grpo", "--num_generations", "16"],
    "pods_m16": ["--method", "pods", "--num_keep", "16"],
    # with a reference model: the plug-in's reference pass runs on the 128 kept rows, plain GRPO's on all it trains
    "grpo_g16_kl": ["--method", "grpo", "--num_generations", "16", "--beta", "0.04"],
    "pods_kl": ["--method", "pods", "--beta", "0.04"],
}


def step_time(steps, warmup, results=RESULTS):
    import torch

    rows = ["| config | median step time (s) | min - max | completions generated / trained per step |", "|---|---|---|---|"]
    medians = {}
    for name, flags in STEP_CONFIGS.items():
        out = os.path.join(results, "trl_step_time")
        cmd = [sys.executable, "scale/train.py", *flags, "--max_steps", str(steps), "--eval_every", "0",
               "--eval_size", "1", "--eval_num_samples", "0", "--save_every", "0", "--output_dir", out, "--run_name", name,
               "--overwrite"]
        subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, TQDM_DISABLE="1"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(out, name, "config.json")) as f:
            g = json.load(f)["geometry"]
        times = [r["step_time"] for r in harness.records(os.path.join(out, name))][warmup:]
        medians[name] = statistics.median(times)
        rows.append(f"| {name} | {medians[name]:.3f} | {min(times):.3f} - {max(times):.3f} | "
                    f"{g['rows_generated_per_process']} / {g['rows_trained']} |")
    return "\n".join([f"TRL 1.16.0 GRPOTrainer and the plug-ins, one process, {torch.get_num_threads()} threads, "
                      f"{steps - warmup} steps after {warmup} of warm-up. {harness.machine()}, idle machine.", "",
                      f"Command: `python benchmarks/trl_plugins.py step_time --steps {steps} --warmup {warmup}`", "", *rows, "",
                      f"pods / grpo = {medians['pods'] / medians['grpo']:.2f}x, cppo / grpo = "
                      f"{medians['cppo'] / medians['grpo']:.2f}x, pods_m16 / grpo_g16 = "
                      f"{medians['pods_m16'] / medians['grpo_g16']:.2f}x (the plug-in's overhead), pods_kl / grpo_g16_kl = "
                      f"{medians['pods_kl'] / medians['grpo_g16_kl']:.2f}x (generating 256, training 128, beta 0.04)."])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["curve", "step_time"])
    p.add_argument("--methods", nargs="+", choices=PLUGINS, default=list(PLUGINS), help="curve: the plug-ins to run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=None, help=f"curve: training steps ({harness.STEPS}); step_time: steps per config (12)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--results", default=RESULTS, help="where the runs and the table go")
    a = p.parse_args()
    if a.what == "curve":
        text, path = curve(a.methods, a.seeds, a.steps or harness.STEPS, a.results), os.path.join(a.results, "trl_curves.md")
    else:
        text, path = step_time(a.steps or 12, a.warmup, a.results), os.path.join(a.results, "trl_step_time.md")
    os.makedirs(a.results, exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
