"""GVM-RAFT: Gradient-Variance-Minimising sample allocation = grpo.py + a pilot, per-prompt budgets, RAFT/RAFT++.

Paper: "Optimizing Chain-of-Thought Reasoners via Gradient Variance Minimization in Rejection Sampling
and RL", arXiv 2505.02391; official code: RLHFlow/GVM. Page: docs/methods/gvm_raft.md.

The idea. Training a reasoner is EM over latent chains of thought: sample rationales and keep those
that reach the right answer (rejection sampling), then fine-tune on them (RAFT). Prompts differ in how
many samples it takes to find an accepted one and in how much their gradient matters, so GVM spends a
fixed budget where it cuts the variance of the stochastic gradient most.

One step (B prompts, budget N = B x num_generations):
    pilot     N' = num_pilot samples per prompt; accepted = reward > 0.5; p_i = #accepted / N'
    G_i       mean over prompt i's accepted pilot samples of || d(-sum_t log pi(y_t | x, y_<t)) / dW ||,
              W = the embed_tokens parameter (the official proxy); 0 if none is accepted
    allocate  w_i = G_i / sqrt(p_i + alpha / p_i^(beta - 1)), 0 if p_i = 0 or G_i = 0;
              n_i = N w_i / sum_j w_j by largest remainder (sum n_i = N exactly), capped at max_per_prompt
    sample    reuse min(n_i, N') pilot samples and draw the rest, or draw n_i fresh ones
    M-step    raft:   -A_i log pi(y_it), A_i = max(r_i, 0) (SFT on the samples with a positive score)
              raft++: grpo.py's clipped ratio loss with the same A
              grpo:   group advantages over each prompt's n_i samples (a group of one: A = r)
With alpha = 0, n_i ~ G_i / sqrt(p_i) minimises sum_i G_i^2 / (n_i p_i) subject to sum_i n_i = N; the
alpha term starves prompts that are nearly never solved. `steps_per_generation` splits a step into
random mini-batches, one optimiser step each, as the official runs do.

Symbols: N' = num_pilot; alpha, beta = alloc_alpha, alloc_beta (not the KL beta). Neutral setting:
--allocation uniform --estimator grpo is grpo.py (tests/test_gvm_raft.py).

Run it:
    python gvm_raft.py                                 # offline tiny demo: GVM-RAFT++
    python gvm_raft.py --num_pilot 8 --max_per_prompt 0 --reuse_pilot False --zero_allocation skip \\
        --train_rejected True --beta 0.001 --steps_per_generation 32  # the official setting (gvm_paper)
Outputs go to runs/<run_name>/ as for grpo.py, with gvm/* metrics added.
"""

import copy
import time  # === GVM: the pilot stage's own clock ===
from dataclasses import dataclass, field

import torch

from common import runs
from common.batches import concat_completions  # === GVM ===
from common.rollout import encode_prompts, generate, load_policy, per_token_logps
from common.tasks import load_task, prompt_indices, score_completions

DIFF_BUDGET = 212  # === GVM: changed code lines against grpo.py, checked by tests/test_diffs.py ===


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
    # === GVM: the budget is B x num_generations samples per step, spread by the allocation
    estimator: str = field(default="raft++", metadata={"help": "M-step: raft (SFT on accepted), raft++ (ratio + clip) or grpo"})
    allocation: str = field(default="gvm", metadata={"help": "gvm (pilot + variance-minimising n_i) or uniform (G per prompt)"})
    num_pilot: int = field(default=4, metadata={"help": "N': pilot samples per prompt for p_i and G_i (<= num_generations; official 8)"})
    reuse_pilot: bool = field(default=True, metadata={"help": "n_i includes the prompt's pilot samples (False: n_i fresh ones, official)"})
    max_per_prompt: int = field(default=24, metadata={"help": "cap on n_i (0 = none, official)"})
    zero_allocation: str = field(default="uniform", metadata={"help": "all w_i = 0: uniform (G each) or skip (no samples, no update: official)"})
    alloc_alpha: float = field(default=1e-3, metadata={"help": "alpha in w = G / sqrt(p + alpha / p^(beta - 1))"})
    alloc_beta: float = field(default=2.0, metadata={"help": "beta in the same (not the KL coefficient)"})
    accept_threshold: float = field(default=0.5, metadata={"help": "a sample is accepted when its reward exceeds this"})
    train_rejected: bool = field(default=False, metadata={"help": "raft/raft++: rejected samples (A = 0) count in the token mean and KL (official)"})
    mstep_mean: str = field(default="token", metadata={"help": "raft/raft++: token (mean over tokens) or prompt (per-prompt mean, Algorithm 1)"})
    steps_per_generation: int = field(default=1, metadata={"help": "optimiser steps per rollout batch, one per random mini-batch"})
    # === end GVM ===
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
    # === GVM
    runs.check_finite(alloc_alpha=args.alloc_alpha, alloc_beta=args.alloc_beta, accept_threshold=args.accept_threshold)
    choices = {"estimator": ("raft", "raft++", "grpo"), "allocation": ("gvm", "uniform"),
               "zero_allocation": ("uniform", "skip"), "mstep_mean": ("token", "prompt")}
    runs.require([(getattr(args, k) in v, f"unknown --{k} {getattr(args, k)!r} ({', '.join(v)})") for k, v in choices.items()])
    runs.require([
        (min(args.num_pilot, args.steps_per_generation) >= 1 and args.alloc_alpha >= 0,
         "--num_pilot and --steps_per_generation must be >= 1, --alloc_alpha >= 0"),
        (args.allocation == "uniform" or args.num_pilot <= args.num_generations,
         f"--num_pilot ({args.num_pilot}) must be <= --num_generations ({args.num_generations}): a pilot larger than the budget"),
        (args.allocation == "uniform" or args.max_per_prompt == 0 or args.max_per_prompt >= args.num_generations,
         "--max_per_prompt must be 0 or >= num_generations (else the budget does not fit)"),
        (args.estimator != "raft" or args.beta == 0, "--estimator raft is plain SFT: use raft++ for a KL term"),
        (args.estimator != "grpo" or (args.mstep_mean == "token" and not args.train_rejected),
         "--mstep_mean prompt and --train_rejected are for raft and raft++ (grpo trains every sample)"),
        (args.scale_rewards != "batch", "--scale_rewards batch is not defined for per-prompt budgets")])
    # === end GVM ===


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


# === GVM
def allocate_budget(grad_norms, accept_rates, budget: int, alpha: float = 1e-3, beta: float = 2.0,
                    max_per_prompt: int | None = None, zero_allocation: str = "uniform") -> torch.Tensor:
    """Per-prompt sample counts n_i ~ G_i / sqrt(p_i + alpha / p_i^(beta - 1)), summing exactly to budget
    (or all 0 when no prompt has weight and zero_allocation is "skip")."""
    g, p = torch.as_tensor(grad_norms, dtype=torch.float64), torch.as_tensor(accept_rates, dtype=torch.float64)
    safe = p.clamp(min=1e-12)
    w = torch.where((p > 0) & (g > 0), g / torch.sqrt(safe + alpha / safe ** (beta - 1)), torch.zeros_like(g))
    if w.sum() == 0 and zero_allocation == "skip":  # no prompt has any signal: nothing to sample (official)
        return torch.zeros(len(g), dtype=torch.long)
    w = torch.ones_like(g) if w.sum() == 0 else w  # ... or spend the budget uniformly
    cap = max_per_prompt or budget
    counts = torch.zeros(len(g), dtype=torch.long)
    while (left := budget - int(counts.sum())) > 0:  # capped prompts drop out and their excess is re-spread
        room = torch.where(counts < cap, w, torch.zeros_like(w))
        if room.sum() == 0:
            room = (counts < cap).double()  # only zero-weight prompts have room left
        share = left * room / room.sum()
        add = share.floor().long()
        rest = torch.sort(share - add, descending=True, stable=True).indices[:left - int(add.sum())]
        add[rest] += 1  # largest remainders (ties: the lower index) fill what flooring left
        counts = torch.minimum(counts + add, torch.tensor(cap))
    return counts


def embedding_grad_norms(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Per sequence: || gradient of its summed completion NLL w.r.t. the embed_tokens parameter W ||_2, from one
    batched backward (rows do not interact). A tied W is also the lm_head: its part D^T H per row (D = dNLL/dlogits,
    H = the lm_head's input) adds ||D^T H||^2 = sum((D D^T) * (H H^T)) and a cross term, never a vocab x d matrix."""
    if input_ids.size(0) == 0:  # nothing accepted in this chunk (a forward pass over 0 rows fails)
        return torch.zeros(0, device=input_ids.device)
    L, W = completion_mask.size(1), model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is W
    emb = model.get_input_embeddings()(input_ids[:, :-1]).detach().requires_grad_(True)  # the last input predicts nothing
    mask = attention_mask[:, :-1]
    hidden = model.base_model(inputs_embeds=emb, attention_mask=mask, use_cache=False,
                              position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state[:, -L:]
    logits = model.get_output_embeddings()(hidden).float()
    logp = logits.gather(-1, input_ids[:, -L:, None]).squeeze(-1) - logits.logsumexp(-1)
    grads = torch.autograd.grad(-(logp * completion_mask).sum(), (emb, logits) if tied else (emb,))
    d_emb = (grads[0] * mask.unsqueeze(-1)).float()
    norms = []
    for s in range(len(input_ids)):
        tokens, where = input_ids[s, :-1].unique(return_inverse=True)  # a token used twice adds into one row of W
        rows = torch.zeros(len(tokens), W.size(1), device=W.device).index_add_(0, where, d_emb[s])
        sq = rows.pow(2).sum()
        if tied:
            D, H = grads[1][s], hidden[s].detach().float()
            sq = sq + 2 * (rows * (D[:, tokens].T @ H)).sum() + (D @ D.T * (H @ H.T)).sum()
        norms.append(sq.clamp(min=0).sqrt())
    return torch.stack(norms)


def prompt_mean_weights(owner, accepted, num_trained: int) -> torch.Tensor:
    """Per-sample factors on A that turn the token mean over the trained samples into the paper's
    per-prompt mean (Algorithm 1): num_trained / (B' |acc_i|), B' = the prompts with an accepted sample."""
    if not accepted.any():
        return torch.ones(len(owner), device=owner.device)
    per_prompt = torch.bincount(owner[accepted], minlength=int(owner.max()) + 1)
    return num_trained / (int((per_prompt > 0).sum()) * per_prompt[owner].clamp(min=1).float())


def mini_batches(num_samples: int, steps: int, micro_batch_size: int, seed: int, device) -> list:
    """`steps` random mini-batches (one optimiser step each) of the step's samples, split into micro-batches."""
    perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed)).to(device)
    return [chunk.split(micro_batch_size) for chunk in perm.tensor_split(steps) if len(chunk)]

def pilot_stage(model, tok, task, rows, prompt_ids, prompt_mask, sample, num_pilot: int, accept_threshold: float,
                micro_batch_size: int):
    """N' pilot samples per prompt -> (the pilot batch, p_i, G_i): each prompt's acceptance rate and the mean
    gradient norm of its accepted samples (0 where none is accepted)."""
    B, Np = prompt_ids.size(0), num_pilot
    pilot = pilot_ids, pilot_mask, _ = sample(prompt_ids, prompt_mask, Np)
    pilot_texts = tok.batch_decode(pilot_ids.masked_fill(pilot_mask == 0, tok.pad_token_id), skip_special_tokens=True)
    accepted = score_completions(task, rows, pilot_texts, Np)[0] > accept_threshold
    norms, pilot_prompts = torch.zeros(B * Np), prompt_ids.repeat_interleave(Np, 0)
    pilot_attention = torch.cat([prompt_mask.repeat_interleave(Np, 0), pilot_mask], 1)
    for c in accepted.nonzero().flatten().to(prompt_ids.device).split(micro_batch_size):  # G_i needs accepted ones only
        ids = torch.cat([pilot_prompts[c], pilot_ids[c]], 1)
        norms[c.cpu()] = embedding_grad_norms(model, ids, pilot_attention[c], pilot_mask[c]).cpu()
    p = accepted.view(B, Np).double().mean(1)
    return pilot, p, norms.view(B, Np).sum(1) / accepted.view(B, Np).sum(1).clamp(min=1)


def per_prompt_order(reused, extra, num_pilot: int) -> list[int]:
    """Rows of [pilot batch; new samples] grouped by prompt: prompt i's first reused[i] pilot samples, then
    its extra[i] new ones, so that each prompt's n_i samples are adjacent, as grpo.py's groups are."""
    take, nxt = [], len(reused) * num_pilot
    for i in range(len(reused)):
        take += list(range(i * num_pilot, i * num_pilot + int(reused[i]))) + list(range(nxt, nxt + int(extra[i])))
        nxt += int(extra[i])
    return take
# === end GVM ===


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
        # === GVM: pilot samples -> p_i, G_i -> n_i; then the n_i samples (uniform: grpo.py's rollout)
        sample = lambda ids, mask, k: generate(model, tok, ids, mask, k, args.max_completion_length,  # noqa: E731
                                               args.temperature, bf16=args.bf16, sampler=args.sampler)
        counts, Np, skip = torch.full((B,), G), args.num_pilot, False
        if args.allocation == "uniform":
            completion_ids, completion_mask, truncated = sample(prompt_ids, prompt_mask, G)
        else:
            t_pilot = time.time()
            pilot, p, grad_norm_i = pilot_stage(model, tok, task, rows, prompt_ids, prompt_mask, sample, Np,
                                                args.accept_threshold, args.micro_batch_size)
            counts = allocate_budget(grad_norm_i, p, B * G, args.alloc_alpha, args.alloc_beta, args.max_per_prompt,
                                     args.zero_allocation)
            metrics["gvm/time_pilot"] = time.time() - t_pilot  # pilot samples, scoring, G_i and the allocation
            metrics["gvm/allocation"], skip = counts.tolist(), int(counts.sum()) == 0
            # per prompt: the pilot samples it keeps, then its new ones (skip: the pilot is the step's untrained batch)
            reused = torch.full((B,), Np) if skip else counts.clamp(max=Np) if args.reuse_pilot else torch.zeros_like(counts)
            extra = (counts - reused).clamp(min=0)
            new = sample(prompt_ids.repeat_interleave(extra.to(device), 0), prompt_mask.repeat_interleave(extra.to(device), 0),
                         1) if extra.sum() else None
            pool = concat_completions([pilot, new], tok.pad_token_id)
            completion_ids, completion_mask, truncated = (x[per_prompt_order(reused, extra, Np)] for x in pool)
            run.totals["rollouts/generated_total"] += B * Np - int(reused.sum())  # pilot samples outside the step's batch
            counts = reused + extra
            metrics.update({"gvm/accept_rate_mean": p.mean().item(), "gvm/skipped": int(skip),
                            "gvm/prompts_without_support": int((p == 0).sum()), "gvm/grad_norm_mean": grad_norm_i.mean().item(),
                            "gvm/grad_norm_max": grad_norm_i.max().item(), "gvm/samples_drawn": B * Np + int(extra.sum())})
        metrics.update({"gvm/samples_used": 0 if skip else int(counts.sum()), "gvm/allocation": metrics.get("gvm/allocation", counts.tolist())})
        owner = torch.arange(B, device=device).repeat_interleave(counts.to(device))
        # === end GVM ===
        input_ids = torch.cat([prompt_ids[owner], completion_ids], 1)
        attention_mask = torch.cat([prompt_mask[owner], completion_mask], 1)
        L = completion_ids.size(1)
        lengths = completion_mask.sum(1)
        metrics["time/generate"] = run.lap()
        # ------------------------------------------------------------------ reward and advantage
        texts = tok.batch_decode(completion_ids.masked_fill(completion_mask == 0, tok.pad_token_id),
                                 skip_special_tokens=True)
        # === GVM: groups of n_i samples; the estimator sets the advantages
        rewards, reward_means = score_completions(task, [rows[i] for i in owner.tolist()], texts, 1)
        groups = [g for g in rewards.split(counts.tolist()) if len(g)]
        group_std = torch.stack([g.std() if len(g) > 1 else g.new_zeros(()) for g in groups])
        metrics.update(reward_means, reward=rewards.mean().item(), reward_std=group_std.mean().item(),
                       frac_reward_zero_std=(group_std == 0).float().mean().item())
        if args.estimator == "grpo":  # a group of one has no baseline: A = r
            advantages = torch.cat([group_advantages(g, len(g), args.scale_rewards) if len(g) > 1 else g for g in groups])
        else:  # RAFT, RAFT++: A = max(r, 0), as the official code (a format-only 0.1 on gsm8k/math counts too)
            advantages = rewards.clamp(min=0)
        advantages = advantages.to(device)
        metrics["gvm/accepted_samples"] = int((rewards > args.accept_threshold).sum())
        # === end GVM ===
        run.log_samples(rows, owner, texts, rewards, advantages, G)
        # === GVM: RAFT and RAFT++ train on the accepted samples (the others have A = 0 and no gradient), or on all
        # of them (train_rejected: their tokens count in the mean and the KL); idle = nothing to train on at all
        idle = skip
        if args.estimator != "grpo":
            accepted = advantages > 0
            kept = torch.arange(len(accepted), device=device) if args.train_rejected else accepted.nonzero().flatten()
            if args.mstep_mean == "prompt":
                advantages = advantages * prompt_mean_weights(owner, accepted, len(kept))
            idle = idle or len(kept) == 0
            kept = kept if len(kept) else kept.new_zeros(1)  # keep one row so that no tensor below is empty
            input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
            advantages = advantages[kept]
        # === end GVM ===
        metrics["time/score"] = run.lap()
        # ------------------------------------------------------------------ old / reference log-probs (only when needed)
        N = input_ids.size(0)  # sequences to train on: all B * G of them in GRPO
        micro_batches = torch.arange(N, device=device).split(args.micro_batch_size)
        # === GVM: steps_per_generation random mini-batches, one optimiser step each (1: grpo.py's single step)
        minis = [micro_batches] if args.steps_per_generation == 1 else mini_batches(
            N, args.steps_per_generation, args.micro_batch_size, args.seed * 100_003 + step, device)
        M, scale = len(minis), [(sum(map(len, mini)), int(sum(completion_mask[mb].sum() for mb in mini))) for mini in minis]
        # === end GVM ===
        old_logps = ref_logps = None
        with torch.no_grad():
            if args.num_iterations > 1 or M > 1:  # === GVM: later mini-batches need the rollout policy's log-probs ===
                old_logps = torch.cat([per_token_logps(model, input_ids[mb], attention_mask[mb], L, args.temperature,
                                                       args.bf16)[0] for mb in micro_batches])
            if ref_model is not None:
                ref_logps = torch.cat([per_token_logps(ref_model, input_ids[mb], attention_mask[mb], L, args.temperature,
                                                       args.bf16)[0] for mb in micro_batches])
        metrics["time/logps"] = run.lap()
        # ------------------------------------------------------------------ policy update
        num_tokens = int(completion_mask.sum())
        stats = runs.UpdateStats(num_tokens, args.num_iterations)  # what is logged: loss, entropy, kl, clip ratios
        if (bool((advantages == 0).all()) and args.beta == 0) or idle:  # === GVM: idle: not even a KL step ===
            run.totals["skipped/degenerate_total"] += 1  # no gradient exists; don't let Adam's momentum move the weights
        else:
            model.train()
            for it in range(args.num_iterations * M):  # === GVM: pass it // M, mini-batch it % M ===
                for mb in minis[it % M]:  # === GVM ===
                    mask = completion_mask[mb]
                    logp, entropy = per_token_logps(model, input_ids[mb], attention_mask[mb], L, args.temperature,
                                                    args.bf16, with_entropy=(it < M))  # === GVM ===
                    old = logp.detach() if old_logps is None else old_logps[mb]
                    ref = None if ref_logps is None else ref_logps[mb]
                    token_loss, low, high = clipped_token_loss(logp, old, advantages[mb], eps_low, eps_high, ref, args.beta)
                    # === GVM: RAFT's M-step is SFT on the accepted samples: -A log pi, no ratio, no clipping
                    if args.estimator == "raft":
                        token_loss = -advantages[mb].unsqueeze(1) * logp
                    # === end GVM ===
                    loss = aggregate_loss(token_loss, mask, args.loss_type, *scale[it % M], args.max_completion_length)  # === GVM ===
                    loss.backward()
                    stats.add(loss, mask, low, high, entropy, logp, ref)
                # clip, then step; a non-finite or all-zero gradient is skipped and counted
                stats.grad_norms.append(run.optimizer_step(args.max_grad_norm, stats.loss_is_finite))
        stats.values["loss"] /= M  # === GVM: the mean over mini-batches ===
        metrics.update(stats.metrics(args.beta))
        metrics["time/update"] = run.lap()
        # ------------------------------------------------------------------ logging, evaluation, checkpoint
        run.log(metrics, lengths, truncated)

    return run.finish()  # final/ and the held-out accuracy before -> after


if __name__ == "__main__":
    main(runs.parse_args(Args))
