"""How close grpo.py's default step comes to this machine's matrix-multiply throughput at the model's shapes.

    python benchmarks/roofline.py          # ~2 minutes on one thread; run it on an otherwise idle machine
    python benchmarks/roofline.py --out docs/results/roofline.md

A step's useful work is counted in matmul FLOPs (a multiply-add is 2), from the model's shape and the
step's token counts: generation is a prefill of every prompt row plus one decode position per
completion token, each attending to the positions before it (the KV cache); the update is a forward
and a backward pass (3x the forward) over every trained row's prompt and completion. Elementwise work
(norms, activations, softmax, sampling), padding and Python overheads do no useful FLOPs, so they
show up as the gap. The ceiling is measured, not taken from a data sheet: the best FLOP/s of
torch.matmul on one thread at the model's own projection shapes, with as many rows as the update's
micro-batch holds (the most favourable case) and as many as a decode step has (one row per sequence,
what generation can use at best). The step's times come from grpo.py itself (a few steps of its
defaults, one thread, no evaluation), median over the steps after the first.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def shape(cfg):
    """The few numbers of a Qwen2-style decoder the FLOP count needs, from its config (a dict)."""
    heads = cfg["num_attention_heads"]
    return {"hidden": cfg["hidden_size"], "intermediate": cfg["intermediate_size"], "layers": cfg["num_hidden_layers"],
            "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // heads, "heads": heads,
            "kv_heads": cfg.get("num_key_value_heads", heads), "vocab": cfg["vocab_size"]}


def per_token(s):
    """(FLOPs of the weight matmuls for one token, FLOPs per attended position for one token)."""
    h, i, d = s["hidden"], s["intermediate"], s["head_dim"]
    q, kv = s["heads"] * d, s["kv_heads"] * d
    layer = 2 * h * q + 2 * 2 * h * kv + 2 * q * h + 3 * 2 * h * i  # q, k and v, o; gate, up and down
    attention = 2 * 2 * q  # q.k over head_dim per head, then the weighted sum of v
    return s["layers"] * layer + 2 * h * s["vocab"], s["layers"] * attention


def forward_flops(s, tokens, context):
    """A forward pass over `tokens` tokens that attend to `context` positions each on average."""
    linear, attention = per_token(s)
    return tokens * (linear + attention * context)


def generation_flops(s, rows, prompt, completion):
    """Prefill of `rows` rows of `prompt` tokens (causal: (prompt + 1) / 2 positions each on average), then one
    decode position per completion token, the t-th attending to prompt + t positions."""
    prefill = rows * forward_flops(s, prompt, (prompt + 1) / 2)
    decode = rows * forward_flops(s, completion, prompt + (completion + 1) / 2)
    return prefill + decode


def update_flops(s, rows, prompt, completion, passes=1):
    """Forward and backward (2x the forward) over every row's prompt and completion, `passes` times."""
    tokens = prompt + completion
    return 3 * passes * rows * forward_flops(s, tokens, (tokens + 1) / 2)


def matmul_shapes(s, rows):
    """(m, k, n) of the model's weight matmuls with `rows` token rows."""
    h, i, d = s["hidden"], s["intermediate"], s["head_dim"]
    return [(rows, h, s["heads"] * d), (rows, h, s["kv_heads"] * d), (rows, h, i), (rows, i, h), (rows, h, s["vocab"])]


def best_flops(shapes, seconds=0.3):
    """The best matmul FLOP/s over `shapes` on this thread (each timed for about `seconds` after a warm-up)."""
    import torch

    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        best = max(best, 2 * m * k * n * count / (time.perf_counter() - start))
    return best


def grpo_step(steps=6):
    """Median generate and update seconds of grpo.py's default step (after the first), its rows per step and mean
    completion length, from a short run on one thread with no evaluation."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
        subprocess.run([sys.executable, "grpo.py", "--max_steps", str(steps), "--eval_every", "0", "--eval_size", "1",
                        "--eval_num_samples", "0", "--save_every", "0", "--log_samples_every", "0", "--output_dir", tmp,
                        "--run_name", "r"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(tmp, "r", "metrics.jsonl")) as f:
            recs = [json.loads(line) for line in f][1:]
        with open(os.path.join(tmp, "r", "config.json")) as f:
            cfg = json.load(f)
    rows = cfg["prompts_per_step"] * cfg["num_generations"]
    return {"generate_s": statistics.median(r["time/generate"] for r in recs),
            "update_s": statistics.median(r["time/logps"] + r["time/update"] for r in recs),
            "rows": rows, "completion": statistics.mean(r["tokens/generated"] for r in recs) / rows,
            "micro_batch": cfg["micro_batch_size"], "passes": cfg["num_iterations"]}


def report(s, step, prompt, peak_update, peak_decode):
    gen = generation_flops(s, step["rows"], prompt, step["completion"])
    upd = update_flops(s, step["rows"], prompt, step["completion"], step["passes"])
    lines = ["| phase | useful GFLOPs | seconds | GFLOP/s | of the best matmul at the update's shapes "
             "| of the best at decode's shapes |", "|---|---|---|---|---|---|"]
    for phase, flops, sec in (("generation", gen, step["generate_s"]), ("update", upd, step["update_s"])):
        rate = flops / sec
        lines.append(f"| {phase} | {flops / 1e9:.2f} | {sec:.3f} | {rate / 1e9:.2f} | {rate / peak_update:.1%} "
                     f"| {rate / peak_decode:.1%} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="grpo.py steps to time (the first is not counted)")
    parser.add_argument("--out", default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    if args.steps < 2:
        raise SystemExit("error: --steps must be >= 2 (the first step is a warm-up)")
    import torch

    from benchmarks.harness import machine
    from common.rollout import encode_prompts, load_policy
    from common.tasks import load_task

    torch.set_num_threads(1)
    model, tok = load_policy("tiny", torch.device("cpu"))
    s = shape(model.config.to_dict())
    prompts = [r["prompt"] for r in load_task("add").train[:512]]
    prompt = float(encode_prompts(tok, prompts, 256, "cpu")[1].sum(1).float().mean())
    step = grpo_step(args.steps)
    peak_update = best_flops(matmul_shapes(s, round(step["micro_batch"] * (prompt + step["completion"]))))
    peak_decode = best_flops(matmul_shapes(s, step["rows"]))
    lines = [f"# grpo.py's default step against this machine's matmul throughput ({machine()}, one thread)", "",
             f"Command: `python benchmarks/roofline.py --steps {args.steps}`. Model: {s}. Step: {step['rows']} rows, "
             f"prompt {prompt:.1f} and completion {step['completion']:.1f} tokens on average. Best torch.matmul on one "
             f"thread at the model's projection shapes: {peak_update / 1e9:.2f} GFLOP/s with the update's "
             f"{round(step['micro_batch'] * (prompt + step['completion']))} token rows, {peak_decode / 1e9:.2f} GFLOP/s with "
             f"a decode step's {step['rows']} rows. How the work is counted: benchmarks/roofline.py.", ""]
    lines += report(s, step, prompt, peak_update, peak_decode)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
