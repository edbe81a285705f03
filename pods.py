"""PODS: Policy Optimization with Down-Sampling = grpo.py + max-variance selection of the rollouts to train on.

Paper: Xu, Savani, Fang, Kolter, "Not All Rollouts are Useful: Down-Sampling Rollouts in LLM
Reinforcement Learning", arXiv 2504.13818; official code: the authors' `maxvargrpo_trainer.py`
(single GPU) and their open-r1 fork (multi GPU, per-prompt rows).

The idea. Inference and training cost different things: generating a rollout parallelises well,
updating on it costs memory and a backward pass. So generate n rollouts per prompt, but train on
only m < n of them, chosen so the kept group carries as much learning signal as possible: the m
whose rewards have the largest variance (a group of all-right or all-wrong answers teaches nothing,
a half-right one teaches most). Advantages are then recomputed on the kept m, exactly as GRPO
would on a group of m, and only those m get old/reference log-probs and a backward pass.

The selection (per prompt, rewards r_1..r_n, keep m):
    S* = argmax_{|S| = m} Var({r_i : i in S})
Lemma: some optimal S is "the k largest rewards + the (m - k) smallest" for some k in 0..m.
(Fix the other m - 1 chosen values with mean c: the variance is a convex parabola in the remaining
value v, const + (m - 1)/m^2 (v - c)^2, so swapping v for an unchosen value further out never
lowers it; repeating leaves only a top block and a bottom block of the sorted order.)
Algorithm, O(n log n): sort once (descending, stable, so ties go to the lower index), build prefix
sums of r and r^2, and score the m + 1 candidates in O(1) each:
    m * popvar(top k + bottom m-k) = sum r^2 - (sum r)^2 / m
evaluated in the official code's order k = m, 0, 1, ..., m - 1 with a strict ">" (ties: the
earlier candidate wins). `rule` gives the paper's ablations: max_reward (top m) and random.
Then, on the kept group: A_i = (r_i - mean_S) / (std_S + 1e-4), and the GRPO loss of grpo.py.

Symbols: n = `num_generations`, m = `num_keep`. m = n is the neutral setting: it *is* grpo.py
(tests/test_pods.py checks identical loss and parameters after one step).

Where this file differs from the official code: the selection is O(n log n) with prefix sums and
a stable sort (the official code scores each candidate directly in O(m) with an unstable sort, so
its choice among equally good subsets is implementation-defined). The official code has two losses
(shared/spec/audits/pods-cppo-gvm-vs-official-code.md): the single-GPU trainer takes a per-sequence
mean without clipping, the multi-GPU fork a token mean (bnpo) with clipping at epsilon 0.2, both with
one update per batch (mu = 1). Our default loss_type dapo mirrors the multi-GPU fork; --loss_type grpo
mirrors the single-GPU trainer. Both forks are exact, not approximate: with one update per batch the
ratio is identically 1, inside the clip range, so clipping changes no gradient. The defaults here
(n = 16, m = 8) keep grpo.py's update batch (G = 8), the paper's protocol (m = GRPO's G).

The paper's setting (issue 14): n = 4m, 64/16 on GSM8K and 32/8 on MATH, against GRPO with n = m
(16/16, 8/8), Qwen2.5-3B-Instruct with LoRA on one GPU, one prompt per step, lr 5e-6. Scaled to the
tiny task it is MATH's 32/8 with the single-GPU trainer's loss (config pods_paper) against GRPO with
G = 8 and the same loss (grpo_pods_paper). We keep 16 prompts per step and lr 1e-4: one prompt per
step would give a 120-step run only 120 prompts, and the comparison would be all noise. Whether PODS
pays off in wall clock depends on the ratio of generation to training cost; the README's tables
measure it:
    python benchmarks/compare.py --methods grpo pods pods_n32 pods_paper grpo_pods_paper

Run it:
    python pods.py                                     # offline tiny demo: n = 16, keep m = 8
    python pods.py --num_generations 32 --num_keep 8 --loss_type grpo   # the paper's n = 4m (pods_paper)
    python grpo.py --loss_type grpo                    # its GRPO baseline, n = m = 8 (grpo_pods_paper)
    python pods.py --model Qwen/Qwen2.5-0.5B-Instruct --task gsm8k --bf16 --gradient_checkpointing \\
        --learning_rate 1e-6 --max_completion_length 512 --prompts_per_step 16 --num_generations 32 \\
        --num_keep 8 --micro_batch_size 8 --max_steps 500 --eval_every 50
Outputs go to runs/<run_name>/ as for grpo.py, with pods/* metrics added.
"""

import copy
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import trange

from common import runs
from common.loggers import Reporter, check_report_to
from common.rollout import encode_prompts, evaluate, generate, load_policy, per_token_logps
from common.tasks import load_task, prompt_indices, score_completions


@dataclass
class Args:
    # --- model and data
    model: str = field(default="tiny", metadata={"help": "hub id or local path; 'tiny' = the offline tiny Qwen2 (built on first use)"})
    task: str = field(default="add", metadata={"help": "add (offline synthetic), gsm8k or math"})
    dataset_path: str | None = field(default=None, metadata={"help": "local .json/.jsonl/.parquet instead of the hub dataset"})
    seed: int = field(default=0, metadata={"help": "seed of the prompt stream, sampling and everything else"})
    # --- one step = prompts_per_step x num_generations completions
    max_steps: int = field(default=120, metadata={"help": "number of training steps (one rollout batch each)"})
    prompts_per_step: int = field(default=16, metadata={"help": "B: prompts per step"})
    # === PODS: n rollouts generated, m trained
    num_generations: int = field(default=16, metadata={"help": "n: completions generated per prompt"})
    num_keep: int = field(default=8, metadata={"help": "m: completions per prompt kept for the update (2 <= m <= n)"})
    rule: str = field(default="max_variance", metadata={"help": "which m to keep: max_variance, max_reward or random"})
    # === end PODS ===
    max_prompt_length: int = field(default=256, metadata={"help": "prompts are left-truncated to this many tokens"})
    max_completion_length: int = field(default=64, metadata={"help": "longer completions are cut and counted as clipped"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (also divides the logits in the loss)"})
    # --- the objective (TRL names)
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (1e-4 suits the tiny model; ~1e-6 for real LLMs)"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; 0 = no reference model is loaded"})
    epsilon: float = field(default=0.2, metadata={"help": "lower clip range of the ratio"})
    epsilon_high: float | None = field(default=None, metadata={"help": "upper clip range (default: epsilon)"})
    num_iterations: int = field(default=1, metadata={"help": "mu: optimiser passes over each rollout batch"})
    loss_type: str = field(default="dapo", metadata={"help": "dapo (token mean), grpo (sequence mean) or dr_grpo"})
    scale_rewards: str = field(default="group", metadata={"help": "divide advantages by the std of the group, the batch, or none"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    micro_batch_size: int = field(default=64, metadata={"help": "sequences per forward/backward (gradient accumulation)"})
    # --- evaluation, logging, checkpoints
    eval_every: int = field(default=20, metadata={"help": "evaluate every N steps (and at the start and end); 0 = start and end only"})
    eval_size: int = field(default=256, metadata={"help": "held-out problems"})
    eval_num_samples: int = field(default=4, metadata={"help": "samples per problem for sampled accuracy (0 = greedy only)"})
    log_samples_every: int = field(default=20, metadata={"help": "write a few completions to samples.jsonl every N steps"})
    save_every: int = field(default=20, metadata={"help": "write a resumable checkpoint every N steps (0 = only at the end)"})
    output_dir: str = field(default="runs", metadata={"help": "runs land in output_dir/run_name"})
    run_name: str | None = field(default=None, metadata={"help": "default: <script>_<task>_seed<seed>"})
    resume: bool = field(default=False, metadata={"help": "continue the run in output_dir/run_name from its checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "replace the run in output_dir/run_name (refused otherwise)"})
    report_to: str = field(default="none", metadata={"help": "none, tensorboard or wandb (metrics.jsonl is always written)"})
    # --- hardware
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast for generation and forward passes (GPU)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory in the update"})
    sampler: str = field(default="lean", metadata={"help": "lean (common/sampler.py) or hf (transformers' generate, to compare)"})


def validate(args: Args) -> None:
    """Fail with one clear line before anything heavy is loaded."""
    runs.check_finite(learning_rate=args.learning_rate, max_grad_norm=args.max_grad_norm, beta=args.beta,
                      temperature=args.temperature, epsilon=args.epsilon, epsilon_high=args.epsilon_high)
    checks = [
        (args.max_steps >= 1, "--max_steps must be >= 1"),
        (args.prompts_per_step >= 1, "--prompts_per_step must be >= 1"),
        (args.num_generations >= 2, "--num_generations must be >= 2 (a group needs a baseline)"),
        (args.max_prompt_length >= 1 and args.max_completion_length >= 1, "lengths must be >= 1"),
        (args.micro_batch_size >= 1, "--micro_batch_size must be >= 1"),
        (args.temperature > 0, "--temperature must be > 0"),
        (args.learning_rate > 0, "--learning_rate must be > 0"),
        (args.max_grad_norm > 0, "--max_grad_norm must be > 0 (it clips the gradient's norm)"),
        (args.beta >= 0, "--beta must be >= 0"),
        (args.epsilon >= 0 and (args.epsilon_high is None or args.epsilon_high >= 0), "--epsilon must be >= 0"),
        (args.num_iterations >= 1, "--num_iterations must be >= 1"),
        (args.loss_type in ("dapo", "grpo", "dr_grpo"), f"unknown --loss_type {args.loss_type!r} (dapo, grpo, dr_grpo)"),
        (args.scale_rewards in ("group", "batch", "none"), f"unknown --scale_rewards {args.scale_rewards!r} (group, batch, none)"),
        (args.task in ("add", "gsm8k", "math"), f"unknown --task {args.task!r} (add, gsm8k, math)"),
        (args.task != "add" or args.dataset_path is None, "--dataset_path needs --task gsm8k or math (add is generated)"),
        (not (args.resume and args.overwrite), "--resume and --overwrite exclude each other"),
        (args.device in ("auto", "cpu", "cuda"), f"unknown --device {args.device!r}"),
        (args.sampler in ("lean", "hf"), f"unknown --sampler {args.sampler!r} (lean, hf)"),
        (min(args.eval_every, args.eval_size - 1, args.eval_num_samples, args.save_every, args.log_samples_every) >= 0,
         "eval/save/log intervals and counts must be >= 0 (eval_size >= 1)"),
    ]
    # === PODS
    checks += [(2 <= args.num_keep <= args.num_generations, "--num_keep must be in [2, num_generations]"),
               (args.rule in ("max_variance", "max_reward", "random"), f"unknown --rule {args.rule!r}")]
    # === end PODS ===
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"error: {message}")
    check_report_to(args.report_to)
    runs.check_model_name(args.model)  # last: the flag tests pass a model that does not exist


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> torch.Tensor:
    """A_i = (r_i - group mean) / (std + 1e-4); a group whose rewards are all equal gets A = 0."""
    grouped = rewards.view(-1, num_generations)
    advantages = grouped - grouped.mean(1, keepdim=True)
    if scale_rewards == "group":
        advantages = advantages / (grouped.std(1, keepdim=True) + 1e-4)
    elif scale_rewards == "batch":
        advantages = advantages / (rewards.std() + 1e-4)
    return torch.nan_to_num(advantages.view(-1), nan=0.0)


def clipped_token_loss(logp, old_logp, advantages, epsilon_low, epsilon_high, ref_logp=None, beta=0.0):
    """Per-token PPO-clip loss (+ beta k3). Returns the loss and the low/high clip indicators."""
    ratio = torch.exp(logp - old_logp)
    a = advantages.unsqueeze(1)
    loss = -torch.min(ratio * a, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * a)
    if beta > 0:
        d = ref_logp - logp
        loss = loss + beta * (torch.exp(d) - d - 1)
    clipped_low = (ratio < 1 - epsilon_low) & (a < 0)
    clipped_high = (ratio > 1 + epsilon_high) & (a > 0)
    return loss, clipped_low, clipped_high


def aggregate_loss(token_loss, mask, loss_type: str, num_sequences: int, num_tokens: int, max_completion_length: int):
    """This micro-batch's share of the step loss; the normalisers are the whole step's."""
    mask = mask.to(token_loss.dtype)
    if loss_type == "grpo":
        return ((token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / num_sequences
    if loss_type == "dr_grpo":
        return (token_loss * mask).sum() / (num_sequences * max_completion_length)
    return (token_loss * mask).sum() / max(num_tokens, 1)  # dapo


# === PODS
def select_max_variance(rewards: torch.Tensor, num_keep: int, rule: str = "max_variance") -> torch.Tensor:
    """One group's rewards (n,) -> the indices (ascending) of the num_keep rollouts to train on."""
    n, m = rewards.numel(), num_keep
    if rule == "random":
        return torch.randperm(n)[:m].sort().values
    # Stable descending sort = ordering by (-reward, index): equal rewards keep their original order.
    values, order = torch.sort(rewards.detach().double().cpu(), descending=True, stable=True)
    if rule == "max_reward":
        return order[:m].sort().values
    zero = values.new_zeros(1)
    c1, c2 = torch.cat([zero, values.cumsum(0)]), torch.cat([zero, (values ** 2).cumsum(0)])

    def spread(k):  # m * population variance of the top k and bottom m - k (same argmax as torch.var)
        lo = n - (m - k)
        s, q = c1[k] + c1[n] - c1[lo], c2[k] + c2[n] - c2[lo]
        return (q - s * s / m).item()

    best_k, best = m, spread(m)
    for k in range(m):  # the official order k = m, 0, 1, ..., m - 1; ">" beyond rounding noise keeps the first
        score = spread(k)
        if score > best + 1e-9 * (1 + abs(best)):
            best_k, best = k, score
    return torch.cat([order[:best_k], order[n - (m - best_k):]]).sort().values
# === end PODS ===


def main(args: Args) -> dict:
    validate(args)
    # ------------------------------------------------------------------ setup
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    script = os.path.splitext(os.path.basename(sys.argv[0] if __name__ == "__main__" else __file__))[0]
    task = load_task(args.task, args.dataset_path, args.eval_size)
    run_dir, ckpt = runs.prepare(args, script)  # refuses to mix runs; exits 0 if a resumed run is complete
    reporter = Reporter(args.report_to, run_dir, {**asdict(args), "script": script})
    model, tok = load_policy(args.model, device, args.gradient_checkpointing)
    ref_model = copy.deepcopy(model).requires_grad_(False).eval() if args.beta > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    B, G = args.prompts_per_step, args.num_generations
    eps_low, eps_high = args.epsilon, args.epsilon if args.epsilon_high is None else args.epsilon_high
    totals = dict.fromkeys(["time/train_total", "time/train_cpu_total", "tokens/generated_total",
                            "tokens/trained_total", "rollouts/generated_total", "updates_total",
                            "skipped/degenerate_total", "skipped/nonfinite_total"], 0)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    # a resumed run gets back its weights, optimizer, totals, every RNG and method_state (what a method carries)
    start_step, totals, method_state = runs.restore(ckpt, model, optimizer, totals)
    del ckpt
    metrics_path, samples_path = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "samples.jsonl")

    def run_eval():
        t = time.time()
        out = evaluate(model, tok, task.test, args.max_prompt_length, args.max_completion_length,
                       args.eval_num_samples, bf16=args.bf16, sampler=args.sampler)
        return {**out, "time/eval": time.time() - t}

    first_eval = run_eval() if start_step == 0 else None
    if first_eval:
        print(f"step 0: held-out greedy {first_eval['eval/greedy_acc']:.3f}, sampled {first_eval['eval/sampled_acc']:.3f}")
    last_acc = first_eval["eval/sampled_acc"] if first_eval else None
    bar = trange(start_step, args.max_steps, desc=script, initial=start_step, total=args.max_steps)
    for step in bar:
        t_step, cpu_step = time.time(), time.process_time()
        m = {"step": step}
        # ------------------------------------------------------------------ rollout
        G = args.num_generations  # === PODS: G is n while generating, and m after the selection below ===
        rows = [task.train[i] for i in prompt_indices(len(task.train), B, step, args.seed)]
        prompt_ids, prompt_mask = encode_prompts(tok, [r["prompt"] for r in rows], args.max_prompt_length, device)
        completion_ids, completion_mask, truncated = generate(
            model, tok, prompt_ids, prompt_mask, G, args.max_completion_length, args.temperature, bf16=args.bf16,
            sampler=args.sampler)
        owner = torch.arange(B, device=device).repeat_interleave(G)  # the prompt of each completion
        input_ids = torch.cat([prompt_ids[owner], completion_ids], 1)
        attention_mask = torch.cat([prompt_mask[owner], completion_mask], 1)
        L = completion_ids.size(1)
        lengths = completion_mask.sum(1)
        m["time/generate"] = time.time() - t_step
        # ------------------------------------------------------------------ reward and advantage
        t = time.time()
        texts = tok.batch_decode(completion_ids.masked_fill(completion_mask == 0, tok.pad_token_id),
                                 skip_special_tokens=True)
        rewards, reward_means = score_completions(task, rows, texts, G)
        group_std = rewards.view(B, G).std(1)
        m.update(reward_means, reward=rewards.mean().item(), reward_std=group_std.mean().item(),
                 frac_reward_zero_std=(group_std == 0).float().mean().item())
        # === PODS: keep m of the n rollouts per group; from here on a "group" is the m kept ones
        kept = torch.cat([g * G + select_max_variance(rewards[g * G:(g + 1) * G], args.num_keep, args.rule)
                          for g in range(B)])
        m["pods/kept_fraction"] = args.num_keep / G
        m["pods/reward_var_before"] = rewards.view(B, G).var(1).mean().item()
        G = args.num_keep
        rewards, texts = rewards[kept], [texts[i] for i in kept.tolist()]
        kept = kept.to(device)
        owner = owner[kept]
        input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
        m["pods/reward_var_after"] = rewards.view(B, G).var(1).mean().item()
        # === end PODS ===
        advantages = group_advantages(rewards, G, args.scale_rewards).to(device)
        if args.log_samples_every and step % args.log_samples_every == 0:  # the first two groups, as scored
            with open(samples_path, "a") as f:
                for i in range(min(2 * G, len(texts))):
                    f.write(json.dumps({"step": step, "prompt": rows[owner[i]]["prompt"], "completion": texts[i],
                                        "reward": rewards[i].item(), "advantage": advantages[i].item()}) + "\n")
        m["time/score"] = time.time() - t
        # ------------------------------------------------------------------ old / reference log-probs (only when needed)
        t = time.time()
        N = input_ids.size(0)  # sequences to train on: all B * G of them in GRPO
        micro_batches = torch.arange(N, device=device).split(args.micro_batch_size)
        old_logps = ref_logps = None
        with torch.no_grad():
            if args.num_iterations > 1:
                old_logps = torch.cat([per_token_logps(model, input_ids[mb], attention_mask[mb], L, args.temperature,
                                                       args.bf16)[0] for mb in micro_batches])
            if ref_model is not None:
                ref_logps = torch.cat([per_token_logps(ref_model, input_ids[mb], attention_mask[mb], L, args.temperature,
                                                       args.bf16)[0] for mb in micro_batches])
        m["time/logps"] = time.time() - t
        # ------------------------------------------------------------------ policy update
        t = time.time()
        num_tokens = int(completion_mask.sum())
        stats = {"loss": 0.0, "entropy": 0.0, "kl": 0.0, "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0}
        grad_norms, tokens_trained, rollouts_trained = [], 0, 0
        if bool((advantages == 0).all()) and args.beta == 0:
            totals["skipped/degenerate_total"] += 1  # no gradient exists; don't let Adam's momentum move the weights
        else:
            model.train()
            for it in range(args.num_iterations):
                for mb in micro_batches:
                    mask = completion_mask[mb]
                    logp, entropy = per_token_logps(model, input_ids[mb], attention_mask[mb], L, args.temperature,
                                                    args.bf16, with_entropy=(it == 0))
                    old = logp.detach() if old_logps is None else old_logps[mb]
                    ref = None if ref_logps is None else ref_logps[mb]
                    token_loss, low, high = clipped_token_loss(logp, old, advantages[mb], eps_low, eps_high, ref, args.beta)
                    loss = aggregate_loss(token_loss, mask, args.loss_type, N, num_tokens, args.max_completion_length)
                    loss.backward()
                    tokens_trained += int(mask.sum())
                    rollouts_trained += len(mb)
                    w = mask.float() / max(num_tokens, 1) / args.num_iterations  # token-mean weights for logging
                    stats["loss"] += loss.item() / args.num_iterations
                    stats["clip_ratio/low_mean"] += (low * w).sum().item()
                    stats["clip_ratio/high_mean"] += (high * w).sum().item()
                    if entropy is not None:
                        stats["entropy"] += (entropy * mask).sum().item() / max(num_tokens, 1)
                    if ref is not None:
                        d = (ref - logp).detach()
                        stats["kl"] += ((torch.exp(d) - d - 1) * w).sum().item()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                if not (torch.isfinite(grad_norm) and np.isfinite(stats["loss"])):
                    totals["skipped/nonfinite_total"] += 1  # never write NaN into the weights
                elif grad_norm == 0:
                    totals["skipped/degenerate_total"] += 1  # no gradient: Adam's momentum alone would move the weights
                else:
                    optimizer.step()
                    totals["updates_total"] += 1
                    if not runs.weights_finite(model):  # unreachable with finite flags and gradients; never saved
                        runs.fail(f"the weights became non-finite at step {step}; the last checkpoint is intact")
                optimizer.zero_grad(set_to_none=True)
                grad_norms.append(grad_norm.item())
        m.update(stats, grad_norm=float(np.mean(grad_norms)) if grad_norms else 0.0)
        m["clip_ratio/region_mean"] = stats["clip_ratio/low_mean"] + stats["clip_ratio/high_mean"]
        if args.beta == 0:
            del m["kl"]
        m["time/update"] = time.time() - t
        # ------------------------------------------------------------------ logging, evaluation, checkpoint
        m["time/step"] = time.time() - t_step
        totals["time/train_total"] += m["time/step"]
        totals["time/train_cpu_total"] += time.process_time() - cpu_step  # CPU seconds: robust to a busy machine
        totals["tokens/generated_total"] += int(lengths.sum())
        totals["tokens/trained_total"] += tokens_trained
        totals["rollouts/generated_total"] += lengths.numel()
        m.update(totals)
        m.update({"tokens/generated": int(lengths.sum()), "tokens/trained": tokens_trained,
                  "rollouts/trained": rollouts_trained,
                  "completions/mean_length": lengths.float().mean().item(),
                  "completions/min_length": int(lengths.min()), "completions/max_length": int(lengths.max()),
                  "completions/clipped_ratio": truncated.float().mean().item(), "learning_rate": args.learning_rate})
        if step == 0 and first_eval:
            m.update(first_eval)  # the step-0 record carries the warm start's accuracy
        done = step + 1
        if (args.eval_every and done % args.eval_every == 0) or done == args.max_steps:
            m.update({k.replace("eval/", "eval_after/"): v for k, v in run_eval().items()})
        with open(metrics_path, "a") as f:
            f.write(json.dumps(m) + "\n")
        reporter.log(m)
        if (args.save_every and done % args.save_every == 0) or done == args.max_steps:
            runs.save_checkpoint(ckpt_path, done, model, optimizer, totals, method_state, {**asdict(args), "script": script})
        last_acc = m.get("eval_after/sampled_acc", last_acc)
        bar.set_postfix(reward=f"{m['reward']:.2f}", acc="-" if last_acc is None else f"{last_acc:.2f}")

    runs.save_final(model, tok, run_dir)
    reporter.close()
    last = runs.summarize(first_eval, m, totals, run_dir)  # the final evaluation; prints before -> after
    return {"first_eval": first_eval, "last_eval": last, "run_dir": run_dir, "totals": totals}


if __name__ == "__main__":
    main(runs.parse_args(Args))
