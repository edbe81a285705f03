"""Every script at the Qwen2.5-0.5B shape: step time split, cost per rollout, peak memory, and how the update
scales with the rollouts each method keeps.

    python benchmarks/real_shapes.py                          # 2 layers (reduced depth), CPU, every script
    python benchmarks/real_shapes.py --layers 24              # full depth (494M parameters)
    python benchmarks/real_shapes.py --device cuda --bf16     # on a GPU; peak = torch.cuda.max_memory_allocated
    python benchmarks/real_shapes.py --layers 1 --steps 2 --prompts_per_step 2 --num_generations 4 \\
        --max_completion_length 8 --out /tmp/real_shapes.md   # a smoke run (minutes on 2 cores)

The model is common/qwen_shape.py's rig (hidden 896, vocab 151936, tied embeddings, Qwen2's tokenizer and
ChatML template, random weights) on a GSM8K-format file written here. Random weights score 0 on every
completion, which would make every step skip its update, so each run replaces the verifier with a
synthetic reward: 1 for a completion whose text hashes (CRC-32) into the lower half, else 0. Groups are
then mixed as on real data and every method does all its work; what is learnt is meaningless, the cost is
the real one.

Each configuration runs in its own process (one at a time, all cores) for --steps steps, the first of
which is dropped as warm-up; the table gives medians over the rest, from metrics.jsonl:
  generate s    time/generate (the rollout; GVM's pilot stage included)
  old/ref s     time/logps (old and reference log-probs; 0 with num_iterations 1 and beta 0)
  update s      time/update (forward, backward and optimiser steps of the policy update)
  c_gen ms      generate seconds per rollout generated
  c_train ms    (old/ref + update) seconds per rollout trained
  peak          CPU: the child process's peak resident set (getrusage via os.wait4, whole process:
                weights, gradients, Adam state, activations); CUDA: torch.cuda.max_memory_allocated.
The sweeps vary what each method keeps: PODS m of n = 2G, CPPO P (allocation off, so fewer rollouts are
trained), D3S sample and token ratios (constant, no schedule). Wall-clock numbers need an otherwise idle
machine; peak memory does not.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import harness  # noqa: E402
from tools import diffs  # noqa: E402

SCRIPTS = ["grpo"] + [s[:-3] for s in diffs.discover()]  # every method script, found by its marked regions


def synthetic_score(task, rows, texts, num_generations):
    """The benchmark's stand-in verifier (see the docstring): a fixed coin per completion text."""
    import torch

    rewards = torch.tensor([float(zlib.crc32(t.encode()) % 2 == 0) for t in texts])
    return rewards, {"rewards/synthetic/mean": rewards.mean().item()}


def child(spec: dict) -> None:
    """Run one configuration in this process and write its peak CUDA memory (if any) to spec['result']."""
    import importlib

    import torch

    module = importlib.import_module(spec["script"])
    module.score_completions = synthetic_score
    module.main(module.Args(**spec["args"]))
    out = {"cuda_peak": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None}
    with open(spec["result"], "w") as f:
        json.dump(out, f)


def gsm8k_fixture(path: str, n: int = 64) -> None:
    rows = [{"question": f"A farmer has {10 + 3 * i} sheep and buys {i + 2} more each week for {i % 5 + 2} weeks. "
                         f"How many sheep does the farmer have at the end?",
             "answer": f"#### {10 + 3 * i + (i + 2) * (i % 5 + 2)}"} for i in range(n)]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def run(label: str, script: str, flags: dict, common: dict, tmp: str) -> dict:
    """One configuration in a child process: medians of its step records and its peak memory."""
    name = "".join(c if c.isalnum() else "_" for c in label)  # the run folder and file names
    result, err = os.path.join(tmp, f"{name}.json"), os.path.join(tmp, f"{name}.err")
    spec = {"script": script, "result": result,
            "args": {**common, **flags, "output_dir": os.path.join(tmp, "runs"), "run_name": name}}
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)], cwd=ROOT,
                                env=dict(os.environ, TQDM_DISABLE="1"), stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: ru_maxrss in KiB on Linux
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(err) as f:
            lines = f.read().strip().splitlines()
        return {"label": label, "error": lines[-1] if lines else f"exit {proc.returncode}"}
    with open(result) as f:
        cuda_peak = json.load(f)["cuda_peak"]
    recs = harness.records(os.path.join(tmp, "runs", name))
    shutil.rmtree(os.path.join(tmp, "runs", name), ignore_errors=True)  # checkpoint + final: 2-8 GB at this shape
    steps = recs[1:] or recs  # the first step pays for warm-up
    generated = [r["rollouts/generated_total"] - p["rollouts/generated_total"] for p, r in zip(recs, recs[1:])] \
        or [recs[0]["rollouts/generated_total"]]
    med = lambda key: statistics.median(r.get(key, 0.0) for r in steps)  # noqa: E731
    trained = med("rollouts/trained")
    return {"label": label, "step": med("time/step"), "generate": med("time/generate"), "logps": med("time/logps"),
            "update": med("time/update"), "generated": statistics.median(generated), "trained": trained,
            "tokens": med("tokens/trained"),
            "c_gen": statistics.median(r["time/generate"] / max(n, 1) for r, n in zip(steps, generated)),
            "c_train": statistics.median((r["time/logps"] + r["time/update"]) / max(r["rollouts/trained"], 1)
                                         for r in steps),
            "peak_gb": (cuda_peak if cuda_peak is not None else usage.ru_maxrss * 1024) / 1e9,
            "skipped": recs[-1].get("skipped/degenerate_total", 0),
            # DGG's premise: the lm_head's relative change per step against the middle layer's MLP
            "dgg_ratio": [r["dgg/rel_change/lm_head"] / r["dgg/rel_change/mid_layer"] for r in recs
                          if r.get("dgg/rel_change/mid_layer", 0) > 0]}


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['label']} | failed: {r['error']} |" + " |" * 9
    return (f"| {r['label']} | {r['step']:.2f} | {r['generate']:.2f} | {r['logps']:.2f} | {r['update']:.2f} "
            f"| {r['generated']:.0f} | {r['trained']:.0f} | {r['tokens']:.0f} | {1e3 * r['c_gen']:.1f} "
            f"| {1e3 * r['c_train']:.1f} | {r['peak_gb']:.2f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2, help="decoder layers (24 = the full Qwen2.5-0.5B depth)")
    p.add_argument("--methods", nargs="+", default=SCRIPTS, choices=SCRIPTS)
    p.add_argument("--steps", type=int, default=4, help="steps per configuration (the first is warm-up)")
    p.add_argument("--prompts_per_step", type=int, default=4)
    p.add_argument("--num_generations", type=int, default=8)
    p.add_argument("--max_completion_length", type=int, default=64)
    p.add_argument("--micro_batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--sampler", default="lean", choices=["lean", "hf"], help="the rollout sampler (hf: transformers' generate)")
    p.add_argument("--no_sweeps", action="store_true", help="only the one-row-per-script table")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "real_shapes.md"))
    p.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran on the machine)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if not 1 <= args.layers <= 24 or args.steps < 1 or args.num_generations < 4:
        raise SystemExit("error: --layers in 1..24, --steps >= 1 and --num_generations >= 4 (PODS keeps G/2)")
    G = args.num_generations
    common = dict(model=f"qwen2.5-0.5b-shape:{args.layers}", task="gsm8k", max_steps=args.steps,
                  prompts_per_step=args.prompts_per_step, num_generations=G, max_prompt_length=256,
                  max_completion_length=args.max_completion_length, micro_batch_size=args.micro_batch_size,
                  learning_rate=1e-6, eval_every=0, eval_size=1, eval_num_samples=0, save_every=0,
                  log_samples_every=0, device=args.device, bf16=args.bf16,
                  gradient_checkpointing=args.gradient_checkpointing, sampler=args.sampler)
    # One row per script: its own defaults, at the benchmark's B and G (PODS: n = 2G generated, m = G kept).
    configs = [(s, s, {"num_generations": 2 * G, "num_keep": G} if s == "pods" else {}) for s in args.methods]
    sweeps = [] if args.no_sweeps else (
        [(f"pods m={m} of {2 * G}", "pods", {"num_generations": 2 * G, "num_keep": m}) for m in (G // 2, G, 2 * G)]
        + [(f"cppo P={P} (no allocation)", "cppo", {"prune_rate": P, "allocation": False}) for P in (0.0, 0.5, 0.75)]
        + [(f"d3s ratios {r}", "d3s", {"sample_ratio_start": r, "sample_ratio_end": r, "token_ratio_start": r,
                                       "token_ratio_end": r}) for r in (0.25, 0.5, 1.0)])
    shown = [a for i, a in enumerate(sys.argv[1:]) if "--note" not in (a, sys.argv[i])]  # the note is not a setting
    command = " ".join(["python benchmarks/real_shapes.py", *shown])
    header = ["| config | step s | generate s | old/ref s | update s | rollouts generated | rollouts trained "
              "| tokens trained | c_gen ms | c_train ms | peak GB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        common["dataset_path"] = os.path.join(tmp, "gsm8k.jsonl")
        gsm8k_fixture(common["dataset_path"])
        from common.qwen_shape import ensure_rig
        ensure_rig(args.layers)  # build once here, not inside the first timed child
        results, sweep_results = [], []
        for out, todo in ((results, configs), (sweep_results, sweeps)):
            for label, script, flags in todo:
                out.append(run(label, script, flags, common, tmp))
                print(row(out[-1]), flush=True)
    peak_what = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS of the process"
    lines = [f"# Every script at the Qwen2.5-0.5B shape ({args.layers} of 24 layers, {args.device})", "",
             f"Command: `{command}`", "",
             f"Measured {harness.machine()}; {time.time() - t0:.0f} s in all.",
             f"Rig: `qwen2.5-0.5b-shape:{args.layers}` (hidden 896, vocab 151936, tied embeddings, Qwen2 tokenizer, "
             f"ChatML with the default system prompt, random weights), GSM8K-format prompts of about 60 tokens. "
             f"Each step: {args.prompts_per_step} prompts x {G} completions of at most {args.max_completion_length} "
             f"tokens, micro-batches of {args.micro_batch_size}, {'bf16 autocast' if args.bf16 else 'float32'}, "
             f"{args.sampler} sampler; "
             f"synthetic reward (a CRC-32 coin per completion, so groups are mixed). Medians over steps 2..{args.steps}; "
             f"peak = {peak_what}.", *(["", args.note] if args.note else []), "",
             "Each script with its defaults (PODS: n = 2G generated, m = G kept):", "", *header,
             *[row(r) for r in results]]
    if sweep_results:
        lines += ["", "What each method keeps, and what that does to the update and to peak memory:", "", *header,
                  *[row(r) for r in sweep_results]]
    ratios = [r for res in results + sweep_results for r in res.get("dgg_ratio", [])]
    if ratios:
        lines += ["", f"DGG's premise at this shape (tied lm_head = the embedding matrix): relative change per step of "
                      f"the lm_head / of the middle layer's MLP = {', '.join(f'{x:.2f}' for x in ratios)} over the steps "
                      f"(median {statistics.median(ratios):.2f}; random weights, lr 1e-6)."]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
