"""Train with a method of this repository on TRL's GRPOTrainer, one process or many (accelerate).

    python scale/train.py --method pods                                   # 1 process, the offline tiny demo
    accelerate launch --multi_gpu --num_processes 2 scale/train.py --method cppo   # 2 processes (gloo on a CPU)
    accelerate launch --config_file scale/accelerate_configs/zero2.yaml scale/train.py --method pods \\
        --model Qwen/Qwen2.5-0.5B-Instruct --task gsm8k --bf16 ...         # 8 GPUs, see scale/README.md
    python scale/train.py --method cppo --dataset_name my_prompts.jsonl --reward_funcs my_rewards.score \\
        --use_peft --lora_r 16 --learning_rate 1e-5                       # your data, your rewards, LoRA

The flags are TRL's: every field of the method's config (`PODSConfig`, ... all of `GRPOConfig`: vLLM,
optimiser, scheduler, logging) and of `ModelConfig` (PEFT/LoRA, dtype, attention), parsed by `TrlParser`
(so `--config file.yaml` works too). Their defaults are the method script's where the script has the
flag (`--method pods` generates 16 and keeps 8, as pods.py), and the scripts' constant learning rate,
no warm-up, fp32 and no KL bias correction otherwise. The scripts' own flags are kept as aliases:
  --model                 ModelConfig's --model_name_or_path ('tiny' = the offline tiny Qwen2)
  --task, --dataset_path  this repository's tasks (add, gsm8k, math) with their rewards and held-out set;
                          or --dataset_name (a hub id or a local .json/.jsonl/.parquet/.csv with a
                          "prompt" column) with --reward_funcs (common.tasks names or dotted import paths)
  --prompts_per_step, --micro_batch_size   one step = prompts_per_step x num_generations completions over
                          all processes; micro_batch_size bounds the rows one process trains on per
                          forward/backward. They set TRL's per_device_train_batch_size and
                          gradient_accumulation_steps (`batch_geometry`); pass TRL's batch flags instead
                          to set those directly.
  --save_every, --eval_every, --eval_size, --eval_num_samples, --allocation (cppo), --max_prompt_length
The run folder follows the scripts' rules: output_dir/run_name (a plain name), a fresh run refuses a
used folder unless --overwrite, --resume continues from the last checkpoint and refuses changed
training flags. Every bad input is one `error:` line before any model loads.

Outputs in output_dir/run_name: config.json (the flags and the batch geometry), metrics.jsonl (one record
per optimizer step: TRL's metric names plus pods/, cppo/, d3s/, dppo/, dgg/ and scale/; eval/* at step
0 and eval_after/* every eval_every steps from common.rollout.evaluate on the main process, for --task
runs), TRL's checkpoint-N/ folders and final/.
"""

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cppo  # noqa: E402  (the method scripts: their Args give the defaults, their validate the first checks)
import d3s  # noqa: E402
import dgg  # noqa: E402
import dppo  # noqa: E402
import grpo  # noqa: E402
import pods  # noqa: E402

SCRIPTS = {"grpo": grpo, "pods": pods, "cppo": cppo, "d3s": d3s, "dppo": dppo, "dgg": dgg}
# Batch flags of TRL's that the project's --prompts_per_step / --micro_batch_size would otherwise set.
TRL_BATCH_FLAGS = ("per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size",
                   "steps_per_generation")
# Flags that may change between a run and its --resume (as common/runs.py's RESUMABLE): where it is written,
# how often it logs and saves, and how long it runs.
RESUMABLE = {"resume", "overwrite", "max_steps", "save_every", "save_steps", "save_strategy", "logging_steps",
             "report_to", "output_dir", "run_name", "disable_tqdm", "resume_from_checkpoint", "local_rank"}
RUN_FILES = ("config.json", "metrics.jsonl")


@dataclass
class LaunchArgs:
    method: str = field(default="grpo", metadata={"help": "grpo, pods, cppo, d3s, dppo or dgg"})
    model: str | None = field(default=None, metadata={"help": "alias of --model_name_or_path; 'tiny' = the offline tiny Qwen2"})
    task: str = field(default="add", metadata={"help": "add (offline synthetic), gsm8k or math: data, rewards and held-out set"})
    dataset_path: str | None = field(default=None, metadata={"help": "local .json/.jsonl/.parquet for --task gsm8k or math"})
    dataset_name: str | None = field(default=None, metadata={"help": "any dataset with a 'prompt' column: hub id or local file"})
    dataset_config: str | None = field(default=None, metadata={"help": "the hub dataset's configuration"})
    dataset_train_split: str = field(default="train", metadata={"help": "split of --dataset_name to train on"})
    reward_funcs: list[str] | None = field(default=None, metadata={"help": "with --dataset_name: common.tasks names or dotted paths"})
    prompts_per_step: int | None = field(default=None, metadata={"help": "B: prompts per step, over all processes"})
    micro_batch_size: int | None = field(default=None, metadata={"help": "most rows one process trains on per forward/backward"})
    allocation: bool | None = field(default=None, metadata={"help": "cppo: generate B / (1 - P) prompts so the update keeps B G"})
    max_prompt_length: int | None = field(default=None, metadata={"help": "rows with longer (templated) prompts are left out"})
    eval_every: int | None = field(default=None, metadata={"help": "held-out evaluation every N steps (and at start and end); 0 = start and end"})
    eval_size: int | None = field(default=None, metadata={"help": "held-out problems"})
    eval_num_samples: int | None = field(default=None, metadata={"help": "samples per problem for sampled accuracy (0 = greedy only)"})
    save_every: int | None = field(default=None, metadata={"help": "a TRL checkpoint every N steps (0 = none)"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir/run_name"})
    overwrite: bool = field(default=False, metadata={"help": "replace the run in output_dir/run_name (refused otherwise)"})


def fail(message: str):
    raise SystemExit(f"error: {message}")


def script_defaults(method: str) -> dict:
    """The defaults the launcher gives TRL's fields: the script's where it has the flag, and its fixed choices."""
    args = SCRIPTS[method].Args()
    shared = ("seed", "max_steps", "num_generations", "max_completion_length", "temperature", "learning_rate", "beta",
              "epsilon", "epsilon_high", "num_iterations", "loss_type", "scale_rewards", "max_grad_norm", "output_dir",
              "bf16", "gradient_checkpointing", "report_to")
    out = {k: getattr(args, k) for k in shared}
    import torch

    out.update(use_cpu=not torch.cuda.is_available(),  # TrainingArguments would otherwise look for a GPU backend
               lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, top_p=1.0, top_k=0, logging_steps=1,
               use_bias_correction_kl=False,  # TRL's default multiplies the KL term by the ratio; the scripts do not
               dataloader_num_workers=0, log_completions=False)
    for name in ("num_keep", "rule", "prune_rate", "scope", "schedule", "sample_ratio_start", "sample_ratio_end",
                 "token_ratio_start", "token_ratio_end", "completion_prune_rate", "completion_pool", "completion_scope",
                 "gate_window", "gate_tau", "gate_statistic", "gate_scope"):
        if hasattr(args, name):
            out[name] = getattr(args, name)
    return out


def parse(argv: list[str] | None):
    """(LaunchArgs, the method's config, ModelConfig, the flags as a comparable dict, the flags given, the batch
    geometry or None); every error is one line."""
    from trl import ModelConfig, TrlParser

    from scale.trainers import CONFIGS

    argv = list(sys.argv[1:] if argv is None else argv)
    given = {a.split("=")[0][2:] for a in argv if a.startswith("--")}
    pre = argparse.ArgumentParser(add_help=False)
    for name, kind in (("method", str), ("prompts_per_step", int), ("micro_batch_size", int), ("num_generations", int),
                       ("num_keep", int), ("prune_rate", float), ("allocation", str)):
        if name == "allocation":  # a bool flag: bare, or followed by true/false
            pre.add_argument("--" + name, type=kind, default=None, nargs="?", const="true")
        else:
            pre.add_argument("--" + name, type=kind, default=None)
    known = vars(pre.parse_known_args(argv)[0])
    method = known["method"] or "grpo"
    if method not in CONFIGS:
        fail(f"unknown --method {method!r} ({', '.join(CONFIGS)})")
    defaults = script_defaults(method)
    geometry = None
    batch_flags = sorted(given & set(TRL_BATCH_FLAGS))
    if batch_flags and given & {"prompts_per_step", "micro_batch_size", "allocation"}:
        fail(f"give --prompts_per_step/--micro_batch_size or TRL's {', '.join('--' + f for f in batch_flags)}, not both")
    if not batch_flags:  # the project's flags set TRL's batch sizes, before GRPOConfig checks them
        script_args = SCRIPTS[method].Args()
        values = {k: getattr(script_args, k, None) for k in known}
        values.update({k: v for k, v in known.items() if v is not None})
        values["allocation"] = str(values["allocation"]).lower() in ("true", "1", "yes")
        geometry = batch_geometry(method, values, int(os.environ.get("WORLD_SIZE", "1")))
        defaults.update(per_device_train_batch_size=geometry["per_device_train_batch_size"],
                        gradient_accumulation_steps=geometry["gradient_accumulation_steps"])
    parser = TrlParser((LaunchArgs, CONFIGS[method], ModelConfig))
    parser.set_defaults_with_config(**defaults)
    try:
        launch, config, model_args, rest = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as e:  # a config's own check (GRPOConfig's or the method's): its first line
        fail(str(e).strip().splitlines()[0])
    if rest:
        fail(f"unrecognized arguments: {' '.join(rest)} (see --help)")
    flags = {}
    for obj in (launch, config, model_args):
        flags.update({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    flags = json.loads(json.dumps(flags, default=str))
    return launch, config, model_args, flags, given, geometry


def check(launch: LaunchArgs, config, model_args, given: set) -> None:
    """The launcher's own checks, then the script's for the flags they share; before any model loads."""
    script = SCRIPTS[launch.method]
    if launch.model and "model_name_or_path" in given:
        fail("give --model or --model_name_or_path, not both")
    model_args.model_name_or_path = launch.model or model_args.model_name_or_path or "tiny"
    defaults = script.Args()
    for name in ("prompts_per_step", "micro_batch_size", "max_prompt_length", "eval_every", "eval_size",
                 "eval_num_samples", "save_every"):
        if getattr(launch, name) is None:
            setattr(launch, name, getattr(defaults, name))
    if launch.allocation is None:
        launch.allocation = getattr(defaults, "allocation", False)
    if launch.task not in ("add", "gsm8k", "math"):
        fail(f"unknown --task {launch.task!r} (add, gsm8k, math)")
    if launch.dataset_name and launch.dataset_path:
        fail("give --dataset_name (any dataset with a 'prompt' column) or --dataset_path (for --task), not both")
    if launch.dataset_name and not launch.reward_funcs:
        fail("--dataset_name needs --reward_funcs (common.tasks names or dotted import paths)")
    if launch.reward_funcs and not launch.dataset_name:
        fail("--reward_funcs goes with --dataset_name; a --task brings its own reward functions")
    if launch.resume and launch.overwrite:
        fail("--resume and --overwrite exclude each other")
    name = config.run_name
    if name is not None and (not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name):
        fail(f"--run_name {name!r} must be a plain folder name (no '/', not '..'): runs live in --output_dir")
    # The flags the script shares with the launcher get its checks and messages (the method's own fields and
    # TRL's wider choices, such as more loss types, are checked by the configs).
    shared = {name: getattr(config, name) for name in ("seed", "max_steps", "num_generations", "max_completion_length",
                                                       "temperature", "learning_rate", "beta", "epsilon", "epsilon_high",
                                                       "num_iterations", "max_grad_norm")}
    shared.update({name: getattr(launch, name) for name in ("prompts_per_step", "micro_batch_size", "max_prompt_length",
                                                            "eval_every", "eval_size", "eval_num_samples", "save_every")})
    script.validate(dataclasses.replace(defaults, model=model_args.model_name_or_path, **shared))


def load_reward_funcs(names: list[str]) -> list:
    from common import tasks

    funcs = []
    for name in names:
        if "." not in name:
            if not callable(getattr(tasks, name, None)) or not name.endswith("_reward"):
                fail(f"--reward_funcs {name!r}: not a reward function of common.tasks (correctness_reward, "
                     f"format_reward); give a dotted import path for your own")
            funcs.append(getattr(tasks, name))
            continue
        module, _, attr = name.rpartition(".")
        sys.path.insert(0, os.getcwd())
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            fail(f"--reward_funcs {name!r}: cannot import it ({type(e).__name__}: {e})")
        if not callable(fn):
            fail(f"--reward_funcs {name!r} is not callable")
        funcs.append(fn)
    return funcs


def load_rows(launch: LaunchArgs, seed: int):
    """(train rows, task or None, reward functions, reward weights or None)."""
    if not launch.dataset_name:
        from common.tasks import load_task

        task = load_task(launch.task, launch.dataset_path, launch.eval_size, seed)
        return task.train, task, task.reward_funcs, task.reward_weights
    funcs = load_reward_funcs(launch.reward_funcs)
    from datasets import load_dataset

    name = launch.dataset_name
    kinds = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
    try:
        if os.path.isfile(name):
            ext = os.path.splitext(name)[1].lower()
            if ext not in kinds:
                fail(f"--dataset_name {name!r}: a local file must be {', '.join(kinds)}")
            data = load_dataset(kinds[ext], data_files=name, split="train")
        else:
            data = load_dataset(name, launch.dataset_config, split=launch.dataset_train_split)
    except SystemExit:
        raise
    except Exception as e:  # a missing hub dataset, no network, a malformed file: one line
        fail(f"--dataset_name {name!r}: cannot load it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if "prompt" not in data.column_names:
        fail(f"--dataset_name {name!r} has no 'prompt' column (columns: {', '.join(data.column_names)})")
    rows = data.to_list()
    if not rows:
        fail(f"--dataset_name {name!r} has no rows")
    return rows, None, funcs, None


def batch_geometry(method: str, values: dict, num_processes: int) -> dict:
    """TRL's per_device_train_batch_size (rows generated per micro-step and process) and
    gradient_accumulation_steps (= steps_per_generation) for one step of prompts_per_step x num_generations
    rows over all processes: the fewest micro-steps whose trained micro-batch (the kept rows spread evenly,
    see SelectingGRPOTrainer.rebalance) holds at most micro_batch_size rows."""
    B, G, limit = values["prompts_per_step"], values["num_generations"], values["micro_batch_size"]
    if min(B, G, limit) < 1:
        fail("--prompts_per_step, --num_generations and --micro_batch_size must be >= 1")
    if method == "cppo" and values["allocation"]:
        B = round(B / (1 - values["prune_rate"]))  # cppo.py's allocation: the update keeps about B G rows
    N = B * G
    if N % num_processes:
        fail(f"{B} prompts x {G} completions do not split over {num_processes} processes")
    rows = N // num_processes
    kept = B * values["num_keep"] if method == "pods" else \
        N - int(N * values["prune_rate"] + 1e-9) if method == "cppo" else N  # d3s, dppo: at most all of them
    steps = next(g for g in range(1, rows + 1) if rows % g == 0 and -(-kept // (num_processes * g)) <= limit)
    return {"prompts_per_step": B, "num_processes": num_processes, "rows_generated_per_process": rows,
            "rows_trained": kept, "gradient_accumulation_steps": steps, "per_device_train_batch_size": rows // steps,
            "trained_rows_per_micro_batch": -(-kept // (num_processes * steps))}


def holds_a_run(path: str) -> bool:
    """A config, a log, a checkpoint or a final model: what a fresh run must not silently mix with."""
    if not os.path.isdir(path):
        return False
    return any(name in ("config.json", "metrics.jsonl", "final") or name.startswith("checkpoint-") for name in os.listdir(path))


def prepare_run_dir(launch: LaunchArgs, config, flags: dict) -> tuple[str, str | None]:
    """The scripts' run-folder rules for a TRL run. Returns (run folder, checkpoint to resume from or None)."""
    from transformers.trainer_utils import get_last_checkpoint

    name = config.run_name or f"trl_{launch.method}_{launch.task if not launch.dataset_name else 'data'}_seed{config.seed}"
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        fail(f"--run_name {name!r} must be a plain folder name (no '/', not '..'): runs live in --output_dir")
    if os.path.exists(config.output_dir) and not os.path.isdir(config.output_dir):
        fail(f"--output_dir {config.output_dir!r} is a file, not a folder")
    path = os.path.join(config.output_dir, name)
    if launch.resume:
        last = get_last_checkpoint(path) if os.path.isdir(path) else None
        if last is None:
            fail(f"--resume: no checkpoint-N folder in {path} (start the run without --resume, with --overwrite "
                 f"if the folder holds an unfinished run; --save_every sets how often TRL saves)")
        try:
            with open(os.path.join(path, "config.json")) as f:
                saved = json.load(f)["flags"]
        except (OSError, ValueError, KeyError, TypeError):
            fail(f"--resume: {path}/config.json is missing or unreadable; start again with --overwrite")
        differ = [k for k in sorted(set(saved) | set(flags)) if k not in RESUMABLE and saved.get(k) != flags.get(k)]
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {flags.get(k)!r}" for k in differ)
            fail(f"--resume: {path} was trained with other settings ({shown}); resume with the saved ones "
                 f"(see its config.json) or start a new run")
        return path, last
    if holds_a_run(path) and not launch.overwrite:
        fail(f"{path} already holds a run; pass --resume to continue it or --overwrite to replace it")
    return path, None


def clear_run(path: str) -> None:
    """--overwrite: remove what a run writes (never anything else in the folder)."""
    for f in RUN_FILES:
        if os.path.exists(os.path.join(path, f)):
            os.remove(os.path.join(path, f))
    for entry in os.listdir(path) if os.path.isdir(path) else []:
        if entry in ("final", "final.tmp") or entry.startswith("checkpoint-"):
            shutil.rmtree(os.path.join(path, entry), ignore_errors=True)


def sharded(model) -> bool:
    """ZeRO-3 / FSDP (1 or 2) shard the weights: generating on the main process alone would hang the others."""
    if model is None or any(getattr(p, "ds_id", None) is not None for p in model.parameters()):
        return True
    try:
        from torch.distributed.fsdp import FSDPModule  # FSDP2's fully_shard makes modules of this class
    except ImportError:
        FSDPModule = ()
    return any(isinstance(m, FSDPModule) or type(m).__name__.startswith("FullyShardedDataParallel")
               for m in model.modules())


def make_callbacks(launch: LaunchArgs, config, run_dir: str, task, tok):
    """metrics.jsonl on the main process, with held-out accuracy (for --task runs) merged into evaluated steps."""
    from transformers import TrainerCallback

    from common.rollout import evaluate

    class Metrics(TrainerCallback):
        def __init__(self):
            self.pending = {}

        def _evaluate(self, model, state, prefix):
            if task is None or not state.is_world_process_zero:
                return
            out = evaluate(model, tok, task.test, launch.max_prompt_length, config.max_completion_length,
                           launch.eval_num_samples, bf16=bool(config.bf16))
            self.pending.update({k.replace("eval/", prefix): v for k, v in out.items()})

        def on_train_begin(self, train_args, state, control, model=None, **kw):
            if sharded(model):
                if state.is_world_process_zero:
                    print("scale/train.py: the weights are sharded (ZeRO-3 / FSDP), so there is no held-out "
                          "evaluation (generating on one process would hang the others)")
            elif state.global_step == 0:
                self._evaluate(model, state, "eval/")

        def on_step_end(self, train_args, state, control, model=None, **kw):
            done = state.global_step
            if ((launch.eval_every and done % launch.eval_every == 0) or done == state.max_steps) and not sharded(model):
                self._evaluate(model, state, "eval_after/")

        def on_log(self, train_args, state, control, logs=None, **kw):
            # Every optimizer step's record: with num_iterations > 1 only the generating steps carry rewards,
            # the others still carry the loss. The final summary (train_runtime, ...) is not a step.
            if state.is_world_process_zero and logs and "loss" in logs and "train_runtime" not in logs:
                record = {"step": state.global_step - 1, **logs, **self.pending}
                self.pending = {}
                with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")

    return [Metrics()]


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    import torch
    from accelerate import PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the process group first (gloo without a GPU), then TRL's config
        PartialState(cpu=not torch.cuda.is_available())
    launch, config, model_args, flags, given, geometry = parse(argv)
    check(launch, config, model_args, given)

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in os.environ \
            and "WORLD_SIZE" not in os.environ:
        fail("`accelerate launch --cpu --num_processes N` starts one process (accelerate 1.15 needs mpirun for "
             "multi-CPU); use `accelerate launch --multi_gpu --num_processes N` (gloo on a machine without a GPU) "
             "or `torchrun --nproc_per_node N`")
    method = launch.method
    run_dir, last_checkpoint = prepare_run_dir(launch, config, flags)
    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: a gloo process group without a GPU
    if geometry is None:  # TRL's batch flags were given
        geometry = {"num_processes": state.num_processes, "per_device_train_batch_size": config.per_device_train_batch_size,
                    "gradient_accumulation_steps": config.gradient_accumulation_steps,
                    "steps_per_generation": config.steps_per_generation}
    elif geometry["num_processes"] != state.num_processes:
        fail(f"WORLD_SIZE says {geometry['num_processes']} processes, the process group has {state.num_processes}")
    from trl import get_peft_config, get_quantization_config

    rows, task, reward_funcs, reward_weights = load_rows(launch, config.seed)
    if reward_weights is not None and config.reward_weights is None:
        config.reward_weights = reward_weights
    config.output_dir = run_dir
    if launch.save_every:
        config.save_strategy, config.save_steps = "steps", launch.save_every
    elif "save_strategy" not in given:
        config.save_strategy = "no"
    config.use_cpu = config.use_cpu or not torch.cuda.is_available()
    config.disable_tqdm = config.disable_tqdm or not state.is_main_process
    from transformers import AutoTokenizer

    from common.tiny import ensure_tiny
    from scale.trainers import TRAINERS

    model_path = model_args.model_name_or_path
    with state.main_process_first():  # the tiny model is built once, by the main process
        if model_path == "tiny" or model_path.startswith("tiny:"):
            model_path = ensure_tiny(seed=int(model_path.partition(":")[2] or 0))
    tok = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # TRL 1.16 has no max_prompt_length (the scripts left-truncate): leave the longer prompts out instead.
    texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
             if not isinstance(r["prompt"], str) else r["prompt"] for r in rows]
    long = {i for i, t in enumerate(texts) if len(t.encode()) > launch.max_prompt_length  # a token covers >= 1 byte
            and len(tok(t, add_special_tokens=False)["input_ids"]) > launch.max_prompt_length}
    train_rows = [r for i, r in enumerate(rows) if i not in long]
    if not train_rows:
        fail(f"no training prompt fits --max_prompt_length {launch.max_prompt_length}")
    if state.is_main_process:
        os.makedirs(run_dir, exist_ok=True)
        if not launch.resume:
            clear_run(run_dir)
            open(os.path.join(run_dir, "metrics.jsonl"), "w").close()
        with open(os.path.join(run_dir, "config.json.tmp"), "w") as f:
            json.dump({"flags": flags, "method": method, "geometry": geometry, "dropped_long_prompts": len(long)}, f, indent=2)
        os.replace(os.path.join(run_dir, "config.json.tmp"), os.path.join(run_dir, "config.json"))
    state.wait_for_everyone()
    config.model_init_kwargs = {**(config.model_init_kwargs or {}), "revision": model_args.model_revision,
                                "attn_implementation": model_args.attn_implementation, "dtype": model_args.dtype}
    from datasets import Dataset

    try:
        trainer = TRAINERS[method](
            model=model_path, reward_funcs=reward_funcs, args=config, processing_class=tok,
            train_dataset=Dataset.from_list(train_rows), peft_config=get_peft_config(model_args),
            quantization_config=get_quantization_config(model_args),
            callbacks=make_callbacks(launch, config, run_dir, task, tok) + (callbacks or []))
    except ValueError as e:  # a setting the plug-in cannot honour (tools, DeepSpeed for DGG, ...): one line
        fail(str(e).strip().splitlines()[0])
    trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.save_model(os.path.join(run_dir, "final"))
    if state.is_main_process:
        tok.save_pretrained(os.path.join(run_dir, "final"))
    return {"run_dir": run_dir, "geometry": geometry, "trainer": trainer}


def close_process_group():
    """Tear down the process group before the interpreter exits: left to exit, gloo's threads can abort the
    process after training finished ("terminate called without an active exception")."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    close_process_group()
