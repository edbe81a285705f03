"""Wall-clock cost of one training step of each configuration, on an idle machine: c_gen and c_train.

    python benchmarks/step_time.py                                 # every script's defaults, 12 steps each
    python benchmarks/step_time.py --configs grpo pods pods_n32 --steps 20
    python benchmarks/step_time.py --configs grpo "mine=my_method.py:--my_flag 2"   # any script, inline flags

Runs each configuration for --steps steps (no evaluation) with all cores, in turn, and reports the
median over the steps after the first two of: the step, its generate phase, its old/ref + update
phase, c_gen = generate seconds per rollout generated and c_train = old/ref + update seconds per
rollout trained. Run it on an otherwise idle machine: it measures wall clock.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
# the default is every training script found in the repository (grpo.py first), each at its defaults
parser.add_argument("--configs", nargs="+", type=harness.resolve,
                    default=[harness.resolve(s) for s in sorted(harness.scripts(), key=lambda s: (s != "grpo", s))],
                    help="configs of benchmarks/harness.py, discovered scripts, or NAME=script.py:--flag value")
parser.add_argument("--steps", type=int, default=12)
args = parser.parse_args()

lines = [f"# Step costs ({harness.machine()}, all cores, idle machine)", "",
         f"Command: `python benchmarks/step_time.py --configs {' '.join(args.configs)} --steps {args.steps}`", "",
         "| config | step s | generate s | old/ref + update s | rollouts generated | rollouts trained "
         "| c_gen ms | c_train ms |", "|---|---|---|---|---|---|---|---|"]
with tempfile.TemporaryDirectory() as tmp:
    for config in args.configs:
        script, flags = harness.CONFIGS[config]
        subprocess.run([sys.executable, script, "--max_steps", str(args.steps), "--eval_every", "0", "--eval_size", "1",
                        "--eval_num_samples", "0", "--save_every", "0", "--log_samples_every", "0", "--output_dir", tmp,
                        "--run_name", config, *flags], cwd=harness.ROOT, check=True, capture_output=True,
                       env=dict(os.environ, TQDM_DISABLE="1"))
        recs = harness.records(os.path.join(tmp, config))[2:]
        med = lambda f: statistics.median(f(r) for r in recs)  # noqa: E731
        gen = [r["rollouts/generated_total"] - p["rollouts/generated_total"] for p, r in zip(recs, recs[1:])]
        c_gen = statistics.median(r["time/generate"] / n for r, n in zip(recs[1:], gen))
        c_train = med(lambda r: (r["time/logps"] + r["time/update"]) / max(r["rollouts/trained"], 1))
        lines.append(f"| {config} | {med(lambda r: r['time/step']):.2f} | {med(lambda r: r['time/generate']):.2f} "
                     f"| {med(lambda r: r['time/logps'] + r['time/update']):.2f} | {statistics.median(gen):.0f} "
                     f"| {med(lambda r: r['rollouts/trained']):.0f} | {1e3 * c_gen:.2f} | {1e3 * c_train:.2f} |")
        print(lines[-1], flush=True)
text = "\n".join(lines) + "\n"
os.makedirs(harness.RESULTS, exist_ok=True)
with open(os.path.join(harness.RESULTS, "step_time.md"), "w") as f:
    f.write(text)
print(text)
