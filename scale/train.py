"""Train with a method of this repository on TRL's GRPOTrainer, one process or many (accelerate).

    python scale/train.py --method pods                                   # 1 process, the offline tiny demo
    accelerate launch --num_processes 2 --cpu scale/train.py --method cppo # the CPU rehearsal (gloo)
    accelerate launch --config_file scale/accelerate_configs/zero2.yaml scale/train.py --method pods \\
        --model Qwen/Qwen2.5-0.5B-Instruct --task gsm8k --bf16 ...         # 8 GPUs, see scale/README.md

The flags are the scripts' names (grpo.py's Args, plus the method's own), and their defaults are the
method script's defaults, read from it: `--method pods` generates n = 16 and keeps m = 8 as pods.py
does. One step is prompts_per_step prompts (over all processes) x num_generations completions and one
optimizer step; micro_batch_size is the most sequences one process trains on per forward/backward.
The launcher turns these into TRL's per_device_train_batch_size (completions *generated* per
micro-step and process), gradient_accumulation_steps and generation batch (`batch_geometry`), and
fails with one `error:` line when they do not divide.

Outputs in output_dir/run_name: config.json (flags and geometry), metrics.jsonl (one record per
optimizer step: TRL's metric names plus pods/, cppo/, d3s/, dppo/; eval/* at step 0 and eval_after/*
every eval_every steps, held-out accuracy from common.rollout.evaluate on the main process), TRL's
checkpoints (every save_every steps; --resume continues from the last) and final/.
"""

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cppo  # noqa: E402  (the method scripts: their Args give the defaults, their validate checks the flags)
import d3s  # noqa: E402
import dppo  # noqa: E402
import grpo  # noqa: E402
import pods  # noqa: E402

SCRIPTS = {"grpo": grpo, "pods": pods, "cppo": cppo, "d3s": d3s, "dppo": dppo}
METHOD_FLAGS = {"grpo": (), "pods": ("num_keep", "rule"), "cppo": ("prune_rate", "scope"),
                "d3s": ("scope", "schedule", "sample_ratio_start", "sample_ratio_end", "token_ratio_start", "token_ratio_end"),
                "dppo": ("completion_prune_rate", "completion_pool", "completion_scope")}


@dataclass
class ScaleArgs:
    method: str = field(default="grpo", metadata={"help": "grpo, pods, cppo, d3s or dppo"})
    # --- grpo.py's flags (None = the method script's default)
    model: str | None = field(default=None, metadata={"help": "hub id or local path; 'tiny' = the offline tiny Qwen2"})
    task: str | None = field(default=None, metadata={"help": "add (offline synthetic), gsm8k or math"})
    dataset_path: str | None = field(default=None, metadata={"help": "local .json/.jsonl/.parquet instead of the hub dataset"})
    seed: int | None = field(default=None, metadata={"help": "seed of TRL's sampler, sampling and initialisation"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps (one generation batch each)"})
    prompts_per_step: int | None = field(default=None, metadata={"help": "B: prompts per step, over all processes"})
    num_generations: int | None = field(default=None, metadata={"help": "G (n for PODS): completions generated per prompt"})
    max_prompt_length: int | None = field(default=None, metadata={"help": "rows with longer (templated) prompts are left out"})
    max_completion_length: int | None = field(default=None, metadata={"help": "longer completions are cut (clipped)"})
    temperature: float | None = field(default=None, metadata={"help": "sampling temperature (also divides the logits in the loss)"})
    learning_rate: float | None = field(default=None, metadata={"help": "AdamW learning rate, constant"})
    beta: float | None = field(default=None, metadata={"help": "KL coefficient; 0 = no reference model"})
    epsilon: float | None = field(default=None, metadata={"help": "lower clip range of the ratio"})
    epsilon_high: float | None = field(default=None, metadata={"help": "upper clip range (default: epsilon)"})
    num_iterations: int | None = field(default=None, metadata={"help": "mu: optimizer passes over each generation batch"})
    loss_type: str | None = field(default=None, metadata={"help": "dapo, grpo or dr_grpo"})
    scale_rewards: str | None = field(default=None, metadata={"help": "group, batch or none"})
    max_grad_norm: float | None = field(default=None, metadata={"help": "gradient clipping"})
    micro_batch_size: int | None = field(default=None, metadata={"help": "most sequences one process trains on per forward/backward"})
    eval_every: int | None = field(default=None, metadata={"help": "held-out evaluation every N steps (and at start and end); 0 = start and end"})
    eval_size: int | None = field(default=None, metadata={"help": "held-out problems"})
    eval_num_samples: int | None = field(default=None, metadata={"help": "samples per problem for sampled accuracy (0 = greedy only)"})
    save_every: int | None = field(default=None, metadata={"help": "TRL checkpoint every N steps (0 = none)"})
    output_dir: str | None = field(default=None, metadata={"help": "runs land in output_dir/run_name"})
    run_name: str | None = field(default=None, metadata={"help": "default: trl_<method>_<task>_seed<seed>"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir/run_name"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPU)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory in the update"})
    # --- the methods' flags (the script's names and defaults)
    num_keep: int | None = field(default=None, metadata={"help": "pods: m, completions kept per prompt"})
    rule: str | None = field(default=None, metadata={"help": "pods: max_variance, max_reward or random"})
    prune_rate: float | None = field(default=None, metadata={"help": "cppo: P, fraction of each process's completions dropped"})
    allocation: bool | None = field(default=None, metadata={"help": "cppo: generate B / (1 - P) prompts so the update keeps B G"})
    scope: str | None = field(default=None, metadata={"help": "cppo: global or group; d3s: cross or intra"})
    schedule: str | None = field(default=None, metadata={"help": "d3s: linear or none"})
    sample_ratio_start: float | None = field(default=None, metadata={"help": "d3s: rollouts kept at the start"})
    sample_ratio_end: float | None = field(default=None, metadata={"help": "d3s: ... and at the end"})
    token_ratio_start: float | None = field(default=None, metadata={"help": "d3s: tokens kept at the start"})
    token_ratio_end: float | None = field(default=None, metadata={"help": "d3s: ... and at the end"})
    completion_prune_rate: float | None = field(default=None, metadata={"help": "dppo: r_o"})
    completion_pool: float | None = field(default=None, metadata={"help": "dppo: fraction of the low-|A| pool"})
    completion_scope: str | None = field(default=None, metadata={"help": "dppo: group or step (= the local batch)"})
    # --- TRL only
    use_vllm: bool = field(default=False, metadata={"help": "generate with vLLM (GPU)"})
    vllm_mode: str = field(default="colocate", metadata={"help": "colocate (same GPUs) or server (trl vllm-serve)"})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": "vLLM's share of each GPU in colocate mode"})
    report_to: str = field(default="none", metadata={"help": "none, wandb, tensorboard, ..."})


def resolve(args: ScaleArgs) -> ScaleArgs:
    """Fill every unset flag with the method script's default, then run the script's own checks."""
    if args.method not in SCRIPTS:
        raise SystemExit(f"error: unknown --method {args.method!r} ({', '.join(SCRIPTS)})")
    script = SCRIPTS[args.method]
    defaults = script.Args()
    for f in dataclasses.fields(args):
        if getattr(args, f.name) is None and hasattr(defaults, f.name):
            setattr(args, f.name, getattr(defaults, f.name))
    if args.output_dir is None:
        args.output_dir = "runs"
    if args.allocation is None:
        args.allocation = False
    ours = {k: v for k, v in dataclasses.asdict(args).items() if v is not None}
    script.validate(dataclasses.replace(defaults, **{f.name: ours[f.name] for f in dataclasses.fields(defaults)
                                                     if f.name in ours and f.name not in ("resume", "output_dir", "run_name")}))
    if args.vllm_mode not in ("colocate", "server"):
        raise SystemExit(f"error: unknown --vllm_mode {args.vllm_mode!r} (colocate, server)")
    if args.method == "dppo" and args.beta:
        raise SystemExit("error: --method dppo needs --beta 0 (the plug-in weights the advantages, not the KL term)")
    return args


def batch_geometry(args: ScaleArgs, num_processes: int) -> dict:
    """TRL batch sizes for one step of prompts_per_step prompts on num_processes processes.

    rows_generated / rows_trained are per process and generation batch; TRL's per_device_train_batch_size
    counts generated rows per micro-step, so after selection each micro-step trains rows_trained / GA."""
    B, G = args.prompts_per_step, args.num_generations
    if args.method == "cppo" and args.allocation:
        B = round(B / (1 - args.prune_rate))  # cppo.py's allocation: the update keeps about B G rows
    if (B * G) % num_processes:
        raise SystemExit(f"error: {B} prompts x {G} completions do not split over {num_processes} processes")
    rows = B * G // num_processes
    whole_groups = args.method == "pods" or (args.method == "cppo" and args.scope == "group") or \
        (args.method == "d3s" and args.scope == "intra") or (args.method == "dppo" and args.completion_scope == "group")
    if whole_groups and rows % G:
        raise SystemExit(f"error: --method {args.method} needs whole groups on each process: "
                         f"prompts per step ({B}) must be a multiple of the number of processes ({num_processes})")
    if args.method == "pods":
        kept = rows // G * args.num_keep
    elif args.method == "cppo":
        kept = rows - int(rows * args.prune_rate + 1e-9) if args.scope == "global" else \
            rows // G * (G - int(G * args.prune_rate + 1e-9))
    else:
        kept = rows  # d3s keeps at most all of them; dppo and grpo keep every row
    steps = next((g for g in range(-(-kept // args.micro_batch_size), kept + 1) if rows % g == 0 and kept % g == 0), None)
    if steps is None:
        raise SystemExit(f"error: no gradient_accumulation_steps divides both the {rows} generated and the {kept} "
                         f"trained rows per process; change --micro_batch_size or --prompts_per_step")
    return {"prompts_per_step": B, "num_processes": num_processes, "rows_generated_per_process": rows,
            "rows_trained_per_process": kept, "gradient_accumulation_steps": steps,
            "per_device_train_batch_size": rows // steps, "trained_rows_per_micro_batch": kept // steps}


def make_callbacks(args: ScaleArgs, run_dir: str, task, tok):
    """metrics.jsonl on the main process, with held-out accuracy merged into each evaluated step."""
    from transformers import TrainerCallback

    from common.rollout import evaluate

    class Metrics(TrainerCallback):
        def __init__(self):
            self.pending = {}

        def _evaluate(self, model, state, prefix):
            if not state.is_world_process_zero:
                return
            out = evaluate(model, tok, task.test, args.max_prompt_length, args.max_completion_length,
                           args.eval_num_samples, bf16=args.bf16)
            self.pending.update({k.replace("eval/", prefix): v for k, v in out.items()})

        def on_train_begin(self, train_args, state, control, model=None, **kw):
            if self.sharded(model) and state.is_world_process_zero:
                print("scale/train.py: the weights are sharded (ZeRO-3 / FSDP), so there is no held-out evaluation "
                      "(generating on one process would hang the others)")
            elif state.global_step == 0:
                self._evaluate(model, state, "eval/")

        def on_step_end(self, train_args, state, control, model=None, **kw):
            done = state.global_step
            if ((args.eval_every and done % args.eval_every == 0) or done == args.max_steps) and not self.sharded(model):
                self._evaluate(model, state, "eval_after/")

        def on_log(self, train_args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs and "reward" in logs:  # a step's record, not the final summary
                record = {"step": state.global_step - 1, **logs, **self.pending}
                self.pending = {}
                with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")

        @staticmethod
        def sharded(model):
            # ZeRO-3 / FSDP shard the weights: generating on one process alone would hang the others.
            return model is None or any(getattr(p, "ds_id", None) is not None for p in model.parameters()) or \
                type(model).__name__.startswith("FullyShardedDataParallel")

    return [Metrics()]


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    from transformers import HfArgumentParser

    args = resolve(HfArgumentParser(ScaleArgs).parse_args_into_dataclasses(args=argv)[0])
    import torch
    from accelerate import PartialState

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in os.environ \
            and "WORLD_SIZE" not in os.environ:
        raise SystemExit("error: `accelerate launch --cpu --num_processes N` starts one process (accelerate 1.15 needs "
                         "mpirun for multi-CPU); use `accelerate launch --multi_gpu --num_processes N` (gloo on a "
                         "machine without a GPU) or `torchrun --nproc_per_node N`")
    # cpu=True is what makes a torchrun-style launch on a machine without a GPU a gloo process group.
    state = PartialState(cpu=not torch.cuda.is_available())
    geometry = batch_geometry(args, state.num_processes)
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    from common.tasks import load_task
    from common.tiny import ensure_tiny
    from scale.trainers import TRAINERS

    run_dir = os.path.join(args.output_dir, args.run_name or f"trl_{args.method}_{args.task}_seed{args.seed}")
    model_path = args.model
    with state.main_process_first():  # the tiny model is built once, by the main process
        if model_path == "tiny" or model_path.startswith("tiny:"):
            model_path = ensure_tiny(seed=int(model_path.partition(":")[2] or 0))
        task = load_task(args.task, args.dataset_path, args.eval_size)
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # TRL 1.16 has no max_prompt_length (the scripts left-truncate): leave the longer prompts out instead.
    texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in task.train]
    long = [i for i, t in enumerate(texts) if len(t.encode()) > args.max_prompt_length]  # a token covers >= 1 byte
    lengths = {i: len(tok(texts[i], add_special_tokens=False)["input_ids"]) for i in long}
    rows = [r for i, r in enumerate(task.train) if lengths.get(i, 0) <= args.max_prompt_length]
    if not rows:
        raise SystemExit(f"error: no training prompt fits --max_prompt_length {args.max_prompt_length}")
    if state.is_main_process:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump({**dataclasses.asdict(args), "geometry": geometry, "dropped_long_prompts": len(task.train) - len(rows)},
                      f, indent=2)
        if not args.resume:
            open(os.path.join(run_dir, "metrics.jsonl"), "w").close()
    state.wait_for_everyone()
    config = GRPOConfig(
        output_dir=run_dir, seed=args.seed, max_steps=args.max_steps, num_generations=args.num_generations,
        per_device_train_batch_size=geometry["per_device_train_batch_size"],
        gradient_accumulation_steps=geometry["gradient_accumulation_steps"],
        max_completion_length=args.max_completion_length, temperature=args.temperature, top_p=1.0, top_k=0,
        learning_rate=args.learning_rate, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, beta=args.beta, epsilon=args.epsilon,
        epsilon_high=args.epsilon_high, num_iterations=args.num_iterations, loss_type=args.loss_type,
        use_bias_correction_kl=False,  # TRL 1.16's default multiplies the KL term by the ratio; grpo.py does not
        scale_rewards=args.scale_rewards, max_grad_norm=args.max_grad_norm, reward_weights=task.reward_weights,
        logging_steps=1, save_strategy="steps" if args.save_every else "no", save_steps=args.save_every or 500,
        report_to=args.report_to, gradient_checkpointing=args.gradient_checkpointing,
        bf16=args.bf16,  # explicit: TRL's configs default to bf16 autocast, even on a CPU
        use_cpu=not torch.cuda.is_available(), use_vllm=args.use_vllm, vllm_mode=args.vllm_mode,
        vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization, disable_tqdm=not state.is_main_process,
        dataloader_num_workers=0, log_completions=False)
    kwargs = {k: getattr(args, k) for k in METHOD_FLAGS[args.method]}
    trainer = TRAINERS[args.method](
        model=model_path, reward_funcs=task.reward_funcs, args=config, processing_class=tok,
        train_dataset=Dataset.from_list(rows), callbacks=make_callbacks(args, run_dir, task, tok) + (callbacks or []),
        **kwargs)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    trainer.save_model(os.path.join(run_dir, "final"))
    if state.is_main_process:
        tok.save_pretrained(os.path.join(run_dir, "final"))
    return {"run_dir": run_dir, "geometry": geometry, "trainer": trainer}


if __name__ == "__main__":
    main()
