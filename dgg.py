"""DGG: Dynamic Gradient Gating of rollout reuse = grpo.py + reusing each batch K times, gated by the lm_head gradient.

Paper: Miao et al., "When to Stop Reusing: Dynamic Gradient Gating for Sample-Efficient RLVR",
arXiv 2605.19425 (the "Disproportionate Weight Divergence" paper). No official code was available.

The phenomenon. Rollouts are the expensive part of RLVR, so reuse each batch for K optimiser
updates, as PPO does (num_iterations = K, with the clipped ratio against the batch's old policy).
In RLVR this often *hurts*: the paper traces the damage to the lm_head, whose weights change
disproportionately (a surge) while the middle layers barely move, and shows that the lm_head
gradient norm lower-bounds the policy divergence. So watch that norm, and when it jumps on a
reused batch, drop that update and stop reusing the batch: sample fresh rollouts instead.

The gate (issue 14's reading of the sources; the paper's exact rule is unconfirmed, see below). For
the k-th pass over a batch (k = 1..K), after backward and before clipping and the optimiser step:
    g_k = || grad_{W_lm_head} L ||_2           s_k = g_k (gate_statistic norm) or g_k^2 (energy)
    x_k = s_k - s_{k-1}                        k >= 2: an increment during reuse of the SAME batch
    z_k = (x_k - mean(H_k)) / (std(H_k) + 1e-8)       H_k = the last W increments observed at pass k
                                                      (gate_scope shared: at any pass), population std
    drop if  H_k holds W increments  and  z_k > tau;  then x_k joins H_k, fired or not
A dropped update zeroes the gradients and skips optimizer.step(), so Adam's moments never see it
(feeding Adam a zero gradient would still decay and apply them), and the batch's remaining passes
are abandoned: the next step samples fresh rollouts. Pass 1 is never gated (it has no increment):
it is exactly GRPO's single-use update. The jump from one batch's last pass to the next batch's
first is not a reuse increment and never enters a window.

Why this rule (issue 14, shared/spec/audits/dgg-d3s-dppo-vs-papers.md). The first version took
dg = g_k - g of the last *applied* update and kept only applied updates in the window, so every
batch's pass 1 brought in the large cross-batch jump, and those swamped the small reuse increments:
replayed on a logged trace it fired twice in 120 batches, while the sources' 2-2.93x rollout
savings need a gate that fires on most batches. Why one window per pass index by default: the
lm_head gradient norm falls with every pass over a batch (seed 0, no gate: mean 0.039, 0.020, 0.014,
0.009 at passes 1-4), so x_2 is typically a larger drop than x_4. A shared window mixes the two and
a late pass's small drop reads as "above the mean" for its pass index alone (a hand example is in
tests/test_dgg.py); per-pass windows compare each increment with the same pass of recent batches,
which is the question the gate asks: is this reuse step unusual? The price: H_k fills only after
W batches have reached pass k, so late passes are ungated for longer at the start.

Tied embeddings (Qwen2.5-0.5B to 3B): the lm_head weight *is* embed_tokens.weight, one Parameter,
so g is the norm of the shared matrix's gradient, output and input use together
(tests/test_dgg.py checks it on a tied Qwen2 against an untied twin). The sources do not say which
gradient the paper reads on tied models; this is the only one a tied model has.

Symbols: K = `num_iterations` (default 4 here), tau = `gate_tau` (0.5), W = `gate_window` (20,
>= 2), statistic = `gate_statistic` (norm), scope = `gate_scope` (per_pass).
Neutral settings (tested): tau = inf is grpo.py with num_iterations = K; K = 1 is grpo.py.

Unconfirmed in the paper's rule (shared/spec/algorithms.md 7.2), decided here: the statistic is
the increment, not g itself; the norm rather than its square by default (the sources say "energy":
--gate_statistic energy); W = 20; population std; one window per pass index; the gate looks only
at the lm_head gradient, taken before global clipping; "intercept" = skip the optimiser step.
--resume is exact: the gate's windows are saved in the checkpoint (tested).

The premise at 1M parameters. The paper's Disproportionate Weight Divergence is a surge in the
lm_head's change during reuse while the middle layers stay stable. The logs below show it or not:
on the tiny model the lm_head's relative change per step is *smaller* than the middle MLP's
(median ratio 0.45x over a naive K = 4 run, issue 14), so the premise is absent at this scale and
the gate acts here as a generic reuse-step detector, not as a DWD detector. At the Qwen2.5-0.5B
shape (2 layers, tied, random weights, lr 1e-6, 3 steps of K = 4; benchmarks/real_shapes.py
--methods dgg) the ratio is 0.71-0.78: no surge either, though random weights say little about a
trained model, and Adam moves the embedding rows of unused tokens not at all. Trained weights on a
GPU remain unmeasured.

Measured (2026-12-02, v3 warm start, 60 steps, `python benchmarks/compare.py`; README): the gate
fires on 30-33 of the last 40 batches in each of 5 seeds, 2.3-2.5 passes applied per batch instead
of 4. At the paper's shape (8 x 16, 3 seeds) tau 0.1 / 0.5 / 1.0 fire on 38-40 / 30-33 / 6-14 of
the last 40 and apply 1.75 / 2.2 / 3.2-3.6 passes (the issue's replay: 2.1 / 2.6 / 3.3). dgg_paper
holds accuracy above naive reuse (peak 85.4% vs 83.3%; reuse reached 95% of GRPO's peak in 2 of 3
seeds), but single-use GRPO is better per update (dgg: 0.48x in updates to target, 5 seeds) and per
CPU second at every tau. The first W = 20 batches are never gated (an empty window), a third of a
60-step run, so the first 60 updates of dgg_paper and reuse_k4_paper are the same.

Logs: dgg/lm_head_grad_norm/pass<k> for every pass, dgg/z/pass<k> (where H_k is full),
dgg/fired_at_pass (0 = none), dgg/passes (passes not dropped on this batch), dgg/fired_total, the relative
weight change of the step, ||W_after - W_before|| / ||W_before||, of the lm_head and of a middle
layer's MLP (dgg/rel_change/lm_head, dgg/rel_change/mid_layer): the divergence, visible or not.

The paper's setting (sources: K = 4, tau in {0.1, 0.5, 1.0} with 0.1-0.5 recommended, group 16 for
math; its baselines are single-use GRPO and naive K-fold reuse), scaled to the tiny task with 8
prompts x 16 = 128 rollouts per batch, GRPO's default: configs dgg_paper (tau 0.5),
dgg_paper_tau0.1, dgg_paper_tau1.0, reuse_k4_paper (no gate) and grpo_dgg_paper (single use):
    python benchmarks/compare.py --methods grpo_dgg_paper dgg_paper dgg_paper_tau0.1 dgg_paper_tau1.0 reuse_k4_paper

Run it:
    python dgg.py                                      # offline tiny demo: K = 4, tau = 0.5
    python dgg.py --gate_tau inf                       # naive reuse, K = 4 (no gate)
    python dgg.py --num_generations 16 --prompts_per_step 8   # the paper's setting (dgg_paper)
    python dgg.py --model Qwen/Qwen2.5-0.5B-Instruct --task gsm8k --bf16 --gradient_checkpointing \\
        --learning_rate 1e-6 --max_completion_length 512 --prompts_per_step 16 --num_generations 8 \\
        --micro_batch_size 8 --max_steps 500 --eval_every 50
Outputs go to runs/<run_name>/ as for grpo.py, with dgg/* metrics added.
"""

import collections  # === DGG ===
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
    # === DGG
    checks += [(args.gate_window >= 2, "--gate_window must be >= 2 (a z-score needs a spread)"),
               (args.gate_tau >= 0, "--gate_tau must be >= 0 (inf disables the gate)"),  # also rejects nan
               (args.gate_statistic in ("norm", "energy"), f"unknown --gate_statistic {args.gate_statistic!r} (norm, energy)"),
               (args.gate_scope in ("per_pass", "shared"), f"unknown --gate_scope {args.gate_scope!r} (per_pass, shared)")]
    # === end DGG ===
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
    # === DGG: the gate, and the two weights whose relative change shows the divergence
    gate = GradientGate(args.gate_window, args.gate_tau, args.gate_statistic, args.gate_scope)
    totals["dgg/fired_total"], lm_head = 0, gated_weight(model)
    mid_layer = model.model.layers[len(model.model.layers) // 2].mlp.down_proj.weight
    # === end DGG ===
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    # a resumed run gets back its weights, optimizer, totals, every RNG and method_state (what a method carries)
    start_step, totals, method_state = runs.restore(ckpt, model, optimizer, totals)
    del ckpt
    metrics_path, samples_path = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "samples.jsonl")
    # === DGG: the gate's windows travel in the checkpoint (a live reference, saved as it stands), so --resume is exact
    vars(gate).update(method_state.get("dgg_gate", {}))
    method_state["dgg_gate"] = vars(gate)
    # === end DGG ===

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
            lm_before, mid_before = lm_head.detach().clone(), mid_layer.detach().clone()  # === DGG ===
            m["dgg/fired_at_pass"] = 0  # === DGG ===
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
                # === DGG: a spike in the lm_head gradient's same-batch increment drops this update and ends reuse
                g = lm_head.grad.norm().item()
                m[f"dgg/lm_head_grad_norm/pass{it + 1}"] = g
                drop = gate.should_drop(g, it + 1)
                if gate.z is not None:
                    m[f"dgg/z/pass{it + 1}"] = gate.z
                if drop:
                    optimizer.zero_grad(set_to_none=True)  # Adam never sees it: no step, no moment update
                    m["dgg/fired_at_pass"], totals["dgg/fired_total"] = it + 1, totals["dgg/fired_total"] + 1
                    break
                # === end DGG ===
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
        # === DGG
        if grad_norms:
            m.update({"dgg/passes": len(grad_norms),
                      "dgg/rel_change/lm_head": ((lm_head - lm_before).norm() / lm_before.norm()).item(),
                      "dgg/rel_change/mid_layer": ((mid_layer - mid_before).norm() / mid_before.norm()).item()})
        # === end DGG ===
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
