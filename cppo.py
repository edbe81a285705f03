"""CPPO: Completion Pruning Policy Optimization = grpo.py + dropping the low-|advantage| completions before the update.

Paper: Lin et al., "CPPO: Accelerating the Training of Group Relative Policy Optimization-Based
Reasoning Models", arXiv 2503.22342; official code: lzhxmu/CPPO (open-r1 and verl versions).

The idea. A completion's contribution to the GRPO gradient scales with its advantage |A_i|: one
close to its group's mean teaches little, one in an all-equal group (A = 0) teaches nothing. So
compute GRPO's advantages on the full groups as usual, then *prune* the fraction P of the step's
completions with the smallest |A| before the expensive passes (old/reference log-probs, forward
and backward). "Dynamic completion allocation" refills the freed update capacity: each step
draws B / (1 - P) prompts, so after pruning the update batch is as large as GRPO's, but covers
1 / (1 - P) times more questions.

The rule (N = completions in the step, P = `prune_rate`):
    A_i = (r_i - mean(group)) / (std(group) + 1e-4)        on the full groups, never re-normalised
    keep = the N - floor(N P) completions with the largest |A_i|, over the whole step ("global",
           the official code's rule; `scope group` keeps G - floor(G P) per group, the paper's tables)
    loss = grpo.py's clipped loss on the kept completions, token mean over the kept tokens
Ties in |A| (binary rewards give only two values per group) go to the lower index: a stable sort
by (-|A|, index). Global pruning keeps the rarer outcome first (the single success on a hard
prompt has the largest |A|) and drops zero-advantage groups entirely.

Allocation (`allocation`, on by default as in the paper's runs): B' = round(B / (1 - P)) prompts
are generated per step; B' is exactly B / (1 - P) for P = 1/2, 3/4, 7/8, ... and the rounded
value otherwise (the update then holds N - floor(N P), close to B G). Without allocation a step
keeps B prompts and trains on (1 - P) of their completions.

Symbols: P = `prune_rate` in [0, 1); P = 0 is the neutral setting (it *is* grpo.py, tested).
Where this file differs from the official code: num_iterations defaults to 1 (theirs: mu = 2) and
beta to 0 (theirs 0.04), grpo.py's defaults; ties are broken deterministically (they use torch.topk,
whose tie order is unspecified).

The paper's setting (official configs, shared/spec/audits/pods-cppo-gvm-vs-official-code.md; issue
14): mu = 2 (--num_iterations 2: two optimiser steps per batch against stored old log-probs, which
are computed for the survivors only, as here), beta = 0.04 (a reference model), G = 16, pruning over
the local batch (our global scope: one process holds the whole step), PPO-clip 0.2 with the token
mean over the survivors (our loss_type dapo), P in {0.5, 0.75, 0.875} with allocation; lr 1e-6 with a
cosine schedule, 1024 completion tokens. Scaled to the tiny task: 8 prompts x 16 per step, so the
update keeps 128 rollouts as every other config, and the tiny model's constant lr 1e-4. Configs
cppo_paper (P = 0.5), cppo_paper_p0.75, cppo_paper_p0.875, and their GRPO baseline grpo_cppo_paper
(8 x 16, mu = 2, beta = 0.04, nothing pruned):
    python benchmarks/compare.py --methods grpo_cppo_paper cppo_paper cppo_paper_p0.75 cppo_paper_p0.875
Measured (2026-12-02, 60 steps, 5 seeds; README): 1.26x / 1.40x / 1.57x fewer updates to 95% of
the baseline's peak at P = 0.5 / 0.75 / 0.875 (all resolved), peaks 0.902 / 0.928 / 0.948 vs
0.869; in CPU time 1.09x / 1.09x / 0.96x, none resolved (generation grows with 1 / (1 - P)).

Run it:
    python cppo.py                                     # offline tiny demo: P = 0.5 with allocation
    python cppo.py --prune_rate 0.875                  # the paper's best GSM8K accuracy setting
    python cppo.py --num_generations 16 --prompts_per_step 8 --num_iterations 2 --beta 0.04 \
        --prune_rate 0.875                             # the paper's setting (cppo_paper_p0.875)
    python grpo.py --num_generations 16 --prompts_per_step 8 --num_iterations 2 --beta 0.04   # its baseline
    python cppo.py --model Qwen/Qwen2.5-0.5B-Instruct --task gsm8k --bf16 --gradient_checkpointing \\
        --learning_rate 1e-6 --max_completion_length 512 --prompts_per_step 16 --num_generations 16 \\
        --prune_rate 0.875 --num_iterations 2 --beta 0.04 --micro_batch_size 8 --max_steps 500 --eval_every 50
Outputs go to runs/<run_name>/ as for grpo.py, with cppo/* metrics added.
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
    num_generations: int = field(default=8, metadata={"help": "G: completions per prompt (the group)"})
    # === CPPO
    prune_rate: float = field(default=0.5, metadata={"help": "P: fraction of the step's completions dropped (smallest |A|)"})
    scope: str = field(default="global", metadata={"help": "prune across the whole step (global) or per group"})
    allocation: bool = field(default=True, metadata={"help": "draw B / (1 - P) prompts so the update keeps GRPO's size"})
    # === end CPPO ===
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
    # === CPPO
    checks += [(0 <= args.prune_rate < 1, "--prune_rate must be in [0, 1)"),
               (args.scope in ("global", "group"), f"unknown --scope {args.scope!r} (global, group)")]
    # === end CPPO ===
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


# === CPPO
def prune_completions(advantages: torch.Tensor, prune_rate: float, group_size: int | None = None) -> torch.Tensor:
    """Indices (ascending) of the completions kept after dropping floor(N P) with the smallest |A|.

    group_size=None prunes across the whole step; otherwise each group keeps size - floor(size P)."""
    scores = advantages.detach().abs().cpu()
    if group_size is not None:
        keep = group_size - int(group_size * prune_rate + 1e-9)  # 1e-9: 0.7 * 10 must floor to 7, not 6
        order = torch.sort(scores.view(-1, group_size), dim=1, descending=True, stable=True).indices[:, :keep]
        return (order + group_size * torch.arange(order.size(0)).unsqueeze(1)).flatten().sort().values
    keep = scores.numel() - int(scores.numel() * prune_rate + 1e-9)
    return torch.sort(scores, descending=True, stable=True).indices[:keep].sort().values
# === end CPPO ===


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
    # === CPPO: allocation draws B / (1 - P) prompts per step (rounded) so the update keeps GRPO's size
    if args.allocation:
        B = round(args.prompts_per_step / (1 - args.prune_rate))
    # === end CPPO ===
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
        advantages = group_advantages(rewards, G, args.scale_rewards).to(device)
        if args.log_samples_every and step % args.log_samples_every == 0:  # the first two groups, as scored
            with open(samples_path, "a") as f:
                for i in range(min(2 * G, len(texts))):
                    f.write(json.dumps({"step": step, "prompt": rows[owner[i]]["prompt"], "completion": texts[i],
                                        "reward": rewards[i].item(), "advantage": advantages[i].item()}) + "\n")
        # === CPPO: drop the low-|A| completions before every forward pass; advantages stay as computed
        kept = prune_completions(advantages, args.prune_rate, None if args.scope == "global" else G).to(device)
        dropped = torch.ones_like(advantages, dtype=torch.bool).index_fill_(0, kept, False)
        m.update({"cppo/kept_fraction": kept.numel() / advantages.numel(), "cppo/prompts_per_step": B,
                  "cppo/abs_adv_kept": advantages[kept].abs().mean().item(),
                  "cppo/abs_adv_pruned": advantages[dropped].abs().mean().item() if dropped.any() else 0.0})
        input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
        advantages = advantages[kept]
        # === end CPPO ===
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
