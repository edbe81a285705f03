"""D3S: Dynamic Dual-Level Down-Sampling = grpo.py + the max-Var(A) rollouts, then the top |A| x entropy tokens.

Paper: "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient Policy
Optimization", arXiv 2509.22115. No official code was found. Page: docs/methods/d3s.md.

The idea. Not every rollout, nor every token of one, carries gradient signal. Sample level: keep the
rollouts whose advantages have the largest variance (the paper links Var(A) to a bound on the policy-
gradient norm), across the whole step, so rollouts of all-equal groups (A = 0) drop out first. Token
level: within them, keep the tokens with the largest |A_i| x H_it, the advantage times the policy's
entropy there. Both keep ratios follow a schedule from aggressive to mild, a curriculum.

One step (advantages A on the full groups, exactly as grpo.py, never re-normalised):
    p        = step / (max_steps - 1)                              training progress in [0, 1]
    ratio(p) = (1 - p) ratio_start + p ratio_end                   for samples and for tokens
    S        = argmax_{|S| = N} Var({A_i : i in S}), N = floor(sample_ratio(p) B G)     (scope cross)
               or per group, N_g = floor(sample_ratio(p) G)                          (scope intra)
               solved exactly as PODS: "k largest + (N - k) smallest", one sort, prefix sums
    H_it     = entropy of the current policy at token t of rollout i (detached)
    T        = the top floor(token_ratio(p) x #tokens of S) tokens of S by |A_i| H_it, whole step
    loss     = grpo.py's clipped token loss, token mean over T
Variants: D1S = --scope intra --token_ratio_start 1 --token_ratio_end 1 --schedule none; D1S-Cross the
same with scope cross; D2S = --schedule none; D3S-I = --scope intra.

Symbols: sample/token ratios in (0, 1]. Neutral setting: every ratio 1 is grpo.py (tests/test_d3s.py).

Run it:
    python d3s.py                                      # offline tiny demo: samples 0.5 -> 1, tokens 0.2 -> 0.5
    python d3s.py --sample_ratio_start 0.25 --sample_ratio_end 0.75 \\
        --token_ratio_start 0.2 --token_ratio_end 0.5   # a paper-like aggressive regime (d3s_paper)
Outputs go to runs/<run_name>/ as for grpo.py, with d3s/* metrics added.
"""

import copy
from dataclasses import dataclass, field

import torch

from common import runs
from common.rollout import encode_prompts, generate, load_policy, per_token_logps
from common.tasks import load_task, prompt_indices, score_completions

DIFF_BUDGET = 119  # === D3S: changed code lines against grpo.py, checked by tests/test_diffs.py ===


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
    max_prompt_length: int = field(default=256, metadata={"help": "prompts are left-truncated to this many tokens"})
    max_completion_length: int = field(default=64, metadata={"help": "longer completions are cut and counted as clipped"})
    # === D3S: what to keep, and the schedule from start (p = 0) to end (p = 1)
    scope: str = field(default="cross", metadata={"help": "sample selection across the whole step (cross) or per group (intra)"})
    sample_ratio_start: float = field(default=0.5, metadata={"help": "fraction of the step's rollouts kept at the start"})
    sample_ratio_end: float = field(default=1.0, metadata={"help": "... and at the end of training"})
    token_ratio_start: float = field(default=0.2, metadata={"help": "fraction of the kept rollouts' tokens kept at the start"})
    token_ratio_end: float = field(default=0.5, metadata={"help": "... and at the end of training"})
    schedule: str = field(default="linear", metadata={"help": "linear (start -> end) or none: both ratios fixed at (start + end) / 2"})
    # === end D3S ===
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
    # === D3S
    ratios = (args.sample_ratio_start, args.sample_ratio_end, args.token_ratio_start, args.token_ratio_end)
    per = args.num_generations if args.scope == "intra" else args.prompts_per_step * args.num_generations
    runs.require([(args.scope in ("cross", "intra"), f"unknown --scope {args.scope!r} (cross, intra)"),
                  (args.schedule in ("linear", "none"), f"unknown --schedule {args.schedule!r} (linear, none)"),
                  (all(0 < r <= 1 for r in ratios), "the sample and token ratios must be in (0, 1]"),
                  (int(min(ratios[:2]) * per + 1e-9) >= 2, f"the sample ratios must keep >= 2 of {per} rollouts")])
    # === end D3S ===


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


# === D3S
def select_max_variance(values: torch.Tensor, num_keep: int) -> torch.Tensor:
    """Indices (ascending) of the num_keep values with the largest variance: the best "k largest +
    (num_keep - k) smallest" candidate, scored with prefix sums after one stable sort."""
    n, m = values.numel(), num_keep
    v, order = torch.sort(values.detach().double().cpu(), descending=True, stable=True)
    zero = v.new_zeros(1)
    c1, c2 = torch.cat([zero, v.cumsum(0)]), torch.cat([zero, (v ** 2).cumsum(0)])

    def spread(k):  # num_keep * population variance of the candidate
        lo = n - (m - k)
        s, q = c1[k] + c1[n] - c1[lo], c2[k] + c2[n] - c2[lo]
        return (q - s * s / m).item()

    best_k, best = m, spread(m)
    for k in range(m):  # order k = m, 0, 1, ..., m - 1; a later candidate must be better beyond rounding
        score = spread(k)
        if score > best + 1e-9 * (1 + abs(best)):
            best_k, best = k, score
    return torch.cat([order[:best_k], order[n - (m - best_k):]]).sort().values


def select_rollouts(advantages: torch.Tensor, num_generations: int, keep_ratio: float, scope: str) -> torch.Tensor:
    """Indices (ascending) of the rollouts to train on: the max-Var(A) floor(keep_ratio x n) of the
    whole step (cross: D3S, D1S-Cross) or of each group of n = G (intra: D1S, D3S-I), at least 2."""
    if scope == "cross":
        return select_max_variance(advantages, max(2, int(keep_ratio * advantages.numel() + 1e-9)))
    G = num_generations
    return torch.cat([g * G + select_max_variance(a, max(2, int(keep_ratio * G + 1e-9)))
                      for g, a in enumerate(advantages.view(-1, G))])


def token_keep_mask(advantages, entropy, completion_mask, keep_ratio: float) -> torch.Tensor:
    """Bool mask of the top floor(keep_ratio x #tokens) completion tokens of the step by |A_i| x H_it."""
    valid = completion_mask.bool()
    if keep_ratio >= 1:
        return valid
    score = (advantages.abs().unsqueeze(1) * entropy).masked_fill(~valid, -1.0).flatten()
    keep = max(1, int(keep_ratio * int(valid.sum()) + 1e-9))
    top = torch.sort(score.cpu(), descending=True, stable=True).indices[:keep]  # ties: the lower flat index
    return torch.zeros_like(score, dtype=torch.bool).index_fill_(0, top.to(score.device), True).view_as(valid)


def keep_schedule(progress: float, start: float, end: float, schedule: str = "linear") -> float:
    """Linear from start (progress 0) to end (progress 1); "none" holds the linear schedule's mean, so
    a run without the schedule trains on as many rollouts and tokens, in a different order."""
    if schedule == "none":
        return (start + end) / 2
    return start + (end - start) * min(max(progress, 0.0), 1.0)


def trim_to_kept(keep: torch.Tensor):
    """The rows of the (rollouts x completion positions) keep mask with a kept token, and the number
    of leading columns that hold every kept token. The rest never reaches the loss: a row without a
    kept token adds 0 to every loss_type's numerator (normalisers stay those of the full step), and
    under causal attention no kept token's log-prob depends on a later position."""
    rows = keep.any(1).nonzero().flatten()
    cols = keep.any(0).nonzero().flatten()
    return rows, int(cols.max()) + 1 if cols.numel() else 1

@torch.no_grad()
def token_entropies(model, input_ids, attention_mask, advantages, num_completion_tokens: int, args) -> torch.Tensor:
    """H_it of the current policy (detached) at each completion position of the rows with A != 0; 0 in the
    others, which need no forward pass: A = 0 scores 0 whatever H is."""
    L, live = num_completion_tokens, (advantages != 0).nonzero().flatten()
    entropy = torch.zeros(input_ids.size(0), L, device=input_ids.device)
    for mb in live.split(args.micro_batch_size) if live.numel() else ():
        entropy[mb] = per_token_logps(model, input_ids[mb], attention_mask[mb], L, args.temperature, args.bf16,
                                      with_entropy=True)[1]
    return entropy
# === end D3S ===


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
        # === D3S: sample level, the max-Var(A) rollouts (advantages stay as computed on the full groups)
        progress = step / max(args.max_steps - 1, 1)
        sample_ratio = keep_schedule(progress, args.sample_ratio_start, args.sample_ratio_end, args.schedule)
        token_ratio = keep_schedule(progress, args.token_ratio_start, args.token_ratio_end, args.schedule)
        kept = select_rollouts(advantages, G, sample_ratio, args.scope).to(device)
        from_zero_std = (group_std == 0).to(device).repeat_interleave(G)[kept]
        metrics.update({"d3s/sample_ratio": sample_ratio, "d3s/token_ratio": token_ratio, "d3s/samples_kept": kept.numel(),
                        "d3s/frac_kept_from_zero_std": from_zero_std.float().mean().item()})
        input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
        advantages = advantages[kept]
        # === end D3S ===
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
        # === D3S: token level, the top token_ratio of the kept tokens by |A| x entropy, over the whole step
        positions = 1.0
        if token_ratio < 1:
            entropy = token_entropies(model, input_ids, attention_mask, advantages, L, args)
            keep = token_keep_mask(advantages, entropy, completion_mask, token_ratio)
            score, dropped = advantages.abs().unsqueeze(1) * entropy, completion_mask.bool() & ~keep
            metrics.update({"d3s/score_kept": score[keep].mean().item(),
                            "d3s/score_dropped": score[dropped].mean().item() if dropped.any() else 0.0})
            rows, width = trim_to_kept(keep)  # the update runs only the rows and columns the loss can see
            cut = input_ids.size(1) - L + width
            positions = len(rows) * cut / (N * input_ids.size(1))
            input_ids, attention_mask, advantages = input_ids[rows, :cut], attention_mask[rows, :cut], advantages[rows]
            completion_mask = keep[rows, :width].to(completion_mask.dtype)  # the token mean sees only the kept tokens
            old_logps, ref_logps = (None if x is None else x[rows, :width] for x in (old_logps, ref_logps))
            L, micro_batches = width, torch.arange(len(rows), device=device).split(args.micro_batch_size)
        metrics.update({"d3s/tokens_kept": int(completion_mask.sum()), "d3s/frac_positions_trained": positions})
        # === end D3S ===
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
