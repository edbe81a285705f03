"""The methods as TRL `GRPOTrainer` plug-ins: a config and a trainer per method, on the scripts' own functions.

Written against TRL 1.16.0 (requirements-scale.txt pins it and CI tests it). Each method is TRL's way of
hosting a GRPO variant: `<Name>Config(GRPOConfig)` carries the method's fields with the script's
defaults, `<Name>Trainer(GRPOTrainer)` reads them. The selection rules are the scripts' pure functions
(`pods.select_max_variance`, `cppo.prune_completions`, `d3s.select_rollouts`, `d3s.token_keep_mask`,
`dppo.completion_weights`, `dgg.GradientGate`), imported, never copied.

PODS, CPPO, D3S and DPPO choose which completions to train on. `SelectingGRPOTrainer` replaces
`GRPOTrainer._generate_and_score_completions` for training batches (text, single turn) so that the
choice is made where the scripts make it, before anything else is paid for:

    generate (TRL's `_generate`: transformers or vLLM)            every row, on each process
    rewards and advantages (TRL's rules)                           gathered: the whole step, every process
    select (the method)                                            over the whole step, identically everywhere
    rebalance: the kept rows move so every process holds R rows    R = a multiple of steps_per_generation;
                                                                   short processes get padding rows (loss 0)
    pad each process's rows to its longest kept prompt/completion
    old, reference and vLLM-correction log-prob passes             kept rows only, in trained micro-batches
    the update: TRL's `_compute_loss`, normalised as the script normalises

So the kept set does not depend on the number of processes (the scripts' rule over the whole step, as
verl's filter-then-balance and OpenRLHF's dynamic filtering do), and no process waits on another
with a different number of micro-steps. The official CPPO code prunes per device; `CPPOConfig(scope=
"per_device")` keeps that rule, named as such.

Normalisers. A padding row carries a zero loss mask (TRL's loss-only `tool_mask`) and advantage 0.
The token-mean losses ("dapo", "cispo", "vespo") divide by `num_items_in_batch`, which the plug-in
sets to the script's token count; the row-mean losses ("grpo", "dr_grpo", "sapo", "luspo") divide by
the rows of each micro-batch, padding included, so `loss_scale` (rows trained / the script's row
count) restores the script's normaliser. "bnpo" is TRL's per-micro-batch token mean, as in TRL.

Evaluation batches (`model.eval()`) are left to TRL. Not supported, refused with one line: tools,
environments, `rollout_func` and image inputs (the rows would have to carry them through the
rebalancing). DGG is no selection: `DGGTrainer` gates the optimizer step (see its docstring).
GVM-RAFT needs per-prompt sample budgets, which `GRPOTrainer` (a fixed num_generations) cannot express.
"""

import json
import os
from collections import deque
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, nanstd, pad, use_adapter

import cppo
import d3s
import dgg
import dppo
import pods

ROW_MEAN_LOSSES = ("grpo", "dr_grpo", "sapo", "luspo")  # TRL divides these by the rows of each micro-batch
TOKEN_MEAN_LOSSES = ("dapo", "cispo", "vespo")  # ... and these by num_items_in_batch


def _check(ok: bool, message: str):
    if not ok:
        raise ValueError(message)


def _method_args(trainer, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """GRPOTrainer's arguments with `args` (its third) a config of the trainer's method: for args=None, the method's
    config with its defaults (GRPOTrainer would build a plain GRPOConfig, without the method's fields)."""
    given = args[2] if len(args) > 2 else kwargs.get("args")
    if given is None:
        model = args[0] if args else kwargs.get("model")
        name = (model if isinstance(model, str) else get_config_model_id(model.config)).split("/")[-1]
        given = trainer.config_class(output_dir=f"{name}-{trainer.method.upper()}")
        if len(args) > 2:
            args = (*args[:2], given, *args[3:])
        else:
            kwargs = {**kwargs, "args": given}
    _check(isinstance(given, trainer.config_class), f"{trainer.method}: args must be a {trainer.config_class.__name__} "
                                                    f"(it carries the method's settings), got {type(given).__name__}")
    return args, kwargs


# ---------------------------------------------------------------------------------------------
# Configs: GRPOConfig plus the method's fields, with the method script's defaults
# ---------------------------------------------------------------------------------------------
@dataclass
class PODSConfig(GRPOConfig):
    """PODS: generate n = `num_generations` (pods.py's 16) per prompt, train on m = `num_keep` (8)."""

    num_generations: int | None = field(default=pods.Args.num_generations, metadata={"help": "n: completions generated per prompt"})
    # GRPOConfig's default of 8 rows per device would not hold one group of n = 16
    per_device_train_batch_size: int = field(default=pods.Args.num_generations, metadata={"help": "rows generated per micro-step"})
    num_keep: int = field(default=pods.Args.num_keep, metadata={"help": "m: completions per prompt kept for the update"})
    rule: str = field(default=pods.Args.rule, metadata={"help": "max_variance, max_reward or random"})

    def __post_init__(self):
        super().__post_init__()
        _check(2 <= self.num_keep <= self.num_generations, f"pods: num_keep must be in [2, num_generations = "
                                                           f"{self.num_generations}], got {self.num_keep}")
        _check(self.rule in ("max_variance", "max_reward", "random"), f"pods: unknown rule {self.rule!r}")


@dataclass
class CPPOConfig(GRPOConfig):
    """CPPO: drop the fraction `prune_rate` of the completions with the smallest |A|."""

    prune_rate: float = field(default=cppo.Args.prune_rate, metadata={"help": "P: fraction of the completions dropped"})
    scope: str = field(default=cppo.Args.scope, metadata={
        "help": "global: over the whole step (cppo.py); group: per group; per_device: over each process's rows, "
                "as the official multi-GPU code (the kept set then depends on the number of processes)"})

    def __post_init__(self):
        super().__post_init__()
        _check(0 <= self.prune_rate < 1, f"cppo: prune_rate must be in [0, 1), got {self.prune_rate}")
        _check(self.scope in ("global", "group", "per_device"), f"cppo: unknown scope {self.scope!r} (global, group, per_device)")


@dataclass
class D3SConfig(GRPOConfig):
    """D3S: the max-Var(A) rollouts of the step, then the top tokens by |A| x entropy, both on a schedule."""

    scope: str = field(default=d3s.Args.scope, metadata={"help": "cross: over the whole step; intra: per group"})
    schedule: str = field(default=d3s.Args.schedule, metadata={"help": "linear or none"})
    sample_ratio_start: float = field(default=d3s.Args.sample_ratio_start, metadata={"help": "rollouts kept at the start"})
    sample_ratio_end: float = field(default=d3s.Args.sample_ratio_end, metadata={"help": "... and at the end"})
    token_ratio_start: float = field(default=d3s.Args.token_ratio_start, metadata={"help": "tokens kept at the start"})
    token_ratio_end: float = field(default=d3s.Args.token_ratio_end, metadata={"help": "... and at the end"})

    def __post_init__(self):
        super().__post_init__()
        _check(self.scope in ("cross", "intra"), f"d3s: unknown scope {self.scope!r} (cross, intra)")
        _check(self.schedule in ("linear", "none"), f"d3s: unknown schedule {self.schedule!r} (linear, none)")
        ratios = (self.sample_ratio_start, self.sample_ratio_end, self.token_ratio_start, self.token_ratio_end)
        _check(all(0 < r <= 1 for r in ratios), "d3s: the sample and token ratios must be in (0, 1]")


@dataclass
class DPPOConfig(GRPOConfig):
    """DPPO, completion level: prune low-|A| completions at random, reweight the survivors (unbiased)."""

    loss_type: str = field(default=dppo.Args.loss_type, metadata={"help": "dppo.py's default: grpo"})
    completion_prune_rate: float = field(default=dppo.Args.completion_prune_rate, metadata={"help": "r_o"})
    completion_pool: float = field(default=dppo.Args.completion_pool, metadata={"help": "fraction of the low-|A| pool"})
    completion_scope: str = field(default=dppo.Args.completion_scope, metadata={"help": "group or step"})

    def __post_init__(self):
        super().__post_init__()
        rate, pool = self.completion_prune_rate, self.completion_pool
        _check(0 <= rate < 1 and 0 <= pool <= 1 and (rate == 0 or rate < pool),
               "dppo: completion_prune_rate must be in [0, completion_pool), completion_pool in [0, 1]")
        _check(self.completion_scope in ("group", "step"), f"dppo: unknown completion_scope {self.completion_scope!r}")


@dataclass
class DGGConfig(GRPOConfig):
    """DGG: K = num_iterations passes over each batch (dgg.py's 4), gated by the lm_head gradient."""

    num_iterations: int = field(default=dgg.Args.num_iterations, metadata={"help": "K: passes over each generation batch"})
    gate_window: int = field(default=dgg.Args.gate_window, metadata={"help": "W: increments the z-score is taken over"})
    gate_tau: float = field(default=dgg.Args.gate_tau, metadata={"help": "fire when z > tau (inf: never)"})
    gate_statistic: str = field(default=dgg.Args.gate_statistic, metadata={"help": "norm or energy (norm squared)"})
    gate_scope: str = field(default=dgg.Args.gate_scope, metadata={"help": "per_pass or shared windows"})

    def __post_init__(self):
        super().__post_init__()
        _check(self.gate_window >= 2, "dgg: gate_window must be >= 2 (a z-score needs a spread)")
        _check(self.gate_tau >= 0, "dgg: gate_tau must be >= 0")
        _check(self.gate_statistic in ("norm", "energy"), f"dgg: unknown gate_statistic {self.gate_statistic!r}")
        _check(self.gate_scope in ("per_pass", "shared"), f"dgg: unknown gate_scope {self.gate_scope!r}")
        _check(self.max_grad_norm > 0, "dgg: max_grad_norm must be > 0 (the gate runs where the gradient is clipped)")
        _check(self.steps_per_generation == self.gradient_accumulation_steps,
               "dgg: steps_per_generation must equal gradient_accumulation_steps (a gated pass is one optimizer "
               "step over the whole generation batch)")


# ---------------------------------------------------------------------------------------------
# The selecting trainer
# ---------------------------------------------------------------------------------------------
@dataclass
class Step:
    """What a method sees: every row of the step (all processes, in TRL's gathered order, groups contiguous)."""

    rewards: torch.Tensor  # (N,) weighted reward sum; NaN where no reward function could score the row
    rewards_per_func: torch.Tensor  # (N, F)
    advantages: torch.Tensor  # (N,) TRL's advantages on the full groups
    loss_tokens: torch.Tensor  # (N,) completion tokens the loss would see (truncation masking applied)
    num_processes: int


@dataclass
class Selection:
    kept: torch.Tensor  # ascending indices into the step's rows
    advantages: torch.Tensor  # one per kept row
    num_rows: float | None = None  # the row-mean losses' normaliser; None: the kept rows
    num_tokens: float | None = None  # the token-mean losses' normaliser; None: the kept rows' loss tokens
    # A weight on each kept row's whole token loss, KL term included (DPPO's survivors); None: 1. Put the weight on
    # the advantages too: the policy term is linear in A, so that part is exact there; the KL term gets the rest.
    row_weights: torch.Tensor | None = None


class SelectingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that lets `select` choose the trained rows over the whole step, before the no-grad passes."""

    method = "grpo"
    config_class = GRPOConfig

    def __init__(self, *args, **kwargs):
        for name in ("tools", "environment_factory", "rollout_func"):
            if kwargs.get(name):
                raise ValueError(f"{self.method}: {name} is not supported by the plug-in (text, single-turn rollouts)")
        args, kwargs = _method_args(self, args, kwargs)
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ the method's hooks
    def select(self, step: Step) -> Selection:
        """Override. The default keeps every row: plain GRPO."""
        return Selection(torch.arange(step.advantages.numel()), step.advantages)

    def after_passes(self, out: dict, layout: dict) -> dict:
        """Override to change the loss mask of the kept rows once they are in place (D3S's tokens)."""
        return out

    # ------------------------------------------------------------------ the pipeline
    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        if "image" in inputs[0] or "images" in inputs[0]:
            raise ValueError(f"{self.method}: image inputs are not supported by the plug-in (text only)")
        device, P = self.accelerator.device, self.accelerator.num_processes
        prompts = [x["prompt"] for x in inputs]
        prompt_ids, completion_ids, _, completions, sampling_logps, extra, _, _ = self._generate(prompts)
        if extra:
            raise ValueError(f"{self.method}: extra rollout fields {sorted(extra)} are not supported by the plug-in")
        rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids)  # every process's rows
        advantages, rewards, std_zero = self.trl_advantages(rewards_per_func, self.num_generations)
        eos_and_pad = {*self.eos_token_ids, self._tokenizer.pad_token_id}
        truncated = [ids[-1] not in eos_and_pad if len(ids) else True for ids in completion_ids]
        lengths = [0 if (t and self.mask_truncated_completions) else len(ids) for ids, t in zip(completion_ids, truncated)]
        lengths = torch.tensor(gather_object(lengths) if P > 1 else lengths, dtype=torch.float32)
        step = Step(rewards, rewards_per_func, advantages, lengths, P)
        self._log_rewards(rewards_per_func, rewards, advantages, std_zero, prompts, completions)

        selection = self.select(step)
        kept = self._checked(selection, advantages.numel())
        layout = self.rebalance(kept.numel())
        start, count = layout["start"], layout["count"]
        mine = kept[start:start + count].tolist()
        pads = layout["rows"] - count
        # Every process's token ids travel as lists (what TRL's generation returns); each keeps its share.
        rows = lambda values: gather_object(values) if P > 1 else values  # noqa: E731
        all_prompt_ids, all_completion_ids = rows(prompt_ids), rows(completion_ids)
        all_truncated = rows(truncated)
        all_sampling = rows(sampling_logps) if sampling_logps is not None else None
        filler = mine[-1] if mine else int(kept[0])  # a padding row repeats a kept row under a zero loss mask
        source = mine + [filler] * pads
        out = self._tensors([all_prompt_ids[i] for i in source], [all_completion_ids[i] for i in source],
                            None if all_sampling is None else [all_sampling[i] for i in source])
        if self.mask_truncated_completions:
            out["completion_mask"] *= (~torch.tensor([all_truncated[i] for i in source], device=device)).unsqueeze(1).int()
        is_pad = torch.arange(len(source), device=device) >= count
        if pads:
            out["tool_mask"] = (~is_pad).int().unsqueeze(1).expand_as(out["completion_mask"]).contiguous()
        local_adv = selection.advantages.to(device)[start:start + count]
        out["advantages"] = torch.cat([local_adv, local_adv.new_zeros(pads)])
        if selection.row_weights is not None:
            local_w = selection.row_weights.to(device, torch.float32)[start:start + count]
            out["row_weights"] = torch.cat([local_w, local_w.new_zeros(pads)])
        self._no_grad_passes(out)
        out = self.after_passes(out, {**layout, "is_pad": is_pad})

        loss_mask = out["completion_mask"] * out.get("tool_mask", 1)
        num_items = self.accelerator.gather(loss_mask.sum()).sum()
        if selection.num_tokens is not None:
            num_items = torch.tensor(float(selection.num_tokens), device=device)
        out["num_items_in_batch"] = num_items
        num_rows = kept.numel() if selection.num_rows is None else selection.num_rows
        # The row-mean losses divide by the rows of each micro-batch (padding included); this restores num_rows.
        out["loss_scale"] = torch.tensor(P * layout["rows"] / max(num_rows, 1) if self.loss_type in ROW_MEAN_LOSSES
                                         else 1.0, device=device)
        self._log("scale/rows_generated", advantages.numel())
        self._log("scale/rows_trained", kept.numel())
        self._log("scale/padding_rows", P * layout["rows"] - kept.numel())
        return out

    def trl_advantages(self, rewards_per_func: torch.Tensor, group_size: int):
        """TRL 1.16's advantages for groups of `group_size` consecutive rows (both multi_objective_aggregation
        rules, scale_rewards, unscorable rows NaN in the statistics and 0 in the result). Returns (advantages,
        weighted reward sum, whether each row's std is 0)."""
        weights = self.reward_weights.to(rewards_per_func.device)
        unscorable = torch.isnan(rewards_per_func).all(1)
        summed = (rewards_per_func * weights).nansum(1).masked_fill(unscorable, float("nan"))
        if self.multi_objective_aggregation == "sum_then_normalize":
            grouped = summed.view(-1, group_size)
            centred = (grouped - torch.nanmean(grouped, 1, keepdim=True)).view(-1)
            std = (nanstd(summed).expand_as(summed) if self.scale_rewards == "batch"
                   else nanstd(grouped, dim=1).repeat_interleave(group_size))
        else:  # normalize_then_sum: each function normalised per group, then the weighted sum normalised per step
            grouped = rewards_per_func.view(-1, group_size, rewards_per_func.size(1))
            scaled = (grouped - torch.nanmean(grouped, 1, keepdim=True)) / (nanstd(grouped, dim=1, keepdim=True) + 1e-4)
            mixed = (scaled.view(-1, weights.numel()) * weights).nansum(1).masked_fill(unscorable, float("nan"))
            centred, std = mixed - torch.nanmean(mixed), nanstd(mixed).expand_as(mixed)
        advantages = centred if self.scale_rewards == "none" else centred / (std + 1e-4)
        return torch.nan_to_num(advantages, nan=0.0), summed, torch.isclose(std, torch.zeros_like(std))

    def rebalance(self, num_kept: int) -> dict:
        """Where the kept rows go: process p trains on kept[start : start + count] (the kept order, in contiguous
        blocks whose sizes differ by at most one) plus rows - count padding rows, with `rows` the same on every
        process and a multiple of steps_per_generation (TRL splits each process's rows into that many chunks)."""
        P, spg, p = self.accelerator.num_processes, self.args.steps_per_generation, self.accelerator.process_index
        rows = spg * -(-num_kept // (P * spg))
        base, extra = divmod(num_kept, P)
        return {"rows": rows, "count": base + (p < extra), "start": p * base + min(p, extra)}

    # ------------------------------------------------------------------ pieces
    def _checked(self, selection: Selection, num_rows: int) -> torch.Tensor:
        kept = selection.kept.detach().cpu().long().flatten()
        if kept.numel() == 0:
            raise RuntimeError(f"{self.method}: the selection kept no rows; every step must train on at least one")
        if bool((kept[1:] <= kept[:-1]).any()) or kept[0] < 0 or kept[-1] >= num_rows:
            raise RuntimeError(f"{self.method}: the selection must be ascending row indices in [0, {num_rows}), "
                               f"without repeats")
        if selection.advantages.numel() != kept.numel():
            raise RuntimeError(f"{self.method}: {selection.advantages.numel()} advantages for {kept.numel()} kept rows")
        return kept

    def _tensors(self, prompt_ids, completion_ids, sampling_logps) -> dict:
        """Padded tensors of these rows: prompts to the longest kept prompt (left), completions to the longest
        kept completion (right); nothing of the dropped rows' lengths is left."""
        device, pad_id, mult = self.accelerator.device, self._tokenizer.pad_token_id, self.pad_to_multiple_of
        as_tensors = lambda rows, dtype=torch.long: [torch.tensor(r, dtype=dtype) for r in rows]  # noqa: E731
        out = {"prompt_ids": pad(as_tensors(prompt_ids), pad_id, "left", mult),
               "prompt_mask": pad([torch.ones(len(r), dtype=torch.long) for r in prompt_ids], 0, "left", mult),
               "completion_ids": pad(as_tensors(completion_ids), pad_id, "right", mult),
               "completion_mask": pad([torch.ones(len(r), dtype=torch.long) for r in completion_ids], 0, "right", mult)}
        if sampling_logps is not None:  # vLLM's own log-probs; None (a token it could not score) becomes NaN
            rows = [[float("nan") if x is None else x for x in r] for r in sampling_logps]
            out["sampling_per_token_logps"] = pad(as_tensors(rows, torch.float32), 0.0, "right", mult)
        return {k: v.to(device) for k, v in out.items()}

    def _no_grad_passes(self, out: dict):
        """Old-policy, vLLM-correction and reference log-probs, as TRL computes them, on the kept rows only and
        in micro-batches of the trained size."""
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        attention = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
        width, chunk = out["completion_ids"].size(1), max(1, ids.size(0) // self.args.steps_per_generation)
        correction = self.use_vllm and self.vllm_importance_sampling_correction
        needs_old = self.args.gradient_accumulation_steps % (self.args.steps_per_generation * self.num_iterations) != 0

        def logps(model):
            return self._get_per_token_logps_and_entropies(model, ids, attention, width, batch_size=chunk)[0]

        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if needs_old or correction:
                out["old_per_token_logps"] = logps(self.model)
            if correction:
                out["importance_sampling_ratio"] = self._sampling_correction(
                    out["old_per_token_logps"], out["sampling_per_token_logps"],
                    out["completion_mask"] * out.get("tool_mask", 1))
            if self.beta != 0.0:
                if self.ref_model is not None:
                    out["ref_per_token_logps"] = logps(self.ref_model)
                else:  # PEFT: the reference is the base model (adapters off), or an adapter named "ref"
                    model = self.accelerator.unwrap_model(self.model)
                    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
                        out["ref_per_token_logps"] = logps(self.model)

    def _sampling_correction(self, old, sampling, mask):
        """TRL's truncated / masked importance ratio between the trained policy and vLLM's sampler."""
        diff = torch.nan_to_num((old - sampling) * mask, nan=0.0)  # a token vLLM could not score: ratio 1
        mode = self.vllm_importance_sampling_mode
        ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
        low, high = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if mode.endswith("truncate"):
            return torch.clamp(ratio, min=low, max=high)
        outside = torch.zeros_like(ratio, dtype=torch.bool)
        if low is not None:
            outside |= ratio < low
        if high is not None:
            outside |= ratio > high
        return ratio.masked_fill(outside, 0.0)

    def _compute_loss(self, model, inputs):
        weights = inputs.get("row_weights")
        if weights is None or self.beta == 0.0:
            loss = super()._compute_loss(model, inputs)
        else:
            loss = self._loss_with_weighted_kl(model, inputs, weights)
        scale = inputs.get("loss_scale")
        return loss if scale is None else loss * scale

    def _loss_with_weighted_kl(self, model, inputs, weights):
        """TRL's loss with each row's KL term weighted as its advantage is: TRL adds beta x KL unweighted, so add
        beta (w - 1) KL, on the policy's log-probs of this very forward, aggregated as TRL aggregates the loss."""
        logps = []
        forward = self._get_per_token_logps_and_entropies
        own = self.__dict__.get("_get_per_token_logps_and_entropies")

        def recording(*args, **kwargs):
            result = forward(*args, **kwargs)
            logps.append(result[0])
            return result

        self._get_per_token_logps_and_entropies = recording
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            if own is None:
                del self._get_per_token_logps_and_entropies
            else:
                self._get_per_token_logps_and_entropies = own
        logp, ref = logps[0], inputs["ref_per_token_logps"]
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        kl = torch.exp(ref - logp) - (ref - logp) - 1  # TRL's k3
        if self.args.use_bias_correction_kl:
            old = inputs.get("old_per_token_logps")
            log_ratio = logp - (logp.detach() if old is None else old)
            if self.importance_sampling_level == "sequence":
                log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
            kl = kl * torch.exp(log_ratio)
        return loss + self._aggregate(self.beta * (weights - 1).unsqueeze(1) * kl, mask, inputs)

    def _aggregate(self, per_token: torch.Tensor, mask: torch.Tensor, inputs: dict) -> torch.Tensor:
        """A per-token term reduced as TRL 1.16's `_compute_loss` reduces the training loss of `self.loss_type`."""
        ga = self.current_gradient_accumulation_steps
        total = per_token * mask
        if self.loss_type in ("grpo", "sapo"):
            return (total.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / ga
        if self.loss_type == "bnpo":
            return total.sum() / mask.sum().clamp(min=1.0) / ga
        if self.loss_type == "dr_grpo":
            return total.sum() / (per_token.size(0) * self.max_completion_length) / ga
        if self.loss_type in TOKEN_MEAN_LOSSES:
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            return total.sum() / (normalizer * ga / self.args.steps_per_generation)
        if self.loss_type == "luspo":
            return total.sum(-1).mean() / ga
        raise RuntimeError(f"{self.method}: unknown loss_type {self.loss_type!r}")

    def _log_rewards(self, rewards_per_func, rewards, advantages, std_zero, prompts, completions):
        """The reward metrics TRL logs for a generation batch (the method's own come from `select`)."""
        metrics = self._metrics["train"]
        for i, name in enumerate(self.reward_func_names):
            metrics[f"rewards/{name}/mean"].append(torch.nanmean(rewards_per_func[:, i]).item())
            metrics[f"rewards/{name}/std"].append(nanstd(rewards_per_func[:, i]).item())
        metrics["reward"].append(torch.nanmean(rewards).item())
        metrics["reward_std"].append(nanstd(rewards).item())
        metrics["frac_reward_zero_std"].append(std_zero.float().mean().item())
        for name in sorted(set(gather_object(list(self._pending_metrics)))):  # reward functions' log_metric
            values = self._pending_metrics.get(name, [])
            local = torch.tensor([sum(values), len(values)], dtype=torch.float32, device=self.accelerator.device)
            total, count = self.accelerator.gather(local).view(-1, 2).sum(0).tolist()
            metrics[name].append(total / max(count, 1))
        self._pending_metrics.clear()
        # reward functions' log_extra columns, one value per local row; sorted so every process gathers in one order
        for column in sorted(set(gather_object(list(self._pending_extra_logs)))):
            values = self._pending_extra_logs.get(column, [None] * len(prompts))
            self._logs["extra"][column].extend(gather_object(values))
        self._pending_extra_logs.clear()
        if self.log_completions:
            self._logs["prompt"].extend(gather_object(prompts))
            self._logs["completion"].extend(gather_object(completions))
            for i, name in enumerate(self.reward_func_names):
                self._logs["rewards"][name].extend(rewards_per_func[:, i].tolist())
            self._logs["advantages"].extend(advantages.tolist())

    def _log(self, name: str, value: float):
        self._metrics["train"][name].append(float(value))

    def _seed(self, salt: int) -> int:
        """A seed of (seed, step, salt), the same on every process: random choices over the whole step must agree."""
        return (self.args.seed * 1_000_003 + self.state.global_step) * 1009 + salt


# === PODS: m of n per group by reward variance, advantages recomputed on the kept m
class PODSTrainer(SelectingGRPOTrainer):
    """PODS (arXiv 2504.13818): per prompt, keep the m = num_keep of n = num_generations completions whose
    rewards have the largest variance (`pods.select_max_variance`; a reward no function could give counts 0,
    as in pods.py), and recompute the advantages on the kept groups of m with TRL's rule (grpo.py's
    group_advantages when every row is scored; either multi_objective_aggregation)."""

    method = "pods"
    config_class = PODSConfig

    def select(self, step):
        n, m = self.num_generations, self.args.num_keep
        groups = torch.nan_to_num(step.rewards, nan=0.0).view(-1, n).cpu()
        with torch.random.fork_rng(devices=[]):  # rule "random" draws from torch's RNG: the same on every process
            torch.manual_seed(self._seed(0))
            kept = torch.cat([g * n + pods.select_max_variance(r, m, self.args.rule) for g, r in enumerate(groups)])
        advantages, _, _ = self.trl_advantages(step.rewards_per_func[kept.to(step.rewards.device)], m)
        kept_rewards = groups.view(-1)[kept].view(-1, m)
        self._log("pods/kept_fraction", m / n)
        self._log("pods/reward_var_before", groups.var(1).mean().item())
        self._log("pods/reward_var_after", kept_rewards.var(1).mean().item())
        return Selection(kept, advantages)
# === end PODS ===


# === CPPO: drop the floor(N P) smallest |A| of the step (or of each group, or of each process)
class CPPOTrainer(SelectingGRPOTrainer):
    """CPPO (arXiv 2503.22342): keep the completions with the largest |A| (`cppo.prune_completions`), with the
    advantages TRL computed on the full groups (never re-normalised). Allocation (B / (1 - P) prompts per
    step) is a choice of the generation batch: scale/train.py's --allocation."""

    method = "cppo"
    config_class = CPPOConfig

    def select(self, step):
        advantages, P, scope = step.advantages.cpu(), step.num_processes, self.args.scope
        if scope == "per_device":  # the official code's rule: each process prunes its own rows
            per = advantages.numel() // P
            kept = torch.cat([p * per + cppo.prune_completions(advantages[p * per:(p + 1) * per], self.args.prune_rate)
                              for p in range(P)])
        else:
            kept = cppo.prune_completions(advantages, self.args.prune_rate,
                                          None if scope == "global" else self.num_generations)
        dropped = torch.ones(advantages.numel(), dtype=torch.bool).index_fill_(0, kept, False)
        self._log("cppo/kept_fraction", kept.numel() / advantages.numel())
        self._log("cppo/abs_adv_kept", advantages[kept].abs().mean().item())
        self._log("cppo/abs_adv_pruned", advantages[dropped].abs().mean().item() if dropped.any() else 0.0)
        self._log("cppo/prompts_per_step", advantages.numel() // self.num_generations)
        return Selection(kept, step.advantages[kept.to(step.advantages.device)])
# === end CPPO ===


# === D3S: the max-Var(A) rollouts of the step, then the top tokens by |A| x entropy (a loss-only mask)
class D3STrainer(SelectingGRPOTrainer):
    """D3S (arXiv 2509.22115). Sample level: `d3s.select_rollouts` over the whole step (cross) or per group
    (intra). Token level: one no-grad forward of the kept rows gives the entropies; `d3s.token_keep_mask`
    then keeps the top token_ratio of the step's kept tokens by |A| x H, in the script's row order, applied
    as TRL's loss-only `tool_mask`. Both ratios follow `d3s.keep_schedule` in progress = global_step /
    (max_steps - 1), with TRL's max_steps (set by max_steps or by the epochs)."""

    method = "d3s"
    config_class = D3SConfig

    def ratios(self) -> tuple[float, float]:
        args, progress = self.args, self.state.global_step / max(self.state.max_steps - 1, 1)
        return (d3s.keep_schedule(progress, args.sample_ratio_start, args.sample_ratio_end, args.schedule),
                d3s.keep_schedule(progress, args.token_ratio_start, args.token_ratio_end, args.schedule))

    def select(self, step):
        sample_ratio, token_ratio = self.ratios()
        advantages = step.advantages.cpu()
        kept = d3s.select_rollouts(advantages, self.num_generations, sample_ratio, self.args.scope)
        self._log("d3s/sample_ratio", sample_ratio)
        self._log("d3s/token_ratio", token_ratio)
        self._log("d3s/samples_kept", kept.numel())
        return Selection(kept, step.advantages[kept.to(step.advantages.device)])

    def after_passes(self, out, layout):
        token_ratio = self.ratios()[1]
        if token_ratio >= 1:
            self._log("d3s/tokens_kept", self.accelerator.gather(out["completion_mask"].sum()).sum().item())
            return out
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        attention = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
        width = out["completion_ids"].size(1)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            _, entropy, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, attention, width, batch_size=max(1, ids.size(0) // self.args.steps_per_generation),
                compute_entropy=True)
        mask = out["completion_mask"] * out.get("tool_mask", 1)
        # The step's kept rows in the kept order: each process's real rows, in process order.
        gather = lambda x: self.accelerator.gather(self.accelerator.pad_across_processes(x, dim=1))  # noqa: E731
        real = self.accelerator.gather((~layout["is_pad"]).int()).bool()
        step_adv = self.accelerator.gather(out["advantages"])[real]
        keep = d3s.token_keep_mask(step_adv, gather(entropy)[real], gather(mask)[real], token_ratio)
        start, count = layout["start"], layout["count"]
        tool_mask = torch.zeros_like(out["completion_mask"])
        tool_mask[:count] = keep[start:start + count, :width].to(tool_mask.dtype)
        out["tool_mask"] = tool_mask  # loss-only: attention still sees every token
        self._log("d3s/tokens_kept", int(keep.sum()))
        return out
# === end D3S ===


# === DPPO: completion level, random pruning in the low-|A| pool, survivors reweighted
class DPPOTrainer(SelectingGRPOTrainer):
    """DPPO (arXiv 2603.04135), completion level: `dppo.completion_weights` prunes completions of the low-|A|
    pool of each group (completion_scope "group") or of the whole step ("step") with probability q and
    weighs the survivors 1/(1 - q). Pruned rows are dropped before the no-grad passes; the survivors'
    advantages carry the weights (exact: -min(rho wA, clip(rho) wA) = w x the clipped term, w > 0) and, with
    beta > 0, so does each survivor's KL term (`Selection.row_weights`), as dppo.py weighs the whole token loss;
    the normalisers stay dppo.py's draw-independent ones: every generated row ("grpo", "dr_grpo") and
    every generated token ("dapo"). The random draw uses a generator seeded by (seed, step), identical on
    every process. Prompt-level pruning and packing need a sampler with history and TRL's batching: not here."""

    method = "dppo"
    config_class = DPPOConfig

    def select(self, step):
        args, advantages = self.args, step.advantages.cpu()
        size = self.num_generations if args.completion_scope == "group" else advantages.numel()
        weights = dppo.completion_weights(advantages, args.completion_prune_rate, size, args.completion_pool,
                                          generator=torch.Generator().manual_seed(self._seed(1)))
        kept = weights.nonzero().flatten()
        if kept.numel() == 0:  # nothing survived: one row at weight 0, as dppo.py, so the step still runs
            kept, weights = torch.zeros(1, dtype=torch.long), torch.zeros_like(weights)
        self._log("dppo/completions_kept", (weights > 0).float().mean().item())
        self._log("dppo/completions_pruned", (weights == 0).float().mean().item())
        kept_adv = (advantages[kept] * weights[kept]).to(step.advantages.device)
        return Selection(kept, kept_adv, num_rows=advantages.numel(), num_tokens=float(step.loss_tokens.sum()),
                         row_weights=weights[kept])
# === end DPPO ===


# === DGG: the gate between backward and optimizer.step
class DGGTrainer(GRPOTrainer):
    """DGG: K = num_iterations passes over each generation batch (one optimizer step each, steps_per_generation
    = gradient_accumulation_steps). After pass k's backward (gradients synced across processes, before
    clipping) `dgg.GradientGate.should_drop` scores the lm_head gradient norm; when it fires, the gradients
    are set to None, so the optimizer skips every parameter (no step, no moment update, as dgg.py), and
    the remaining passes over this batch are skipped: the next step generates a new batch. TRL's max_steps
    counts passes, the dropped one included. The gate's windows are saved with each checkpoint.
    Not with DeepSpeed or FSDP (the lm_head gradient is sharded or held by the engine)."""

    method = "dgg"
    config_class = DGGConfig

    def __init__(self, *args, **kwargs):
        args, kwargs = _method_args(self, args, kwargs)
        super().__init__(*args, **kwargs)
        a = self.args
        self.gate = dgg.GradientGate(a.gate_window, a.gate_tau, a.gate_statistic, a.gate_scope)
        self.fired_total = 0
        if self.accelerator.distributed_type.name in ("DEEPSPEED", "FSDP"):
            raise ValueError("dgg: the gate needs the whole lm_head gradient; DeepSpeed and FSDP shard it")
        if not dgg.gated_weight(self.accelerator.unwrap_model(self.model)).requires_grad:
            raise ValueError("dgg: the lm_head (or the tied embedding) is frozen, e.g. by LoRA: there is no gradient to gate")

    def _clip_grad_norm(self, model):
        ga, K = self.args.gradient_accumulation_steps, self.num_iterations
        pass_index = (self._step - 1) // ga % K + 1  # GRPOTrainer counted this step's micro-steps already
        grad = dgg.gated_weight(self.accelerator.unwrap_model(self.model)).grad
        g = grad.norm().item() if grad is not None else 0.0
        drop = self.gate.should_drop(g, pass_index)
        metrics = self._metrics["train"]
        metrics["dgg/lm_head_grad_norm"].append(g)
        metrics["dgg/pass"].append(pass_index)
        if self.gate.z is not None:
            metrics["dgg/z"].append(self.gate.z)
        norm = super()._clip_grad_norm(model)
        if drop:
            self.optimizer.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
            self._step += (K - pass_index) * ga  # end the reuse: the next micro-step generates a new batch
            self.fired_total += 1
        metrics["dgg/fired"].append(float(drop))
        metrics["dgg/fired_total"].append(self.fired_total)
        return norm

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            state = {"windows": {str(k): list(v) for k, v in self.gate.windows.items()}, "prev": self.gate.prev,
                     "fired_total": self.fired_total}
            with open(os.path.join(folder, "dgg_gate.json"), "w") as f:
                json.dump(state, f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, "dgg_gate.json") if checkpoint else None
        if path and os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
            self.gate.windows = {int(k): deque(v, maxlen=self.gate.window) for k, v in state["windows"].items()}
            self.gate.prev, self.fired_total = state["prev"], state["fired_total"]
# === end DGG ===


TRAINERS = {"grpo": GRPOTrainer, "pods": PODSTrainer, "cppo": CPPOTrainer, "d3s": D3STrainer, "dppo": DPPOTrainer,
            "dgg": DGGTrainer}
CONFIGS = {"grpo": GRPOConfig, "pods": PODSConfig, "cppo": CPPOConfig, "d3s": D3SConfig, "dppo": DPPOConfig,
           "dgg": DGGConfig}
