"""CPPO vs GRPO on the tiny task, with allocation (equal update batch: B G = 128 rollouts trained per step).

    python benchmarks/cppo_vs_grpo.py                  # 3 seeds x {grpo, P = 0.5, 0.75, 0.875}, ~35 min on 2 cores
    python benchmarks/cppo_vs_grpo.py --seeds 0 --rates 0.5 --steps 40

Writes benchmarks/results/cppo_vs_grpo.md next to the raw runs; finished runs are reused.

Break-even. With allocation a CPPO step generates B / (1 - P) prompts' completions and trains on B G,
so it costs (B G / (1 - P)) c_gen + B G c_train against GRPO's B G (c_gen + c_train): it wins in wall
clock only if it needs fewer updates by more than that ratio. The paper's speed-up is a different
quantity (one epoch's total time, i.e. equal prompts seen); we report time to GRPO's 99%-of-peak
accuracy, as for every method here.
"""

import argparse
import statistics

import harness

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--steps", type=int, default=120)
parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.75, 0.875], help="prune rates P")
args = parser.parse_args()

steps = ["--max_steps", str(args.steps)]
groups = {"grpo (G=8)": [harness.run("grpo.py", s, f"grpo_steps{args.steps}", steps) for s in args.seeds]}
for rate in args.rates:
    groups[f"cppo (P={rate})"] = [harness.run("cppo.py", s, f"cppo_p{rate}_steps{args.steps}",
                                              steps + ["--prune_rate", str(rate)]) for s in args.seeds]

c_gen, c_train = harness.step_costs(groups["grpo (G=8)"])
lines = [f"# CPPO vs GRPO, tiny task ({harness.machine()})", "",
         f"Command: `python benchmarks/cppo_vs_grpo.py --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} "
         f"--rates {' '.join(map(str, args.rates))}`", "", harness.report(groups, "grpo (G=8)"), "",
         f"GRPO's measured costs: c_gen = {1e3 * c_gen:.2f} ms, c_train = {1e3 * c_train:.2f} ms per rollout.", ""]
base_step = statistics.mean(harness.records(d)[-1]["time/train_total"] / args.steps for d in groups["grpo (G=8)"])
for rate in args.rates:
    label = f"cppo (P={rate})"
    predicted = (c_gen / (1 - rate) + c_train) / (c_gen + c_train)
    step = statistics.mean(harness.records(d)[-1]["time/train_total"] / args.steps for d in groups[label])
    lines.append(f"- {label}: break-even update speed-up {predicted:.2f}x from the costs, "
                 f"{step / base_step:.2f}x from the measured step times.")
text = "\n".join(lines) + "\n"
with open(f"{harness.RESULTS}/cppo_vs_grpo.md", "w") as f:
    f.write(text)
print(text)
