"""DPPO: Dynamic Pruning Policy Optimization (not "Divergence PPO") = grpo.py + unbiased random pruning + dense packing.

Paper: Zhu et al., "Unbiased Dynamic Pruning for Efficient Group-Based Policy Optimization",
arXiv 2603.04135. No official code was available; the paper's details beyond the abstract are
unconfirmed, so this file implements the concrete, provably unbiased version that
shared/spec/DECISIONS.md fixes.

The idea. Pruning prompts or completions makes GRPO cheaper, but a deterministic rule ("always
drop the low-|A| completions") changes the distribution the gradient is estimated from, so the
gradient is biased. DPPO prunes *at random* and reweights the survivors by their inverse inclusion
probability (importance sampling), so the expected gradient is exactly the full batch's. Then it
packs what survives densely so the hardware does not compute on padding.

The estimator (weights multiply each completion's loss; w = 0 means pruned):
    prompt level, before rollout: a prompt whose last visit produced a zero-variance group is
        skipped with probability r_q (no generation spent on it), else kept with w_q = 1/(1 - r_q);
        other prompts w_q = 1. Skipped slots are refilled from the prompt stream, so a step still
        generates B prompts x G completions (and moves faster through the data).
    completion level, after scoring: the pool = the `completion_pool` fraction of the step's
        completions with the smallest |A| (stable sort). Each pooled completion is kept with
        probability 1 - r_o and weighted w_o = 1/(1 - r_o); the others w_o = 1.
    loss = sum_i w_q(i) w_o(i) (1/|o_i|) sum_t l_it / (B G)     (loss_type grpo, the default here)
Why unbiased: E[w] = (1 - r) / (1 - r) = 1 for every pooled item and the weight multiplies a loss
that is linear in it, so E[grad loss] = grad of the full-batch loss, *provided the normaliser does
not depend on the draw*. Hence the normaliser is B G, the full batch's sequence count, not the
survivors' count (which would rescale the expectation); "dr_grpo" (B G max_completion_length) is
unbiased too; "dapo" divides by the tokens of all generated completions, which is unbiased for the
completion level only. tests/test_dppo.py checks it by Monte Carlo, and shows a deterministic
"keep the first (1 - r)" rule biased by the same test. (As in the paper's proof, the argument is for
the surrogate with rho = 1, i.e. num_iterations = 1; with clipping it holds to first order.)

Dense Prompt Packing (pack_microbatches): instead of fixed micro-batches of `micro_batch_size`
rows, the surviving sequences are packed under a token budget (rows x padded length <=
`pack_max_tokens`): inside each window of `pack_window` upcoming sequences, longest first, each goes
into the first micro-batch it fits (first-fit decreasing). Each micro-batch is then cut to its own
longest completion, so similar lengths share a micro-batch and little is spent on padding. Logged:
pack/density = real tokens / (rows x padded length) and the micro-batch count, packed and unpacked.
The window must be larger than a micro-batch for packing to change anything: with a window no
larger than what fits in one micro-batch, sorting inside it leaves the same micro-batches.

Symbols: r_q = `prompt_prune_rate`, r_o = `completion_prune_rate`, both in [0, 1). r_q = r_o = 0 is
the neutral setting: with --loss_type grpo and packing off it *is* grpo.py (tested).
Deviations and choices: the pool definitions (zero-variance last visit; the low-|A| fraction) are
ours; the prompt history lives in memory, so --resume continues the prompt stream but starts the
history afresh; the loss defaults to "grpo" (sequence mean over B G) because dapo's token count
depends on which prompts were drawn.

Run it:
    python dppo.py                                     # offline tiny demo: r_q = r_o = 0.5, packing on
    python dppo.py --prompt_prune_rate 0 --completion_prune_rate 0 --pack_max_tokens 0   # = grpo.py --loss_type grpo
    python dppo.py --model Qwen/Qwen2.5-0.5B-Instruct --task gsm8k --bf16 --gradient_checkpointing \\
        --learning_rate 1e-6 --max_completion_length 512 --prompts_per_step 16 --num_generations 8 \\
        --pack_max_tokens 8192 --max_steps 500 --eval_every 50
Outputs go to runs/<run_name>/ as for grpo.py, with dppo/* and pack/* metrics added.
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
from transformers import HfArgumentParser

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
    loss_type: str = field(default="grpo", metadata={"help": "grpo (sequence mean over B G, unbiased), dr_grpo or dapo"})
    prompt_prune_rate: float = field(default=0.5, metadata={"help": "r_q: skip probability of a prompt whose last group had zero variance"})
    completion_prune_rate: float = field(default=0.5, metadata={"help": "r_o: prune probability of a completion in the low-|A| pool"})
    completion_pool: float = field(default=0.5, metadata={"help": "fraction of the step's completions (smallest |A|) that may be pruned"})
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
    # --- hardware
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast for generation and forward passes (GPU)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory in the update"})


def validate(args: Args) -> None:
    """Fail with one clear line before anything heavy is loaded."""
    checks = [
        (args.max_steps >= 1, "--max_steps must be >= 1"),
        (args.prompts_per_step >= 1, "--prompts_per_step must be >= 1"),
        (args.num_generations >= 2, "--num_generations must be >= 2 (a group needs a baseline)"),
        (args.max_prompt_length >= 1 and args.max_completion_length >= 1, "lengths must be >= 1"),
        (args.micro_batch_size >= 1, "--micro_batch_size must be >= 1"),
        (args.temperature > 0, "--temperature must be > 0"),
        (args.learning_rate > 0, "--learning_rate must be > 0"),
        (args.beta >= 0, "--beta must be >= 0"),
        (args.epsilon >= 0 and (args.epsilon_high is None or args.epsilon_high >= 0), "--epsilon must be >= 0"),
        (args.num_iterations >= 1, "--num_iterations must be >= 1"),
        (args.loss_type in ("dapo", "grpo", "dr_grpo"), f"unknown --loss_type {args.loss_type!r} (dapo, grpo, dr_grpo)"),
        (args.scale_rewards in ("group", "batch", "none"), f"unknown --scale_rewards {args.scale_rewards!r} (group, batch, none)"),
        (args.task in ("add", "gsm8k", "math"), f"unknown --task {args.task!r} (add, gsm8k, math)"),
        (args.device in ("auto", "cpu", "cuda"), f"unknown --device {args.device!r}"),
        (min(args.eval_every, args.eval_size - 1, args.eval_num_samples, args.save_every, args.log_samples_every) >= 0,
         "eval/save/log intervals and counts must be >= 0 (eval_size >= 1)"),
    ]
    # === DPPO
    checks += [(0 <= args.prompt_prune_rate < 1 and 0 <= args.completion_prune_rate < 1, "the prune rates must be in [0, 1)"),
               (0 <= args.completion_pool <= 1, "--completion_pool must be in [0, 1]"),
               (args.pack_max_tokens >= 0 and args.pack_window >= 1, "--pack_max_tokens must be >= 0, --pack_window >= 1")]
    # === end DPPO ===
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"error: {message}")


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
def completion_weights(advantages: torch.Tensor, rate: float, generator=None, pool_fraction: float = 0.5) -> torch.Tensor:
    """Importance weights: 0 (pruned) or 1/(1 - rate) for the low-|A| pool, 1 outside it."""
    weights = torch.ones(advantages.numel())
    pool_size = int(pool_fraction * advantages.numel() + 1e-9)
    if rate == 0 or pool_size == 0:
        return weights
    pool = torch.sort(advantages.detach().abs().cpu(), stable=True).indices[:pool_size]  # ties: lower index
    keep = torch.rand(pool_size, generator=generator) >= rate
    weights[pool] = keep.float() / (1 - rate)
    return weights


def pack_microbatches(lengths, max_tokens: int, window: int) -> list[list[int]]:
    """First-fit decreasing inside each window: micro-batches whose rows x longest <= max_tokens
    (a sequence longer than the budget gets a micro-batch of its own). Indices ascending per batch."""
    lengths = [int(x) for x in lengths]
    batches = []
    for start in range(0, len(lengths), window):
        open_batches = []  # [indices, longest]
        for i in sorted(range(start, min(start + window, len(lengths))), key=lambda i: (-lengths[i], i)):
            for b in open_batches:  # longest first, so a batch's first row fixes its padded length
                if (len(b[0]) + 1) * b[1] <= max_tokens:
                    b[0].append(i)
                    break
            else:
                open_batches.append([[i], lengths[i]])
        batches += [sorted(b[0]) for b in open_batches]
    return batches
# === end DPPO ===


def main(args: Args) -> dict:
    validate(args)
    # ------------------------------------------------------------------ setup
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    script = os.path.splitext(os.path.basename(sys.argv[0] if __name__ == "__main__" else __file__))[0]
    run_dir = os.path.join(args.output_dir, args.run_name or f"{script}_{args.task}_seed{args.seed}")
    task = load_task(args.task, args.dataset_path, args.eval_size)
    model, tok = load_policy(args.model, device, args.gradient_checkpointing)
    ref_model = copy.deepcopy(model).requires_grad_(False).eval() if args.beta > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    B, G = args.prompts_per_step, args.num_generations
    eps_low, eps_high = args.epsilon, args.epsilon if args.epsilon_high is None else args.epsilon_high
    totals = dict.fromkeys(["time/train_total", "time/train_cpu_total", "tokens/generated_total",
                            "tokens/trained_total", "rollouts/generated_total", "updates_total",
                            "skipped/degenerate_total", "skipped/nonfinite_total"], 0)
    was_zero_std, totals["dppo/prompts_visited_total"] = {}, 0  # === DPPO: prompt history, stream position ===
    start_step = 0
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    if args.resume:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"]), optimizer.load_state_dict(ckpt["optimizer"])
        start_step, totals = ckpt["step"], ckpt["totals"]
        random.setstate(ckpt["rng"]["python"]), np.random.set_state(ckpt["rng"]["numpy"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({**asdict(args), "script": script}, f, indent=2)
    metrics_path, samples_path = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "samples.jsonl")
    if not args.resume:  # a fresh run starts fresh files; a resumed one drops records past its checkpoint
        open(metrics_path, "w").close(), open(samples_path, "w").close()
    else:
        with open(metrics_path) as f:
            kept = [line for line in f if json.loads(line)["step"] < start_step]
        with open(metrics_path, "w") as f:
            f.writelines(kept)

    def run_eval():
        t = time.time()
        out = evaluate(model, tok, task.test, args.max_prompt_length, args.max_completion_length,
                       args.eval_num_samples, bf16=args.bf16)
        return {**out, "time/eval": time.time() - t}

    first_eval = run_eval() if start_step == 0 else None
    if first_eval:
        print(f"step 0: held-out greedy {first_eval['eval/greedy_acc']:.3f}, sampled {first_eval['eval/sampled_acc']:.3f}")
    bar = trange(start_step, args.max_steps, desc=script, initial=start_step, total=args.max_steps)
    for step in bar:
        t_step, cpu_step = time.time(), time.process_time()
        m = {"step": step}
        # ------------------------------------------------------------------ rollout
        # === DPPO: prompt level, before rollout; skipped slots are refilled from the stream
        picked, prompt_w = [], []
        while len(picked) < B:
            i = prompt_indices(len(task.train), 1, totals["dppo/prompts_visited_total"], args.seed)[0]
            totals["dppo/prompts_visited_total"] += 1
            flagged = args.prompt_prune_rate > 0 and was_zero_std.get(i, False)
            if flagged and torch.rand(()).item() < args.prompt_prune_rate:
                continue  # skipped before rollout: weight 0, nothing generated
            picked.append(i), prompt_w.append(1 / (1 - args.prompt_prune_rate) if flagged else 1.0)
        rows = [task.train[i] for i in picked]
        # === end DPPO ===
        prompt_ids, prompt_mask = encode_prompts(tok, [r["prompt"] for r in rows], args.max_prompt_length, device)
        completion_ids, completion_mask, truncated = generate(
            model, tok, prompt_ids, prompt_mask, G, args.max_completion_length, args.temperature, bf16=args.bf16)
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
        # === DPPO: completion level; the normalisers stay those of the full batch, so E[loss] is unchanged
        was_zero_std.update({i: bool(s == 0) for i, s in zip(picked, group_std.tolist())})
        weights = completion_weights(advantages, args.completion_prune_rate, pool_fraction=args.completion_pool)
        weights = (weights * torch.tensor(prompt_w).repeat_interleave(G)).to(device)
        kept = weights.nonzero().flatten()
        num_sequences_full, num_tokens_full = B * G, int(completion_mask.sum())
        m.update({"dppo/prompt_weight_mean": float(np.mean(prompt_w)), "dppo/completions_kept": kept.numel() / (B * G)})
        prompt_lengths = prompt_mask.sum(1).repeat_interleave(G)[kept]
        input_ids, attention_mask, completion_mask = input_ids[kept], attention_mask[kept], completion_mask[kept]
        advantages, weights = advantages[kept], weights[kept]
        # === end DPPO ===
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
        # === DPPO: Dense Prompt Packing of the survivors into token-budget micro-batches
        seq_lengths = prompt_lengths + completion_mask.sum(1)
        unpacked = [mb.tolist() for mb in micro_batches]
        if args.pack_max_tokens:
            micro_batches = [torch.tensor(ix, device=device) for ix in
                             pack_microbatches(seq_lengths.tolist(), args.pack_max_tokens, args.pack_window)]

        def density(batches):  # real tokens / (rows x (longest prompt + longest completion)) per micro-batch
            padded = sum(len(ix) * (int(prompt_lengths[ix].max()) + int(completion_mask[ix].sum(1).max())) for ix in batches)
            return float(seq_lengths.sum()) / max(padded, 1)
        m.update({"pack/density": density([mb.tolist() for mb in micro_batches]), "pack/density_unpacked": density(unpacked),
                  "pack/micro_batches": len(micro_batches), "pack/micro_batches_unpacked": len(unpacked)})
        # === end DPPO ===
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
                if torch.isfinite(grad_norm) and np.isfinite(stats["loss"]):
                    optimizer.step()
                    totals["updates_total"] += 1
                else:
                    totals["skipped/nonfinite_total"] += 1  # never write NaN into the weights
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
        if (args.save_every and done % args.save_every == 0) or done == args.max_steps:
            rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
            torch.save({"step": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "totals": totals, "rng": rng}, ckpt_path + ".tmp")
            os.replace(ckpt_path + ".tmp", ckpt_path)  # atomic: a kill mid-write never corrupts the checkpoint
        bar.set_postfix(reward=f"{m['reward']:.2f}", acc=f"{m.get('eval_after/sampled_acc', float('nan')):.2f}")

    model.save_pretrained(os.path.join(run_dir, "final"))
    tok.save_pretrained(os.path.join(run_dir, "final"))
    last = {k.replace("eval_after/", "eval/"): v for k, v in m.items() if k.startswith("eval_after/")}
    if first_eval:
        print(f"held-out accuracy: greedy {first_eval['eval/greedy_acc']:.3f} -> {last['eval/greedy_acc']:.3f}, "
              f"sampled {first_eval['eval/sampled_acc']:.3f} -> {last['eval/sampled_acc']:.3f} "
              f"({totals['time/train_total']:.0f}s of training) in {run_dir}")
    return {"first_eval": first_eval, "last_eval": last, "run_dir": run_dir, "totals": totals}


if __name__ == "__main__":
    main(HfArgumentParser(Args).parse_args_into_dataclasses()[0])
