"""A per-step cost model, calibrated by a micro-benchmark and checked against the comparison's runs.

    python benchmarks/cost_model.py            # calibrate (under a minute, 1 thread): benchmarks/results/cost_model.json
    python benchmarks/compare.py --existing    # then uses it: predicted vs measured cost ratios to each baseline

The model. One step of any script here is generation, scoring, optional no-grad passes (old log-probs
for reuse, the reference model, D3S's entropies) and the update; so its CPU cost is predicted as

    step = R c_gen(n) + R c_score + F c_fwd + T c_train + U c_opt

R rollouts generated in calls of n rollouts each (generation is sub-linear in n: the prompt's prefill
and each decode step's overheads are shared by the batch), F tokens through no-grad forward passes,
T tokens trained (forward + backward, every pass), U optimizer updates. The micro-benchmark measures
c_gen(n) at n = 32 ... 1024 (CPU seconds per rollout, interpolated in log n), c_score, c_fwd, c_train
per completion token on GRPO's batch, and c_opt, all on the tiny model's warm start, one thread,
CPU time, with one other single-thread process on the second core, as the comparison's runs had
(run it beside nothing else: a third process time-slicing the cores inflated c_train by ~30%).
R, T and U are read from each run's log; n and F follow from its config (`workload`).

What the model leaves out, and so what its error measures: completion lengths that differ from the
warm start's, padding (cost follows padded positions, not completion tokens), GVM's G_i backward over
the accepted pilot samples, and Python overhead per micro-batch. Generation is priced per call, with the
calls each step logged (rollouts/generate_calls).

The papers' cost structures are documented inputs, not measurements:
- PODS (its repository's step-time logs: one L40S, vLLM, Qwen2.5-3B, 512 tokens): GRPO 16/16 7.6 s per
  step with 5.9 s generation; PODS 64/16 10.1 s with 8.5 s generation. A line through the two
  generation times, gen(n) = 5.03 + 0.0542 n s, and training 1.7 s per 16 rollouts trained.
- CPPO (its epoch times): ~94% of GRPO's time scales with the update steps, with vLLM on its own GPU;
  modelled as step = 0.06 g + 0.94 t relative to GRPO (g, t: rollouts generated, tokens trained).
Under each, a config's modelled training-time speed-up is its measured speed-up in updates divided
by its modelled cost per update relative to its baseline.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BATCHES = (32, 64, 128, 256, 512, 1024)


def calibrate(repeats=3):
    import torch

    from common.rollout import encode_prompts, generate, load_policy, per_token_logps
    from common.tasks import load_task, score_completions

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, tok = load_policy("tiny", torch.device("cpu"))
    task = load_task("add")
    cpu = time.process_time
    out = {"c_gen": {}, "machine": harness.machine(), "command": "python benchmarks/cost_model.py"}
    for n in BATCHES:
        rows = task.train[:n // 8]
        ids, mask = encode_prompts(tok, [r["prompt"] for r in rows], 256, "cpu")
        times, score_times, lengths = [], [], []
        for r in range(repeats + 1):  # the first round warms up allocators and caches and is not kept
            t = cpu()
            comp, cmask, _ = generate(model, tok, ids, mask, 8, 64)
            spent = (cpu() - t) / n
            t = cpu()
            texts = tok.batch_decode(comp.masked_fill(cmask == 0, tok.pad_token_id), skip_special_tokens=True)
            score_completions(task, rows, texts, 8)
            if r:
                times.append(spent)
                score_times.append((cpu() - t) / n)
                lengths.append(float(cmask.sum(1).float().mean()))
        out["c_gen"][str(n)] = statistics.median(times)
        out.setdefault("c_score_all", []).extend(score_times)
        out.setdefault("length_all", []).extend(lengths)
        if n == 128:  # GRPO's batch: the training costs are measured on it
            input_ids, attention = torch.cat([ids.repeat_interleave(8, 0), comp], 1), torch.cat([mask.repeat_interleave(8, 0), cmask], 1)
            tokens, L = int(cmask.sum()), comp.size(1)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
            fwd, train, opt = [], [], []
            for _ in range(repeats + 1):
                t = cpu()
                with torch.no_grad():
                    for mb in torch.arange(128).split(64):
                        per_token_logps(model, input_ids[mb], attention[mb], L)
                fwd.append((cpu() - t) / tokens)
                t = cpu()
                for mb in torch.arange(128).split(64):
                    logp, _ = per_token_logps(model, input_ids[mb], attention[mb], L, with_entropy=True)
                    (-(logp * cmask[mb]).sum() / tokens).backward()
                train.append((cpu() - t) / tokens)
                t = cpu()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                opt.append(cpu() - t)
            out.update(c_fwd=statistics.median(fwd[1:]), c_train=statistics.median(train[1:]), c_opt=statistics.median(opt[1:]))
    out["c_score"] = statistics.median(out.pop("c_score_all"))
    out["mean_length"] = statistics.mean(out.pop("length_all"))
    return out


def c_gen(cal, n):
    """CPU s per rollout in a call of n rollouts: linear in log n between the measured batch sizes."""
    pts = sorted((int(k), v) for k, v in cal["c_gen"].items())
    n = min(max(n, pts[0][0]), pts[-1][0])
    for (n0, v0), (n1, v1) in zip(pts, pts[1:]):
        if n <= n1:
            f = (math.log(n) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return v0 + f * (v1 - v0)
    return pts[-1][1]


def workload(runs):
    """Per-step means over a config's runs (harness.load): R rollouts generated, the generate calls' sizes, F no-grad
    tokens, T tokens trained, U updates (from the logs; F and the call sizes from the config)."""
    recs = [run["records"] for run in runs]
    cfg = runs[0]["config"]
    steps = statistics.mean(len(r) for r in recs)
    R = statistics.mean(r[-1]["rollouts/generated_total"] for r in recs) / steps
    T = statistics.mean(r[-1]["tokens/trained_total"] for r in recs) / steps
    U = statistics.mean(r[-1]["updates_total"] for r in recs) / steps
    batch_tokens = statistics.mean(x["tokens/generated"] for r in recs for x in r)  # tokens of the step's batch
    script = cfg.get("script", "")
    reused = cfg.get("num_iterations", 1) > 1 or script == "dgg"  # the whole batch is trained once per update
    passes = int(reused or cfg.get("steps_per_generation", 1) > 1)
    passes += int(cfg.get("beta", 0) > 0)
    passes += int(script == "d3s" and min(cfg.get("token_ratio_start", 1), cfg.get("token_ratio_end", 1)) < 1)
    # a no-grad pass sees the trained batch once; T counts it once per update when the batch is reused
    # (num_iterations, DGG's passes), and once in all when mini-batches split it (steps_per_generation)
    once = T / max(U, 1e-9) if reused else T
    F = passes * min(batch_tokens, once)
    # generation calls per step as the runs logged them (rollouts/generate_calls); a run without that field
    # (an older log) has them from its config: GVM makes a pilot call, then one for the rest
    logged = [x["rollouts/generate_calls"] for r in recs for x in r if "rollouts/generate_calls" in x]
    gvm = script == "gvm_raft" and cfg.get("allocation") == "gvm"
    n_calls = statistics.mean(logged) if logged else 2 if gvm else 1
    calls = [R]
    if n_calls > 1 and gvm:  # the pilot, then the rest
        pilot = cfg["prompts_per_step"] * cfg["num_pilot"]
        calls = [pilot, max(R - pilot, 1)]
    elif n_calls > 1:  # a script that generates in rounds: calls of equal size
        calls = [R / n_calls] * round(n_calls)
    return {"R": R, "T": T, "U": U, "F": F, "calls": calls}


def predict(cal, w):
    gen = sum(n * c_gen(cal, n) for n in w["calls"]) * w["R"] / sum(w["calls"])
    return gen + w["R"] * cal["c_score"] + w["F"] * cal["c_fwd"] + w["T"] * cal["c_train"] + w["U"] * cal["c_opt"]


def modelled(w, base):
    """Step cost relative to the baseline under the PODS and the CPPO papers' cost structures."""
    g, t = w["R"] / base["R"], w["T"] / base["T"]
    pods = (5.03 + 0.0542 * 16 * g + 1.7 * t) / 7.6
    cppo = 0.06 * g + 0.94 * t
    return pods, cppo


def check(groups, costs, path, baseline_of, speedups):
    """Markdown lines: the model scored where break-even uses it, on each config's cost relative to its baseline
    (one scale factor cancels there), and in absolute seconds with the scale fitted on the other configs
    (leave-one-out); then the papers' modelled speed-ups. speedups: {config: measured speed-up in updates}."""
    with open(path) as f:
        cal = json.load(f)
    loads = {label: workload(runs) for label, runs in groups.items()}
    pred = {label: predict(cal, w) for label, w in loads.items()}
    meas = {label: costs[label]["cpu_s_per_step"] for label in groups}
    log_scale = {label: math.log(meas[label] / pred[label]) for label in groups}
    lines = ["### Cost model: predicted vs measured CPU seconds per step", "",
             f"Calibration: `{cal['command']}` ({cal['machine']}): c_gen {', '.join(f'{k}: {v * 1e3:.2f}' for k, v in cal['c_gen'].items())} "
             f"ms per rollout by call size; c_score {cal['c_score'] * 1e3:.3f} ms per rollout; c_fwd {cal['c_fwd'] * 1e6:.1f}, "
             f"c_train {cal['c_train'] * 1e6:.1f} us per token; c_opt {cal['c_opt'] * 1e3:.1f} ms per update. "
             "Formula and what it leaves out: benchmarks/cost_model.py. Scored first where it is used: the cost of a step "
             "relative to the config's baseline (the break-even figure's axis; any common scale cancels); then in "
             "seconds, scaled by the geometric mean of measured / predicted over the other configs (leave-one-out).", "",
             "| config | R generated | T trained | U updates | predicted ratio to baseline | measured ratio | error on the ratio "
             "| predicted s (leave-one-out scale) | measured s | error |", "|---|---|---|---|---|---|---|---|---|---|"]
    ratio_err, abs_err = [], []
    for label, w in loads.items():
        base = baseline_of(label)
        if base in pred and label != base:
            p_ratio, m_ratio = pred[label] / pred[base], meas[label] / meas[base]
            ratio_err.append(p_ratio / m_ratio - 1)
            ratio_cells = f"{p_ratio:.2f} | {m_ratio:.2f} | {100 * ratio_err[-1]:+.0f}%"
        else:
            ratio_cells = "- | - | -"
        others = [v for k, v in log_scale.items() if k != label]
        scale = math.exp(statistics.mean(others)) if others else 1.0
        abs_err.append(scale * pred[label] / meas[label] - 1)
        lines.append(f"| {label} | {w['R']:.0f} | {w['T']:.0f} | {w['U']:.2f} | {ratio_cells} | {scale * pred[label]:.2f} "
                     f"| {meas[label]:.2f} | {100 * abs_err[-1]:+.0f}% |")
    summary = lambda e: (f"median absolute error {100 * statistics.median(abs(x) for x in e):.0f}%, largest "  # noqa: E731
                         f"{100 * max(abs(x) for x in e):.0f}%, {sum(x > 0 for x in e)} of {len(e)} over-predicted")
    lines += ["", (f"On the ratio to the baseline: {summary(ratio_err)}. " if ratio_err else "")
              + f"In seconds (leave-one-out scale): {summary(abs_err)}. The scale over all configs is "
              f"{math.exp(statistics.mean(log_scale.values())):.2f} (two runs sharing the machine's caches and memory "
              "bandwidth, lengths that change during training, per-step Python work the calibration leaves out).", "",
              "### Modelled, not measured: the tiny task's sample efficiency under the papers' cost structures", "",
              "Step cost relative to each config's baseline under PODS's (vLLM, L40S, 3B) and CPPO's (generation on its "
              "own GPU) structures; modelled time speed-up = measured speed-up in updates / modelled cost per update.", "",
              "| config | measured speed-up in updates | PODS-structure cost per update | modelled speed-up (PODS) "
              "| CPPO-structure cost per update | modelled speed-up (CPPO) |", "|---|---|---|---|---|---|"]
    for label in groups:
        base = baseline_of(label)
        if label == base or base not in loads or label not in speedups:
            continue
        w, b = loads[label], loads[base]
        pods, cppo = modelled(w, b)
        per_update = b["U"] / w["U"] if w["U"] > 0 else float("inf")
        s_upd = speedups[label]
        lines.append(f"| {label} | {s_upd:.2f}x | {pods * per_update:.2f} | {s_upd / (pods * per_update):.2f}x "
                     f"| {cppo * per_update:.2f} | {s_upd / (cppo * per_update):.2f}x |")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(harness.RESULTS, "cost_model.json"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cal = calibrate(args.repeats)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(cal, f, indent=1)
    print(json.dumps(cal, indent=1))
