"""PODS vs GRPO on the tiny task with an equal update batch (m = GRPO's G = 8), the paper's protocol.

    python benchmarks/pods_vs_grpo.py                  # 3 seeds x {grpo, pods n=16, pods n=32}, ~25 min on 2 cores
    python benchmarks/pods_vs_grpo.py --seeds 0 --steps 40

Writes benchmarks/results/pods_vs_grpo.md (table, costs, break-even) next to the raw runs. Finished runs
are reused, so an interrupted benchmark resumes where it stopped.

Break-even. A PODS step generates n rollouts per prompt and trains on m; a GRPO step generates and
trains m. With per-rollout costs c_gen and c_train, PODS is faster in wall clock only if it needs
fewer updates by more than  (n c_gen + m c_train) / (m c_gen + m c_train);  the measured step-time
ratio is the same quantity without the model.
"""

import argparse
import statistics

import harness

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--steps", type=int, default=120)
parser.add_argument("--n", type=int, nargs="+", default=[16, 32], help="PODS rollouts generated per prompt")
args = parser.parse_args()

steps = ["--max_steps", str(args.steps)]
groups = {"grpo (G=8)": [harness.run("grpo.py", s, f"grpo_steps{args.steps}", steps) for s in args.seeds]}
for n in args.n:
    label = f"pods (n={n}, m=8)"
    groups[label] = [harness.run("pods.py", s, f"pods_n{n}_m8_steps{args.steps}",
                                 steps + ["--num_generations", str(n), "--num_keep", "8"]) for s in args.seeds]

table = harness.report(groups, "grpo (G=8)")
c_gen, c_train = harness.step_costs(groups["grpo (G=8)"])
lines = [f"# PODS vs GRPO, tiny task ({harness.machine()})", "",
         f"Command: `python benchmarks/pods_vs_grpo.py --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} --n {' '.join(map(str, args.n))}`",
         "", table, "", f"GRPO's measured costs: c_gen = {1e3 * c_gen:.2f} ms, c_train = {1e3 * c_train:.2f} ms per rollout.", ""]
base_step = statistics.mean(harness.records(d)[-1]["time/train_total"] / args.steps for d in groups["grpo (G=8)"])
for n in args.n:
    label = f"pods (n={n}, m=8)"
    predicted = (n * c_gen + 8 * c_train) / (8 * c_gen + 8 * c_train)
    step = statistics.mean(harness.records(d)[-1]["time/train_total"] / args.steps for d in groups[label])
    lines.append(f"- {label}: break-even update speed-up {predicted:.2f}x from the costs, "
                 f"{step / base_step:.2f}x from the measured step times.")
text = "\n".join(lines) + "\n"
with open(f"{harness.RESULTS}/pods_vs_grpo.md", "w") as f:
    f.write(text)
print(text)
