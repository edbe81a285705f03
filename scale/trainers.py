"""The methods as TRL `GRPOTrainer` plug-ins: one subclass per method, importing the scripts' pure functions.

Pinned to TRL 1.16.0 (requirements-scale.txt). Each class overrides two extension points of that
version and nothing else:
  - `_calculate_rewards`: call super and keep the gathered rewards of the step (TRL does not return
    them), so a method can select on rewards, not only on advantages;
  - `_generate_and_score_completions`: call super, then select rows of (or mask) the returned dict
    (prompt/completion ids and masks, advantages, old/ref/sampling log-probs, vLLM ratios) and
    recount `num_items_in_batch`, the token count TRL's "dapo" loss divides by.
The loss itself stays TRL's `_compute_loss` (tests/test_scale.py checks it equals grpo.py's).

Two ways a method changes the update (the table in scale/README.md):
  drops rows  the kept rows are the only ones TRL trains on: real savings in the update's forward
              and backward. TRL splits the generation batch into `steps_per_generation` equal chunks
              and every process must run the same number of forward/backward calls (DDP, DeepSpeed
              and FSDP hang or crash otherwise), so the kept count must be equal on every process and
              a multiple of steps_per_generation. PODS, CPPO and D3S (sample level) guarantee that by
              construction (fixed counts per process); `_keep_rows` checks it every step and fails with
              a clear error instead of hanging.
  masks       every row stays; the method changes advantages or the loss mask: the loss is exact,
              nothing is saved. DPPO (random inclusion: the kept count is random per process) and
              D3S's token level (the tokens to drop are inside rows; TRL's `tool_mask` is the loss-only
              mask that leaves attention alone).
What TRL 1.16 computes before the rewards exist cannot be saved by a plug-in: generation of course,
and the old/reference log-prob passes (`_generate_and_score_completions` runs them before
`_calculate_rewards`), so PODS and CPPO save the training forward/backward only, not those passes.

Selection is per process ("local batch"), as CPPO's and PODS's official multi-GPU code prune per
device. PODS keeps whole groups per process (the launcher arranges prompts_per_step / processes
groups on each); TRL's own advantages come from the gathered rewards, so CPPO, D3S and DPPO are
exact for groups that span processes too.

Not here, and why (see scale/README.md): GVM-RAFT (per-prompt sample budgets: TRL generates a fixed
num_generations for every prompt) and DGG (a gate between backward and optimizer.step: a
Trainer-level hook, not a GRPOTrainer one); DPPO's prompt level (needs a sampler with history) and
its packing.
"""

import torch
from trl import GRPOTrainer

import cppo
import d3s
import dppo
import pods

# Tensors of TRL 1.16's `_generate_and_score_completions` output that have one row per completion.
ROW_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "old_per_token_logps",
            "ref_per_token_logps", "sampling_per_token_logps", "importance_sampling_ratio", "tool_mask",
            "token_type_ids", "mm_token_type_ids")
SCALAR_KEYS = ("num_items_in_batch",)


class SelectingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that hands each training generation batch, with this process's rewards, to `select`.

    Evaluation batches (model in eval mode) are left as TRL makes them."""

    method = "grpo"

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._gathered_rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._gathered_rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return out
        unknown = sorted(set(out) - set(ROW_KEYS) - set(SCALAR_KEYS))
        if unknown:  # a newer TRL, or image inputs: selecting rows would misalign these, so refuse
            raise ValueError(f"{type(self).__name__}: TRL returned {unknown}, which this plug-in cannot select "
                             f"rows of (written for TRL 1.16.0, text-only)")
        rows = out["completion_ids"].size(0)
        # The weighted reward sum, as TRL's "sum_then_normalize"; a completion no function could score counts 0,
        # as in common.tasks.score_completions.
        rewards = (self._gathered_rewards_per_func * self.reward_weights.to(self.accelerator.device)).nansum(1)
        start = self.accelerator.process_index * rows
        return self.select(out, rewards[start:start + rows], rewards)

    def select(self, out: dict, rewards: torch.Tensor, all_rewards: torch.Tensor) -> dict:
        """Override: `rewards` are this process's rows of `out`, `all_rewards` every process's, in order."""
        return out

    # ------------------------------------------------------------------ helpers for the methods
    def local_rows(self) -> int:
        """Completions each process generates per generation batch."""
        return self.args.per_device_train_batch_size * self.args.steps_per_generation

    def _keep_rows(self, out: dict, kept: torch.Tensor) -> dict:
        """Keep the rows `kept` (ascending indices) of every per-completion tensor, then recount the tokens."""
        device = self.accelerator.device
        counts = self.accelerator.gather(torch.tensor([kept.numel()], device=device))
        if bool((counts != counts[0]).any()):
            raise RuntimeError(f"{self.method}: kept counts differ across processes {counts.tolist()}; training "
                               f"would hang, so the plug-in stops here")
        if kept.numel() % self.args.steps_per_generation or kept.numel() == 0:
            raise RuntimeError(f"{self.method}: {kept.numel()} kept rows cannot be split into steps_per_generation = "
                               f"{self.args.steps_per_generation} equal chunks (TRL would silently drop the remainder)")
        kept = kept.to(device)
        for key in ROW_KEYS:
            if out.get(key) is not None:
                out[key] = out[key][kept]
        return self._recount(out)

    def _recount(self, out: dict) -> dict:
        """num_items_in_batch = the loss-mask tokens of the whole generation batch, over all processes."""
        mask = out["completion_mask"] if out.get("tool_mask") is None else out["completion_mask"] * out["tool_mask"]
        out["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        return out

    def _log_mean(self, name: str, values: torch.Tensor):
        """Log the mean of `values` over every process (each process calls this, in the same order)."""
        values = values.detach().float().flatten()
        local = torch.stack([values.sum(), torch.tensor(float(values.numel()), device=values.device)])
        total, count = self.accelerator.gather(local.to(self.accelerator.device)).view(-1, 2).sum(0).tolist()
        self._metrics["train"][name].append(total / count if count else 0.0)

    def _log(self, name: str, value: float):
        self._metrics["train"][name].append(float(value))


# === PODS: drops rows (m of n per group, advantages recomputed on the kept m)
class PODSTrainer(SelectingGRPOTrainer):
    """PODS (arXiv 2504.13818) = generate n = num_generations per prompt, train on the m = num_keep whose
    rewards have the largest variance (`pods.select_max_variance`), with GRPO advantages recomputed on the
    kept m (`pods.group_advantages`, over the gathered kept rewards so scale_rewards="batch" sees the whole
    step). Needs whole groups on each process: per_device_train_batch_size x steps_per_generation a
    multiple of n; each process then trains on exactly m per prompt."""

    method = "pods"

    def __init__(self, *args, num_keep: int = pods.Args.num_keep, rule: str = pods.Args.rule, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_keep, self.rule = num_keep, rule
        n, rows, spg = self.num_generations, self.local_rows(), self.args.steps_per_generation
        if not 2 <= num_keep <= n:
            raise ValueError(f"pods: num_keep must be in [2, num_generations = {n}], got {num_keep}")
        if rows % n or (rows // n * num_keep) % spg:
            raise ValueError(f"pods: each process must hold whole groups and keep a multiple of steps_per_generation: "
                             f"{rows} rows per process, n = {n}, m = {num_keep}, steps_per_generation = {spg}")
        if self.args.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("pods: only multi_objective_aggregation='sum_then_normalize' (advantages are recomputed)")

    def select(self, out, rewards, all_rewards):
        n, m = self.num_generations, self.num_keep
        groups = rewards.view(-1, n).cpu()
        kept = torch.cat([g * n + pods.select_max_variance(groups[g], m, self.rule) for g in range(groups.size(0))])
        out = self._keep_rows(out, kept)
        # Equal counts on every process, so the gather keeps groups whole and in process order.
        all_kept = self.accelerator.gather(rewards[kept.to(rewards.device)])
        advantages = pods.group_advantages(all_kept, m, self.scale_rewards).view(self.accelerator.num_processes, -1)
        out["advantages"] = advantages[self.accelerator.process_index].to(out["completion_ids"].device)
        self._log("pods/kept_fraction", m / n)
        self._log("pods/reward_var_before", all_rewards.view(-1, n).var(1).mean().item())
        self._log("pods/reward_var_after", all_kept.view(-1, m).var(1).mean().item())
        return out
# === end PODS ===


# === CPPO: drops rows (the floor(N P) smallest |A| of each process's N completions)
class CPPOTrainer(SelectingGRPOTrainer):
    """CPPO (arXiv 2503.22342) = keep the completions with the largest |A| (`cppo.prune_completions`),
    advantages as TRL computed them on the full groups (never re-normalised). scope "global" prunes over
    the process's local batch, as the official code prunes per device; "group" keeps G - floor(G P) of
    each group (whole groups on each process needed). N is the same on every process, so is the kept count.
    Allocation (B / (1 - P) prompts per step) is the launcher's choice of batch sizes, not code here."""

    method = "cppo"

    def __init__(self, *args, prune_rate: float = cppo.Args.prune_rate, scope: str = cppo.Args.scope, **kwargs):
        super().__init__(*args, **kwargs)
        self.prune_rate, self.scope = prune_rate, scope
        rows, G, spg = self.local_rows(), self.num_generations, self.args.steps_per_generation
        if not 0 <= prune_rate < 1 or scope not in ("global", "group"):
            raise ValueError(f"cppo: prune_rate must be in [0, 1) and scope global or group, got {prune_rate}, {scope}")
        if scope == "group" and rows % G:
            raise ValueError(f"cppo: scope group needs whole groups on each process ({rows} rows, G = {G})")
        self.num_kept = (rows - int(rows * prune_rate + 1e-9) if scope == "global"
                         else rows // G * (G - int(G * prune_rate + 1e-9)))
        if self.num_kept % spg:
            raise ValueError(f"cppo: {self.num_kept} kept rows per process is not a multiple of "
                             f"steps_per_generation = {spg}")

    def select(self, out, rewards, all_rewards):
        advantages = out["advantages"]
        kept = cppo.prune_completions(advantages, self.prune_rate, None if self.scope == "global" else self.num_generations)
        dropped = torch.ones(advantages.numel(), dtype=torch.bool).index_fill_(0, kept, False).to(advantages.device)
        self._log("cppo/kept_fraction", kept.numel() / advantages.numel())
        self._log_mean("cppo/abs_adv_kept", advantages[kept.to(advantages.device)].abs())
        self._log_mean("cppo/abs_adv_pruned", advantages[dropped].abs())
        self._log("cppo/prompts_per_step", all_rewards.numel() // self.num_generations)
        return self._keep_rows(out, kept)
# === end CPPO ===


# === D3S: sample level drops rows (max Var(A) over the local batch); token level masks (tool_mask)
class D3STrainer(SelectingGRPOTrainer):
    """D3S (arXiv 2509.22115). Sample level: keep the rows whose advantages have the largest variance
    (`d3s.select_rollouts`; scope "cross" over the local batch, "intra" per group), the cross count
    rounded down to a multiple of steps_per_generation so every process keeps the same number. Token
    level: the top token_ratio of the kept tokens by |A| x entropy (`d3s.token_keep_mask`, over the local
    batch), applied as TRL's loss-only `tool_mask`; the entropies cost one no-grad forward of the kept rows
    (as in d3s.py). Both ratios follow `d3s.keep_schedule` in progress = global_step / (max_steps - 1)."""

    method = "d3s"

    def __init__(self, *args, scope: str = d3s.Args.scope, schedule: str = d3s.Args.schedule,
                 sample_ratio_start: float = d3s.Args.sample_ratio_start, sample_ratio_end: float = d3s.Args.sample_ratio_end,
                 token_ratio_start: float = d3s.Args.token_ratio_start, token_ratio_end: float = d3s.Args.token_ratio_end,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.scope, self.schedule = scope, schedule
        self.sample_ratio, self.token_ratio = (sample_ratio_start, sample_ratio_end), (token_ratio_start, token_ratio_end)
        rows, G, spg = self.local_rows(), self.num_generations, self.args.steps_per_generation
        if scope not in ("cross", "intra") or not all(0 < r <= 1 for r in self.sample_ratio + self.token_ratio):
            raise ValueError("d3s: scope must be cross or intra and every ratio in (0, 1]")
        if scope == "intra" and (rows % G or (rows // G) % spg):
            raise ValueError(f"d3s: scope intra needs whole groups on each process, a multiple of "
                             f"steps_per_generation = {spg} of them ({rows} rows, G = {G})")

    def select(self, out, rewards, all_rewards):
        progress = self.state.global_step / max(self.args.max_steps - 1, 1)
        sample_ratio = d3s.keep_schedule(progress, *self.sample_ratio, self.schedule)
        token_ratio = d3s.keep_schedule(progress, *self.token_ratio, self.schedule)
        advantages, rows, spg = out["advantages"], out["advantages"].numel(), self.args.steps_per_generation
        if self.scope == "cross":  # the ratio that keeps the nearest multiple of spg below (at least 2 rows)
            num = max(2, int(sample_ratio * rows + 1e-9))
            sample_ratio = max(num - num % spg, -(-2 // spg) * spg) / rows
        kept = d3s.select_rollouts(advantages, self.num_generations, sample_ratio, self.scope)
        out = self._keep_rows(out, kept)
        self._log("d3s/sample_ratio", sample_ratio)
        self._log("d3s/token_ratio", token_ratio)
        self._log("d3s/samples_kept", kept.numel() * self.accelerator.num_processes)
        if token_ratio < 1:
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
            attention = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
            with torch.no_grad():
                _, entropy, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, attention, out["completion_ids"].size(1),
                    batch_size=self.args.per_device_train_batch_size, compute_entropy=True)
            loss_mask = out["completion_mask"] if out.get("tool_mask") is None else out["completion_mask"] * out["tool_mask"]
            keep = d3s.token_keep_mask(out["advantages"], entropy, loss_mask, token_ratio)
            out["tool_mask"] = keep.to(out["completion_mask"].dtype)  # loss-only: attention keeps every token
            out = self._recount(out)
        self._log("d3s/tokens_kept", out["num_items_in_batch"].item())
        return out
# === end D3S ===


# === DPPO: masks (completion-level importance weights scale the advantages; every row stays)
class DPPOTrainer(SelectingGRPOTrainer):
    """DPPO (arXiv 2603.04135), completion level: `dppo.completion_weights` draws, in the low-|A| pool of
    each group (completion_scope "group") or of the local batch ("step"), which completions survive
    (weight 1/(1 - q)) and which are pruned (weight 0). The number pruned is random per process, so rows
    cannot be dropped; the weights multiply the advantages instead. For beta = 0 that is exactly dppo.py's
    weighted loss (-min(rho wA, clip(rho) wA) = w times the clipped term for w >= 0), and TRL's normalisers
    count every row and token of the batch, which is dppo.py's draw-independent normaliser (B G for
    "grpo", all generated tokens for "dapo"). Exact loss, no savings. beta > 0 is refused: the KL term
    would not carry the weights."""

    method = "dppo"

    def __init__(self, *args, completion_prune_rate: float = dppo.Args.completion_prune_rate,
                 completion_pool: float = dppo.Args.completion_pool, completion_scope: str = dppo.Args.completion_scope,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.rate, self.pool, self.completion_scope = completion_prune_rate, completion_pool, completion_scope
        if not 0 <= self.rate < 1 or not 0 <= self.pool <= 1 or (self.rate and self.rate >= self.pool):
            raise ValueError("dppo: completion_prune_rate must be in [0, completion_pool), completion_pool in [0, 1]")
        if completion_scope not in ("group", "step") or (completion_scope == "group" and self.local_rows() % self.num_generations):
            raise ValueError("dppo: completion_scope must be group (whole groups on each process) or step")
        if self.beta != 0:
            raise ValueError("dppo: beta > 0 is not supported by the plug-in (the KL term would stay unweighted)")

    def select(self, out, rewards, all_rewards):
        # A generator per (seed, step, process): reproducible, and independent of what generation consumed.
        seed = (self.args.seed * 1_000_003 + self.state.global_step) * 1009 + self.accelerator.process_index
        advantages = out["advantages"]
        size = self.num_generations if self.completion_scope == "group" else advantages.numel()
        weights = dppo.completion_weights(advantages, self.rate, size, pool_fraction=self.pool,
                                          generator=torch.Generator().manual_seed(seed)).to(advantages.device)
        out["advantages"] = advantages * weights
        self._log_mean("dppo/completions_kept", (weights > 0).float())
        return out
# === end DPPO ===


TRAINERS = {"grpo": GRPOTrainer, "pods": PODSTrainer, "cppo": CPPOTrainer, "d3s": D3STrainer, "dppo": DPPOTrainer}
