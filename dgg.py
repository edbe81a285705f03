"""DGG: Dynamic Gradient Gating of rollout reuse = grpo.py + reusing each batch K times, gated by the lm_head gradient.

Paper: Miao et al., "When to Stop Reusing: Dynamic Gradient Gating for Sample-Efficient RLVR", arXiv
2605.19425. No official code was found. Page: docs/methods/dgg.md.

The idea. Rollouts are the expensive part, so reuse each batch for K optimiser updates as PPO does
(num_iterations = K, clipped ratio against the batch's old policy). In RLVR this often hurts: the paper
traces the damage to the lm_head, whose weights diverge disproportionately, and its gradient norm
bounds the policy divergence. So watch that norm; when it jumps on a reused batch, drop that update
and stop reusing the batch: the next step samples fresh rollouts.

The gate, for pass k = 1..K over a batch, after backward and before clipping and the optimiser step:
    g_k = || grad_{W_lm_head} L ||_2          s_k = g_k (gate_statistic norm) or g_k^2 (energy)
    x_k = s_k - s_{k-1}                       k >= 2: an increment during reuse of the same batch
    z_k = (x_k - mean(H_k)) / (std(H_k) + 1e-8)      H_k = the last W increments seen at pass k
                                                     (gate_scope shared: at any pass); population std
    drop if H_k holds W increments and z_k > tau; then x_k joins H_k, fired or not
A dropped update zeroes the gradients and skips optimizer.step(), so Adam's moments never see it, and
the batch's remaining passes are abandoned. Pass 1 is never gated: it is GRPO's single-use update.
With tied embeddings the lm_head weight is embed_tokens.weight, and g is that shared matrix's gradient.

Symbols: K = num_iterations (4 here), tau = gate_tau (0.5), W = gate_window (20). Neutral settings:
tau = inf is grpo.py with num_iterations = K; K = 1 is grpo.py (tests/test_dgg.py).

Run it:
    python dgg.py                                      # offline tiny demo: K = 4, tau = 0.5
    python dgg.py --num_generations 16 --prompts_per_step 8   # the paper's setting (dgg_paper)
Outputs go to runs/<run_name>/ as for grpo.py, with dgg/* metrics added.
"""

import collections  # === DGG ===
import copy
from dataclasses import dataclass, field

import numpy as np  # === DGG ===
import torch

from common import runs
from common.rollout import encode_prompts, generate, load_policy, per_token_logps
from common.tasks import load_task, prompt_indices, score_completions

DIFF_BUDGET = 83  # === DGG: changed code lines against grpo.py, checked by tests/test_diffs.py ===


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
    # === DGG: reuse each batch up to K times, gated
    num_iterations: int = field(default=4, metadata={"help": "K: most optimiser passes over each rollout batch"})
    gate_tau: float = field(default=0.5, metadata={"help": "tau: drop a reused pass whose increment's z-score exceeds this (inf = no gate)"})
    gate_window: int = field(default=20, metadata={"help": "W: same-batch increments in the gate's sliding window (>= 2)"})
    gate_statistic: str = field(default="norm", metadata={"help": "norm (||grad||) or energy (||grad||^2) of the lm_head gradient"})
    gate_scope: str = field(default="per_pass", metadata={"help": "one window per pass index k (per_pass) or one for every k (shared)"})
    # === end DGG ===
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
    # === DGG
    runs.require([(args.gate_window >= 2, "--gate_window must be >= 2 (a z-score needs a spread)"),
                  (args.gate_tau >= 0, "--gate_tau must be >= 0 (inf disables the gate)"),  # also rejects nan
                  (args.gate_statistic in ("norm", "energy"), f"unknown --gate_statistic {args.gate_statistic!r} (norm, energy)"),
                  (args.gate_scope in ("per_pass", "shared"), f"unknown --gate_scope {args.gate_scope!r} (per_pass, shared)")])
    # === end DGG ===


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


# === DGG
class GradientGate:
    """z-score of the lm_head gradient's increment between consecutive passes over the same batch.

    should_drop(g, k) is called once for every pass k = 1..K with that pass's gradient norm g. Pass 1
    only remembers its statistic s (g, or g^2 for "energy"): the jump from the previous batch's last
    pass is not a reuse increment and never enters a window. From k = 2 on, x = s_k - s_{k-1} is scored
    against the last W increments (of pass k when per_pass, of every k when shared) and then added to
    them, whether it fires or not. It fires when the window was full and z > tau.
    """

    def __init__(self, window: int, tau: float, statistic: str = "norm", scope: str = "per_pass"):
        self.window, self.tau, self.statistic, self.scope = window, tau, statistic, scope
        self.windows = {}  # pass index k (0 when shared) -> the last `window` increments seen there
        self.prev = None  # s at the previous pass over this batch (None: no increment can be formed)
        self.z = None  # the last z-score (None: pass 1, or its window not yet full)

    def should_drop(self, grad_norm: float, pass_index: int) -> bool:
        s = grad_norm ** 2 if self.statistic == "energy" else grad_norm
        prev, self.z = self.prev, None
        self.prev = s if np.isfinite(s) else None  # a non-finite pass (its update is skipped) breaks the chain
        if pass_index == 1 or prev is None or self.prev is None:
            return False
        x, key = s - prev, pass_index if self.scope == "per_pass" else 0
        past = self.windows.setdefault(key, collections.deque(maxlen=self.window))
        if len(past) == self.window:
            self.z = float((x - np.mean(past)) / (np.std(past) + 1e-8))  # population std
        past.append(x)
        return self.z is not None and self.z > self.tau


def gated_weight(model) -> torch.nn.Parameter:
    """The lm_head weight; when tied (Qwen2.5-0.5B to 3B) it *is* embed_tokens.weight: its .grad sums both uses."""
    return model.get_output_embeddings().weight
# === end DGG ===


def main(args: Args) -> dict:
    validate(args)
    # ------------------------------------------------------------------ setup
    task = load_task(args.task, args.dataset_path, args.eval_size)
    run = runs.Run(args, __file__, task.test)  # seeds, device, run folder; common/runs.py holds all plumbing
    device = run.device
    model, tok = load_policy(args.model, device, args.gradient_checkpointing)
    ref_model = copy.deepcopy(model).requires_grad_(False).eval() if args.beta > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    # === DGG: the gate, and the two weights whose relative change shows the divergence
    gate = GradientGate(args.gate_window, args.gate_tau, args.gate_statistic, args.gate_scope)
    run.totals["dgg/fired_total"], lm_head = 0, gated_weight(model)
    mid_layer = model.model.layers[len(model.model.layers) // 2].mlp.down_proj.weight
    # === end DGG ===
    run.start(model, tok, optimizer)  # resumes from the checkpoint, or evaluates the warm start
    # === DGG: the gate's windows travel in the checkpoint (a live reference, saved as it stands), so --resume is exact
    vars(gate).update(run.state.get("dgg_gate", {}))
    run.state["dgg_gate"] = vars(gate)
    # === end DGG ===
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
            lm_before, mid_before = lm_head.detach().clone(), mid_layer.detach().clone()  # === DGG ===
            metrics["dgg/fired_at_pass"] = 0  # === DGG ===
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
                # === DGG: a spike in the lm_head gradient's same-batch increment drops this update and ends reuse
                g = lm_head.grad.norm().item()
                metrics[f"dgg/lm_head_grad_norm/pass{it + 1}"] = g
                drop = gate.should_drop(g, it + 1)
                if gate.z is not None:
                    metrics[f"dgg/z/pass{it + 1}"] = gate.z
                if drop:
                    optimizer.zero_grad(set_to_none=True)  # Adam never sees it: no step, no moment update
                    metrics["dgg/fired_at_pass"], run.totals["dgg/fired_total"] = it + 1, run.totals["dgg/fired_total"] + 1
                    break
                # === end DGG ===
                # clip, then step; a non-finite or all-zero gradient is skipped and counted
                stats.grad_norms.append(run.optimizer_step(args.max_grad_norm, stats.loss_is_finite))
        metrics.update(stats.metrics(args.beta))
        # === DGG
        if stats.grad_norms:
            metrics.update({"dgg/passes": len(stats.grad_norms),
                            "dgg/rel_change/lm_head": ((lm_head - lm_before).norm() / lm_before.norm()).item(),
                            "dgg/rel_change/mid_layer": ((mid_layer - mid_before).norm() / mid_before.norm()).item()})
        # === end DGG ===
        metrics["time/update"] = run.lap()
        # ------------------------------------------------------------------ logging, evaluation, checkpoint
        run.log(metrics, lengths, truncated)

    return run.finish()  # final/ and the held-out accuracy before -> after


if __name__ == "__main__":
    main(runs.parse_args(Args))
