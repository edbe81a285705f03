"""CPPO: Completion Pruning Policy Optimization = grpo.py + dropping the low-|advantage| completions.

Paper: Lin et al., "CPPO: Accelerating the Training of Group Relative Policy Optimization-Based Reasoning
Models", arXiv 2503.22342; official code: lzhxmu/CPPO. Page: docs/methods/cppo.md.

The idea. A completion's share of the GRPO gradient scales with its advantage |A_i|: one close to its
group's mean teaches little, one in an all-equal group (A = 0) nothing. So compute GRPO's advantages on
the full groups, then prune the fraction P of the step's completions with the smallest |A| before the
expensive passes (old/reference log-probs, forward and backward). Dynamic completion allocation refills
the freed capacity: each step draws B / (1 - P) prompts, so the update is as large as GRPO's but covers
1 / (1 - P) times more questions.

The rule (N = completions in the step, P = prune_rate):
    A_i  = (r_i - mean(group)) / (std(group) + 1e-4)      on the full groups, never re-normalised
    keep = the N - floor(N P) completions with the largest |A_i| over the whole step (scope global,
           the official rule; scope group keeps G - floor(G P) per group); ties: the lower index
    loss = grpo.py's clipped loss on the kept completions, token mean over their tokens
    B'   = round(B / (1 - P)) prompts per step when `allocation` is on (the paper's runs)

Symbols: P = prune_rate in [0, 1). Neutral setting: P = 0 is grpo.py (tests/test_cppo.py).

Run it:
    python cppo.py                                     # offline tiny demo: P = 0.5 with allocation
    python cppo.py --num_generations 16 --prompts_per_step 8 --num_iterations 2 --beta 0.04 \\
        --prune_rate 0.875                             # the paper's setting (cppo_paper_p0.875)
Outputs go to runs/<run_name>/ as for grpo.py, with cppo/* metrics added.
"""

import copy
from dataclasses import dataclass, field

import torch

from common import runs
from common.rollout import encode_prompts, generate, load_policy, per_token_logps
from common.tasks import load_task, prompt_indices, score_completions

DIFF_BUDGET = 39  # === CPPO: changed code lines against grpo.py, checked by tests/test_diffs.py ===


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
    """One clear error line for a bad flag, before anything loads: the shared checks live in common/runs.py."""
    runs.check_args(args)
    # === CPPO
    runs.require([(0 <= args.prune_rate < 1, "--prune_rate must be in [0, 1)"),
                  (args.scope in ("global", "group"), f"unknown --scope {args.scope!r} (global, group)")])
    # === end CPPO ===


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
        keep = group_size - int(group_size * prune_rate + 1e-9)  # 1e-9: 50 * 0.58 is 28.999999999999996 in floating point and must floor to 29
        order = torch.sort(scores.view(-1, group_size), dim=1, descending=True, stable=True).indices[:, :keep]
        return (order + group_size * torch.arange(order.size(0)).unsqueeze(1)).flatten().sort().values
    keep = scores.numel() - int(scores.numel() * prune_rate + 1e-9)
    return torch.sort(scores, descending=True, stable=True).indices[:keep].sort().values
# === end CPPO ===


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
    # === CPPO: allocation draws B / (1 - P) prompts per step (rounded) so the update keeps GRPO's size
    if args.allocation:
        B = round(args.prompts_per_step / (1 - args.prune_rate))
    # === end CPPO ===
    eps_low, eps_high = args.epsilon, args.epsilon if args.epsilon_high is None else args.epsilon_high

    for step in run.steps():
        metrics = {}
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
        metrics["time/generate"] = run.lap()
        # ------------------------------------------------------------------ reward and advantage
        texts = tok.batch_decode(completion_ids.masked_fill(completion_mask == 0, tok.pad_token_id),
                                 skip_special_tokens=True)
        rewards, reward_means = score_completions(task, rows, texts, G)
        group_std = rewards.view(B, G).std(1)
        metrics.update(reward_means, reward=rewards.mean().item(), reward_std=group_std.mean().item(),
                       frac_reward_zero_std=(group_std == 0).float().mean().item())
        advantages = group_advantages(rewards, G, args.scale_rewards).to(device)
        run.log_samples(rows, owner, texts, rewards, advantages, G)
        # === CPPO: drop the low-|A| completions before every forward pass; advantages stay as computed
        kept = prune_completions(advantages, args.prune_rate, None if args.scope == "global" else G).to(device)
        dropped = torch.ones_like(advantages, dtype=torch.bool).index_fill_(0, kept, False)
        metrics.update({"cppo/kept_fraction": kept.numel() / advantages.numel(), "cppo/prompts_per_step": B,
                        "cppo/abs_adv_kept": advantages[kept].abs().mean().item(),
                        "cppo/abs_adv_pruned": advantages[dropped].abs().mean().item() if dropped.any() else 0.0})
        input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
        advantages = advantages[kept]
        # === end CPPO ===
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
