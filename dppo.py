"""DPPO: Dynamic Pruning Policy Optimization = grpo.py + unbiased random pruning + dense packing.

Paper: Zhu et al., "Unbiased Dynamic Pruning for Efficient Group-Based Policy Optimization", arXiv
2603.04135 (not "Divergence PPO"). No official code was found. Page: docs/methods/dppo.md.

The idea. A deterministic pruning rule ("always drop the low-|A| completions") changes the distribution
the gradient is estimated from, so the gradient is biased. DPPO prunes at random and weights each
survivor by its inverse inclusion probability, so the expected gradient is the full batch's; then it
packs the survivors densely so the hardware does not compute on padding.

The estimator (a weight multiplies each completion's loss; w = 0 means pruned):
    prompt level, before rollout: the pool is the `prompt_pool` fraction p of the prompts seen so far with
        the lowest mean |A| at their last visit. Prompts are read from the stream until the expected
        survivors reach B (N prompts, fixed before any coin); a pooled one is skipped with probability
        s = r_q / p, else weighted w_q = 1 / (1 - s); the others weigh 1. Once every prompt has a
        history, a drawn prompt is pooled with probability p: the expected skipped fraction is r_q.
    completion level, after scoring: per group of n, the pool is the ceil(f n) smallest |A|
        (f = completion_pool); each is pruned with probability q = r_o n / ceil(f n), else weighted
        w_o = 1 / (1 - q): the expected pruned fraction is r_o.
    loss = sum_i w_q(i) w_o(i) (1/|o_i|) sum_t l_it / (N G)       (loss_type grpo, the default here)
E[w] = 1 for every weight, the loss is linear in w and N is fixed before the coins, so E[loss] is GRPO's
loss on the N prompts drawn (tests/test_dppo.py, by Monte Carlo; for the unclipped loss without KL).
Dense Prompt Packing: first-fit decreasing of the survivors into micro-batches whose rows x padded
length <= pack_max_tokens, within windows of pack_window sequences.

Symbols: r_q = prompt_prune_rate < p, r_o = completion_prune_rate < f. Neutral setting: r_q =
r_o = 0 with packing off is grpo.py --loss_type grpo (tested). The demo trains on a 256-prompt set
(max_train_samples) so prompts are revisited and the prompt level acts, as in the paper's epochs.

Run it:
    python dppo.py                                     # offline tiny demo: r_q = 0.25, r_o = 0.5, packing on
    python dppo.py --num_generations 5 --max_train_samples 128   # the paper's setting (dppo_paper)
Outputs go to runs/<run_name>/ as for grpo.py, with dppo/* and pack/* metrics added.
"""

import copy
from dataclasses import dataclass, field

import numpy as np  # === DPPO ===
import torch

from common import runs
from common.rollout import encode_prompts, generate, load_policy, per_token_logps
from common.tasks import load_task, prompt_indices, score_completions

DIFF_BUDGET = 150  # === DPPO: changed code lines against grpo.py, checked by tests/test_diffs.py ===


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
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (also divides the logits in the loss)"})
    # --- the objective (TRL names)
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (1e-4 suits the tiny model; ~1e-6 for real LLMs)"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; 0 = no reference model is loaded"})
    epsilon: float = field(default=0.2, metadata={"help": "lower clip range of the ratio"})
    epsilon_high: float | None = field(default=None, metadata={"help": "upper clip range (default: epsilon)"})
    num_iterations: int = field(default=1, metadata={"help": "mu: optimiser passes over each rollout batch"})
    # === DPPO: pruning rates, pools, packing; the loss defaults to a draw-independent normaliser
    loss_type: str = field(default="grpo", metadata={"help": "grpo (sequence mean over the drawn prompts, unbiased), dr_grpo or dapo"})
    prompt_prune_rate: float = field(default=0.25, metadata={"help": "r_q: expected fraction of the drawn prompts skipped before rollout (once all have a history); must be below prompt_pool"})
    prompt_pool: float = field(default=0.5, metadata={"help": "fraction of the prompts seen so far (lowest last-visit mean |A|) that may be skipped"})
    completion_prune_rate: float = field(default=0.5, metadata={"help": "r_o: expected fraction of each group's completions pruned"})
    completion_pool: float = field(default=0.75, metadata={"help": "fraction of each group (smallest |A|) that may be pruned; must exceed r_o"})
    completion_scope: str = field(default="group", metadata={"help": "group: judge |A| within each group (paper); step: over the whole step"})
    max_train_samples: int = field(default=256, metadata={"help": "train on the first N prompts only (0 = all): a small set is revisited, so the prompt level acts"})
    pack_max_tokens: int = field(default=2048, metadata={"help": "token budget (rows x padded length) of a packed micro-batch; 0 = no packing"})
    pack_window: int = field(default=256, metadata={"help": "sequences considered together when packing (256: a whole default step)"})
    # === end DPPO ===
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
    # === DPPO
    runs.require([(0 <= args.prompt_prune_rate < 1 and 0 <= args.completion_prune_rate < 1, "the prune rates must be in [0, 1)"),
                  (0 <= args.prompt_pool <= 1 and 0 <= args.completion_pool <= 1, "the pools must be in [0, 1]"),
                  (all(r == 0 or r < f for r, f in [(args.prompt_prune_rate, args.prompt_pool), (args.completion_prune_rate, args.completion_pool)]),
                   "each prune rate must be below its pool (else a pooled prompt or completion is always pruned)"),
                  (args.completion_scope in ("group", "step"), f"unknown --completion_scope {args.completion_scope!r} (group, step)"),
                  (args.max_train_samples >= 0, "--max_train_samples must be >= 0"),
                  (args.pack_max_tokens >= 0 and args.pack_window >= 1, "--pack_max_tokens must be >= 0, --pack_window >= 1")])
    # === end DPPO ===


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


# === DPPO
def prompt_pool(history: dict, fraction: float) -> set:
    """The `fraction` of the prompts in the history with the lowest last-visit mean |A| (ties: lower index)."""
    ranked = sorted(history, key=lambda i: (history[i], i))
    return set(ranked[:int(fraction * len(ranked) + 1e-9)])


def draw_prompts(stream, start: int, pool: set, rate: float, num_prompts: int, generator=None):
    """Prompt level, before rollout. Read stream(start), stream(start + 1), ... until the *expected*
    number of survivors reaches num_prompts; this fixes the drawn set (and the normaliser) before any
    coin is flipped. A pooled prompt is skipped with probability `rate` (s = r_q / p), else weighted 1/(1 - rate);
    the others weigh 1. Returns (drawn, picked, weights of picked)."""
    drawn, expected = [], 0.0
    while expected < num_prompts - 1e-9:
        drawn.append(stream(start + len(drawn)))
        expected += 1 - rate if drawn[-1] in pool else 1.0
    picked, weights = [], []
    for i in drawn:
        if i in pool and torch.rand((), generator=generator).item() < rate:
            continue  # skipped: weight 0, nothing generated
        picked.append(i), weights.append(1 / (1 - rate) if i in pool else 1.0)
    if not picked:  # all skipped: the estimate is 0; one prompt is generated at weight 0 so the step runs
        picked, weights = drawn[-1:], [0.0]
    return drawn, picked, weights


def completion_weights(advantages: torch.Tensor, rate: float, group_size: int, pool_fraction: float = 0.75,
                       generator=None) -> torch.Tensor:
    """Completion level. Within each group of `group_size` (pass the step's size for scope "step"), the pool
    is the ceil(pool_fraction n) completions with the smallest |A| (ties: lower index); each is pruned with
    probability q = rate n / pool size, so the expected pruned fraction is `rate`; survivors weigh 1/(1 - q)."""
    a = advantages.detach().abs().cpu().view(-1, group_size)
    weights = torch.ones_like(a)
    pool_size = int(np.ceil(pool_fraction * group_size - 1e-9))
    if rate == 0 or a.numel() == 0:
        return weights.view(-1)
    q = rate * group_size / pool_size  # < 1 because rate < pool_fraction
    pool = torch.sort(a, dim=1, stable=True).indices[:, :pool_size]
    keep = torch.rand(pool.shape, generator=generator) >= q
    return weights.scatter_(1, pool, keep.to(weights.dtype) / (1 - q)).view(-1)


def pack_microbatches(prompt_lengths, completion_lengths, max_tokens: int, window: int) -> list[list[int]]:
    """First-fit decreasing inside each window: micro-batches whose padded size, rows x (longest prompt +
    longest completion), is <= max_tokens: the width the forward pass runs on (prompts are left-padded,
    completions right-padded). A sequence longer than the budget gets a micro-batch of its own."""
    p, c = [int(x) for x in prompt_lengths], [int(x) for x in completion_lengths]
    batches = []
    for start in range(0, len(p), window):
        open_batches = []  # [indices, longest prompt, longest completion]
        for i in sorted(range(start, min(start + window, len(p))), key=lambda i: (-p[i] - c[i], i)):
            for b in open_batches:
                if (len(b[0]) + 1) * (max(b[1], p[i]) + max(b[2], c[i])) <= max_tokens:
                    b[:] = [b[0] + [i], max(b[1], p[i]), max(b[2], c[i])]
                    break
            else:
                open_batches.append([[i], p[i], c[i]])
        batches += [sorted(b[0]) for b in open_batches]
    return batches

def pack_density(batches, prompt_lengths, completion_lengths) -> float:
    """Real tokens / padded tokens over micro-batches of row indices, each padded to its longest prompt plus
    its longest completion (what the forward pass computes on)."""
    padded = sum(len(ix) * (int(prompt_lengths[ix].max()) + int(completion_lengths[ix].max())) for ix in batches)
    return float((prompt_lengths + completion_lengths).sum()) / max(padded, 1)
# === end DPPO ===


def main(args: Args) -> dict:
    validate(args)
    # ------------------------------------------------------------------ setup
    task = load_task(args.task, args.dataset_path, args.eval_size)
    run = runs.Run(args, __file__, task.test)  # seeds, device, run folder; common/runs.py holds all plumbing
    task.train = task.train[:args.max_train_samples or None]  # === DPPO: a small train set is revisited, so history matters ===
    device = run.device
    model, tok = load_policy(args.model, device, args.gradient_checkpointing)
    ref_model = copy.deepcopy(model).requires_grad_(False).eval() if args.beta > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    run.totals["dppo/prompts_visited_total"] = 0  # === DPPO: the stream position (the prompt history is in run.state) ===
    run.start(model, tok, optimizer)  # resumes from the checkpoint, or evaluates the warm start
    B, G = args.prompts_per_step, args.num_generations
    eps_low, eps_high = args.epsilon, args.epsilon if args.epsilon_high is None else args.epsilon_high

    for step in run.steps():
        metrics = {}
        # ------------------------------------------------------------------ rollout
        # === DPPO: prompt level, before rollout: skip pooled prompts at random, draw more to refill
        history = run.state.setdefault("dppo_history", {})  # prompt index -> mean |A| at its last visit
        pool = prompt_pool(history, args.prompt_pool) if args.prompt_prune_rate > 0 else set()
        drawn, picked, prompt_w = draw_prompts(lambda k: prompt_indices(len(task.train), 1, k, args.seed)[0],
                                               run.totals["dppo/prompts_visited_total"], pool,
                                               args.prompt_prune_rate / (args.prompt_pool or 1), args.prompts_per_step)
        run.totals["dppo/prompts_visited_total"] += len(drawn)
        B, rows = len(picked), [task.train[i] for i in picked]  # B: prompts generated this step (B on average)
        # === end DPPO ===
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
        # === DPPO: completion level; the normalisers are those of all the prompts drawn, pruned ones included
        history.update(zip(picked, advantages.view(B, G).abs().mean(1).tolist()))
        completion_w = completion_weights(advantages, args.completion_prune_rate,
                                          G if args.completion_scope == "group" else B * G, args.completion_pool)
        row_prompt_w = torch.tensor(prompt_w).repeat_interleave(G)
        weights = (completion_w * row_prompt_w).to(device)
        num_sequences_full = len(drawn) * G  # grpo, dr_grpo: fixed before any coin, so E[loss] = GRPO's on `drawn`
        num_tokens_full = float((completion_mask.sum(1).cpu() * row_prompt_w).sum())  # dapo: an estimate only
        metrics.update({"dppo/prompts_drawn": len(drawn), "dppo/prompts_generated": B,
                        "dppo/prompts_pooled": sum(i in pool for i in drawn) / len(drawn),
                        "dppo/prompts_pruned": 1 - sum(w > 0 for w in prompt_w) / len(drawn),
                        "dppo/prompt_weight_mean": float(np.mean(prompt_w)),
                        "dppo/completions_pruned": (completion_w == 0).float().mean().item(),
                        "dppo/completions_kept": (weights > 0).float().mean().item()})
        # nothing left: train one row at weight 0 and advantage 0, which the update skips as degenerate
        kept = weights.nonzero().flatten() if bool((weights > 0).any()) else torch.zeros(1, dtype=torch.long, device=device)
        prompt_lengths = prompt_mask.sum(1).repeat_interleave(G)[kept]
        input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
        advantages, weights = advantages[kept] * (weights[kept] > 0), weights[kept]
        # === end DPPO ===
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
        # === DPPO: Dense Prompt Packing of the survivors into token-budget micro-batches
        unpacked = [mb.tolist() for mb in micro_batches]
        if args.pack_max_tokens:
            micro_batches = [torch.tensor(ix, device=device) for ix in pack_microbatches(
                prompt_lengths.tolist(), completion_mask.sum(1).tolist(), args.pack_max_tokens, args.pack_window)]
        density = lambda batches: pack_density(batches, prompt_lengths, completion_mask.sum(1))  # noqa: E731
        metrics.update({"pack/density": density([mb.tolist() for mb in micro_batches]), "pack/density_unpacked": density(unpacked),
                        "pack/micro_batches": len(micro_batches), "pack/micro_batches_unpacked": len(unpacked)})
        # === end DPPO ===
        # ------------------------------------------------------------------ policy update
        num_tokens = int(completion_mask.sum())
        stats = runs.UpdateStats(num_tokens, args.num_iterations)  # what is logged: loss, entropy, kl, clip ratios
        if bool((advantages == 0).all()) and args.beta == 0:
            run.totals["skipped/degenerate_total"] += 1  # no gradient exists; don't let Adam's momentum move the weights
        else:
            model.train()
            for it in range(args.num_iterations):
                for mb in micro_batches:
                    # === DPPO: each micro-batch is cut to its longest completion; losses carry the weights
                    Lm = int(completion_mask[mb].sum(1).max())
                    cut = input_ids.size(1) - L + Lm
                    mask = completion_mask[mb][:, :Lm]
                    logp, entropy = per_token_logps(model, input_ids[mb][:, :cut], attention_mask[mb][:, :cut], Lm,
                                                    args.temperature, args.bf16, with_entropy=(it == 0))
                    old = logp.detach() if old_logps is None else old_logps[mb][:, :Lm]
                    ref = None if ref_logps is None else ref_logps[mb][:, :Lm]
                    token_loss, low, high = clipped_token_loss(logp, old, advantages[mb], eps_low, eps_high, ref, args.beta)
                    loss = aggregate_loss(token_loss * weights[mb].unsqueeze(1), mask, args.loss_type, num_sequences_full,
                                          num_tokens_full, args.max_completion_length)
                    # === end DPPO ===
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
