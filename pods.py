"""PODS: Policy Optimization with Down-Sampling = grpo.py + training on the max-variance m of n rollouts.

Paper: Xu, Savani, Fang, Kolter, "Not All Rollouts are Useful: Down-Sampling Rollouts in LLM Reinforcement
Learning", arXiv 2504.13818; official code: the authors' maxvargrpo_trainer.py. Page: docs/methods/pods.md.

The idea. Generating rollouts parallelises well; updating on them costs memory and a backward pass. So
generate n rollouts per prompt but train on only m < n of them: the m whose rewards have the largest
variance, since an all-right or all-wrong group teaches nothing and a half-right one teaches most. The
advantages are recomputed on the kept m, exactly as GRPO would on a group of m, and only those m get
old/reference log-probs and a backward pass.

The selection (per prompt, rewards r_1..r_n, keep m):
    S* = argmax_{|S| = m} Var({r_i : i in S})
Some optimal S is "the k largest rewards + the (m - k) smallest" for some k in 0..m (the variance is
convex in each chosen value, so moving one outward never lowers it). Sort once (descending, stable:
ties go to the lower index), build prefix sums of r and r^2, and score the m + 1 candidates in O(1):
    m * popvar(top k + bottom m - k) = sum r^2 - (sum r)^2 / m
in the official order k = m, 0, 1, ..., m - 1, a later candidate winning only if strictly better.
Then on the kept group: A_i = (r_i - mean_S) / (std_S + 1e-4) and grpo.py's loss.
`rule` gives the paper's ablations: max_reward (the top m) and random.

Symbols: n = num_generations, m = num_keep. Neutral setting: m = n is grpo.py (tests/test_pods.py).

Run it:
    python pods.py                                     # offline tiny demo: n = 16, keep m = 8
    python pods.py --num_generations 32 --num_keep 8 --loss_type grpo   # the paper's n = 4m (pods_paper)
Outputs go to runs/<run_name>/ as for grpo.py, with pods/* metrics added.
"""

import copy
from dataclasses import dataclass, field

import torch

from common import runs
from common.rollout import encode_prompts, generate, load_policy, per_token_logps
from common.tasks import load_task, prompt_indices, score_completions

DIFF_BUDGET = 52  # === PODS: changed code lines against grpo.py, checked by tests/test_diffs.py ===


@dataclass
class Args:
    # --- model and data
    model: str = field(default="tiny", metadata={"help": "hub id or local path; 'tiny' = the offline tiny Qwen2 shipped in common/tiny_model; tiny:SEED builds another"})
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
    """One clear error line for a bad flag, before anything loads: the shared checks live in common/runs.py."""
    runs.check_args(args)
    # === PODS
    runs.require([(2 <= args.num_keep <= args.num_generations, "--num_keep must be in [2, num_generations]"),
                  (args.rule in ("max_variance", "max_reward", "random"), f"unknown --rule {args.rule!r}")])
    # === end PODS ===


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
    task = load_task(args.task, args.dataset_path, args.eval_size)
    run = runs.Run(args, __file__, task.test)  # seeds, device, run folder; common/runs.py holds all plumbing
    device = run.device
    model, tok = load_policy(args.model, device, args.gradient_checkpointing)
    ref_model = copy.deepcopy(model).requires_grad_(False).eval() if args.beta > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    run.start(model, tok, optimizer)  # resumes from the checkpoint, or evaluates the warm start
    B, G = args.prompts_per_step, args.num_generations
    eps_low, eps_high = args.epsilon, args.epsilon if args.epsilon_high is None else args.epsilon_high

    for step in run.steps():
        metrics = {}
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
        metrics["time/generate"] = run.lap()
        # ------------------------------------------------------------------ reward and advantage
        texts = tok.batch_decode(completion_ids.masked_fill(completion_mask == 0, tok.pad_token_id),
                                 skip_special_tokens=True)
        rewards, reward_means = score_completions(task, rows, texts, G)
        group_std = rewards.view(B, G).std(1)
        metrics.update(reward_means, reward=rewards.mean().item(), reward_std=group_std.mean().item(),
                       frac_reward_zero_std=(group_std == 0).float().mean().item())
        # === PODS: keep m of the n rollouts per group; from here on a "group" is the m kept ones
        kept = torch.cat([g * G + select_max_variance(rewards[g * G:(g + 1) * G], args.num_keep, args.rule)
                          for g in range(B)])
        metrics["pods/kept_fraction"] = args.num_keep / G
        metrics["pods/reward_var_before"] = rewards.view(B, G).var(1).mean().item()
        G = args.num_keep
        rewards, texts = rewards[kept], [texts[i] for i in kept.tolist()]
        kept = kept.to(device)
        owner = owner[kept]
        input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
        metrics["pods/reward_var_after"] = rewards.view(B, G).var(1).mean().item()
        # === end PODS ===
        advantages = group_advantages(rewards, G, args.scale_rewards).to(device)
        run.log_samples(rows, owner, texts, rewards, advantages, G)
        metrics["time/score"] = run.lap()
        # ------------------------------------------------------------------ old / reference log-probs (only when needed)
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
        metrics["time/logps"] = run.lap()
        # ------------------------------------------------------------------ policy update
        num_tokens = int(completion_mask.sum())
        stats = runs.UpdateStats(num_tokens, args.num_iterations)  # what is logged: loss, entropy, kl, clip ratios
        if bool((advantages == 0).all()) and args.beta == 0:
            run.totals["skipped/degenerate_total"] += 1  # no gradient exists; don't let Adam's momentum move the weights
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
                    stats.add(loss, mask, low, high, entropy, logp, ref)
                # clip, then step; a non-finite or all-zero gradient is skipped and counted
                stats.grad_norms.append(run.optimizer_step(args.max_grad_norm, stats.loss_is_finite))
        metrics.update(stats.metrics(args.beta))
        metrics["time/update"] = run.lap()
        # ------------------------------------------------------------------ logging, evaluation, checkpoint
        run.log(metrics, lengths, truncated)

    return run.finish()  # final/ and the held-out accuracy before -> after


if __name__ == "__main__":
    main(runs.parse_args(Args))
