"""Everything about a training run that is not the algorithm, so that each script's `main` reads as one.

    run = runs.Run(args, __file__, task.test)  # seeds, device, the run folder (fresh, or resumed)
    ... load the policy and the optimizer ...
    run.start(model, tok, optimizer)          # a resumed run gets back its state; a fresh one evaluates the warm start
    for step in run.steps():                  # the progress bar; a resumed run starts where it stopped
        ... the algorithm, filling `metrics` ...
        run.log(metrics, lengths, truncated)  # totals, evaluation, metrics.jsonl, tracker, checkpoint
    return run.finish()                       # final/, the before -> after summary

A run folder (output_dir/run_name) holds config.json, metrics.jsonl, samples.jsonl, checkpoint.pt and
final/. Its rules, so that two runs never mix and no kill or full disk loses a run:
  - a fresh run refuses a folder that already holds a run unless --overwrite (which removes only the
    files a run writes, never anything else in the folder);
  - --resume needs a checkpoint written by the same script with the same training flags (RESUMABLE
    lists those that may change); a mismatch is one line naming every difference. A run that
    reached max_steps is complete once final/ is whole; if final/ is missing or partial, --resume
    writes it (and the final evaluation, if the log lacks it) and nothing else;
  - the checkpoint, config.json and final/ are written to a temporary name and renamed, so a kill
    or a full disk mid-write leaves the previous version; a torn last line of a log (a kill
    mid-append) is dropped on resume, with the records past the checkpoint;
  - weights that stopped being usable (non-finite, or overflowing to non-finite logits) are never
    saved: the run stops with one line, and the last checkpoint is the way back.
Every problem is one `error: ...` line (SystemExit), raised before any model is loaded where it can be.
"""

import dataclasses
import json
import math
import os
import random
import re
import shutil
import time

import numpy as np
import torch
from tqdm import trange

from common import rollout
from common.loggers import Reporter, check_report_to

# Flags that may differ between a run and its --resume: where it is written, how often it logs,
# and how long it runs (max_steps extends or shortens a run; D3S's schedule follows the new total).
RESUMABLE = {"resume", "overwrite", "max_steps", "save_every", "log_samples_every", "report_to", "device",
             "output_dir", "run_name"}
RUN_FILES = ("checkpoint.pt", "checkpoint.pt.tmp", "config.json", "config.json.tmp", "metrics.jsonl",
             "metrics.jsonl.tmp", "samples.jsonl", "samples.jsonl.tmp")
# What every run counts from its first step on (a method adds its own before run.start).
TOTALS = ("time/train_total", "time/train_cpu_total", "tokens/generated_total", "tokens/trained_total",
          "rollouts/generated_total", "updates_total", "skipped/degenerate_total", "skipped/nonfinite_total")
MIN_TEMPERATURE = 1e-3  # below this, logits / temperature overflows float32 and sampling breaks


def fail(message: str):
    raise SystemExit(f"error: {message}")


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(args_class, argv: list[str] | None = None):
    """The script's dataclass from the command line (or argv); an unknown flag is one line, not a traceback."""
    from transformers import HfArgumentParser

    args, rest = HfArgumentParser(args_class).parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if rest:
        fail(f"unrecognized arguments: {' '.join(rest)} (see --help)")
    return args


def require(checks) -> None:
    """Each (condition, message) pair must hold; the first that does not is the error line."""
    for ok, message in checks:
        if not ok:
            fail(message)


def check_finite(**values):
    """Each named float flag must be a finite number (nan and inf pass every '>' test)."""
    for name, v in values.items():
        if v is not None and not math.isfinite(v):
            fail(f"--{name} must be a finite number, got {v}")


def check_args(args) -> None:
    """The flags every script shares (grpo.py's Args). A method checks its own flags after this."""
    check_finite(learning_rate=args.learning_rate, max_grad_norm=args.max_grad_norm, beta=args.beta,
                 temperature=args.temperature, epsilon=args.epsilon, epsilon_high=args.epsilon_high)
    require([
        (0 <= args.seed < 2 ** 32, f"--seed must be in [0, 2**32 - 1], got {args.seed}"),
        (args.max_steps >= 1, "--max_steps must be >= 1"),
        (args.prompts_per_step >= 1, "--prompts_per_step must be >= 1"),
        (args.num_generations >= 2, "--num_generations must be >= 2 (a group needs a baseline)"),
        (args.max_prompt_length >= 1 and args.max_completion_length >= 1, "lengths must be >= 1"),
        (args.micro_batch_size >= 1, "--micro_batch_size must be >= 1"),
        (args.temperature >= MIN_TEMPERATURE,
         f"--temperature must be >= {MIN_TEMPERATURE} (logits / temperature overflows below it; 0.01 is near-greedy)"),
        (args.learning_rate > 0, "--learning_rate must be > 0"),
        (args.max_grad_norm > 0, "--max_grad_norm must be > 0 (it clips the gradient's norm)"),
        (args.beta >= 0, "--beta must be >= 0"),
        (args.epsilon >= 0 and (args.epsilon_high is None or args.epsilon_high >= 0), "--epsilon must be >= 0"),
        (args.num_iterations >= 1, "--num_iterations must be >= 1"),
        (args.loss_type in ("dapo", "grpo", "dr_grpo"), f"unknown --loss_type {args.loss_type!r} (dapo, grpo, dr_grpo)"),
        (args.scale_rewards in ("group", "batch", "none"),
         f"unknown --scale_rewards {args.scale_rewards!r} (group, batch, none)"),
        (args.task in ("add", "gsm8k", "math"), f"unknown --task {args.task!r} (add, gsm8k, math)"),
        (args.task != "add" or args.dataset_path is None, "--dataset_path needs --task gsm8k or math (add is generated)"),
        (not (args.resume and args.overwrite), "--resume and --overwrite exclude each other"),
        (args.device in ("auto", "cpu", "cuda"), f"unknown --device {args.device!r} (auto, cpu, cuda)"),
        (args.device != "cuda" or torch.cuda.is_available(),
         "--device cuda: this torch sees no CUDA device (a CPU build, or no GPU); use --device cpu or auto"),
        (args.sampler in ("lean", "hf"), f"unknown --sampler {args.sampler!r} (lean, hf)"),
        (min(args.eval_every, args.eval_size - 1, args.eval_num_samples, args.save_every, args.log_samples_every) >= 0,
         "eval/save/log intervals and counts must be >= 0 (eval_size >= 1)"),
    ])
    check_report_to(args.report_to)


def check_model_name(name: str):
    """A --model that can never load fails here, before anything heavy starts."""
    if name == "tiny" or name.startswith("tiny:"):
        if not re.fullmatch(r"tiny(:\d+)?", name):
            fail(f"--model {name!r}: write tiny or tiny:SEED with an integer seed")
        return
    if name.startswith("qwen2.5-0.5b-shape"):
        from common.qwen_shape import shape_layers

        shape_layers(name)  # raises its own one-line error for a bad layer count
        return
    path = os.path.expanduser(name)
    if os.path.exists(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            fail(f"--model {name!r}: a local model must be a folder with config.json (as save_pretrained writes)")
        return
    if name.startswith(("/", ".", "~")) or os.sep + os.sep in name:
        fail(f"--model {name!r}: no such folder")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name):
        fail(f"--model {name!r} is neither a local folder nor a hub id like Qwen/Qwen2.5-0.5B-Instruct")


# ---------------------------------------------------------------------------------------------- the run
class Run:
    """One training run's folder, clock, totals, logs, evaluations and checkpoints (see the module docstring).

    `totals` are the run's counters (a method may add its own before `start`), `state` is a method's
    resumable state (DPPO's prompt history, DGG's gate): both travel in every checkpoint."""

    def __init__(self, args, script_path: str, eval_rows: list):
        self.args, self.eval_rows = args, eval_rows
        self.script = os.path.splitext(os.path.basename(script_path))[0]
        check_model_name(args.model)
        random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
        self.device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                                   "cpu" if args.device == "auto" else args.device)
        self.config = {**dataclasses.asdict(args), "script": self.script}
        self.dir, self._ckpt = prepare(args, self.script)  # exits 0 if a resumed run is already complete
        self.reporter = Reporter(args.report_to, self.dir, self.config)
        self.totals, self.state = dict.fromkeys(TOTALS, 0), {}
        self.start_step, self.saved_step, self.first_eval, self.record, self.last_acc = 0, 0, None, None, None

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def start(self, model, tok, optimizer):
        """Restore a resumed run's weights, optimizer, totals, method state and every RNG (so it continues
        bit for bit); evaluate a fresh run's starting point (the step-0 record carries it)."""
        from common.rollout import encode_prompts

        self.model, self.tok, self.optimizer = model, tok, optimizer
        # one held-out prompt: the forward pass that tells whether updated weights are still usable
        self.probe = encode_prompts(tok, [self.eval_rows[0]["prompt"]], self.args.max_prompt_length, self.device)
        ckpt, self._ckpt = self._ckpt, None
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            random.setstate(ckpt["rng"]["python"])
            np.random.set_state(ckpt["rng"]["numpy"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if ckpt["rng"]["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu())
            self.start_step, self.totals, self.state = ckpt["step"], ckpt["totals"], ckpt.get("state", {})
            self.saved_step = self.start_step
        else:
            self.first_eval = self.evaluate()
            print(f"step 0: held-out {describe(self.first_eval)}")
            self.last_acc = headline(self.first_eval)

    def steps(self):
        """The step indices still to run, behind a progress bar; starts each step's clocks."""
        self.bar = trange(self.start_step, self.args.max_steps, desc=self.script, initial=self.start_step,
                          total=self.args.max_steps)
        for step in self.bar:
            self.step, self._t_step, self._cpu_step = step, time.time(), time.process_time()
            self._t_lap = self._t_step
            rollout.GENERATE_CALLS.clear()  # from here on, the calls are this step's (evaluations ran before)
            yield step

    def lap(self) -> float:
        """Seconds since the step began or since the last lap: each phase's `time/...` metric."""
        now = time.time()
        seconds, self._t_lap = now - self._t_lap, now
        return seconds

    def evaluate(self) -> dict:
        """Held-out accuracy (greedy, and sampled unless eval_num_samples is 0) under its own fixed RNG."""
        from common.rollout import evaluate

        a, t = self.args, time.time()
        out = evaluate(self.model, self.tok, self.eval_rows, a.max_prompt_length, a.max_completion_length,
                       a.eval_num_samples, bf16=a.bf16, sampler=a.sampler)
        if a.eval_num_samples == 0:
            del out["eval/sampled_acc"]  # nothing was sampled: no number at all, rather than a misleading 0
        return {**out, "time/eval": time.time() - t}

    def log_samples(self, rows, owner, texts, rewards, advantages, num_generations):
        """Every log_samples_every steps, the step's first two groups as scored, to samples.jsonl."""
        if not self.args.log_samples_every or self.step % self.args.log_samples_every:
            return
        with open(self.path("samples.jsonl"), "a") as f:
            for i in range(min(2 * num_generations, len(texts))):
                f.write(json.dumps({"step": self.step, "prompt": rows[owner[i]]["prompt"], "completion": texts[i],
                                    "reward": rewards[i].item(), "advantage": advantages[i].item()}) + "\n")

    def optimizer_step(self, max_grad_norm: float, loss_is_finite: bool = True) -> float:
        """Clip the gradient and step, unless it is non-finite (NaN must never reach the weights) or exactly
        zero (Adam's momentum alone would move them): skipped and counted. Returns the norm before clipping."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        if not (torch.isfinite(grad_norm) and loss_is_finite):
            self.totals["skipped/nonfinite_total"] += 1
        elif grad_norm == 0:
            self.totals["skipped/degenerate_total"] += 1
        else:
            self.optimizer.step()
            self.totals["updates_total"] += 1
            self.check_weights()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm.item()

    def check_weights(self):
        """Stop, before anything is saved, once the weights are no longer usable: a finite update can still
        be so large (say --learning_rate 1e10) that the logits overflow. One fused norm and a forward pass
        over one short prompt: cheap next to a step."""
        if not weights_usable(self.model, *self.probe):
            saved = f"the last checkpoint holds step {self.saved_step}" if self.saved_step else "no checkpoint was written"
            fail(f"training diverged at step {self.step}: the weights give non-finite logits (is --learning_rate "
                 f"too high?). Nothing was saved after it; {saved}")

    def log(self, metrics: dict, lengths: torch.Tensor, truncated: torch.Tensor):
        """End of a step: totals, completion statistics, the evaluation when due, one metrics.jsonl record
        (and the tracker's copy), a checkpoint when due. `lengths` and `truncated` describe every
        completion generated this step; `metrics` must hold the update's tokens/trained."""
        a, step, done = self.args, self.step, self.step + 1
        record = {"step": step, **metrics, "time/step": time.time() - self._t_step,
                  "rollouts/generate_calls": len(rollout.GENERATE_CALLS)}  # rounds of generation, as they happened
        t = self.totals
        t["time/train_total"] += record["time/step"]
        t["time/train_cpu_total"] += time.process_time() - self._cpu_step  # CPU seconds: robust to a busy machine
        t["tokens/generated_total"] += int(lengths.sum())
        t["tokens/trained_total"] += record["tokens/trained"]
        t["rollouts/generated_total"] += lengths.numel()
        record.update(t)
        record.update({"tokens/generated": int(lengths.sum()), "completions/mean_length": lengths.float().mean().item(),
                       "completions/min_length": int(lengths.min()), "completions/max_length": int(lengths.max()),
                       "completions/clipped_ratio": truncated.float().mean().item(), "learning_rate": a.learning_rate})
        if step == 0 and self.first_eval:
            record.update(self.first_eval)  # the step-0 record carries the warm start's accuracy
        if (a.eval_every and done % a.eval_every == 0) or done == a.max_steps:
            record.update({k.replace("eval/", "eval_after/"): v for k, v in self.evaluate().items()})
            self.last_acc = headline(record, "eval_after/")
        self.record = record
        append_jsonl(self.path("metrics.jsonl"), record)
        self.reporter.log(record)
        if (a.save_every and done % a.save_every == 0) or done == a.max_steps:
            self.save_checkpoint(done)
        self.bar.set_postfix(reward=f"{record['reward']:.2f}", acc="-" if self.last_acc is None else f"{self.last_acc:.2f}")

    def save_checkpoint(self, step: int):
        """Everything `start` needs to continue bit for bit, written atomically; a failed write (a full
        disk) leaves the previous checkpoint and a resumable run, and stops with one line."""
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
        blob = {"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "totals": self.totals, "rng": rng, "state": self.state, "config": self.config}
        atomic_write(self.path("checkpoint.pt"), lambda tmp: torch.save(blob, tmp), f"the checkpoint of step {step}")
        self.saved_step = step

    def finish(self) -> dict:
        """final/ (and, for a run resumed only to finish, the final evaluation), then the summary line."""
        if self.record is None:  # resumed at max_steps: final/ was missing or partial
            self.complete_log()
        save_final(self.model, self.tok, self.dir)
        self.reporter.close()
        last = {k.replace("eval_after/", "eval/"): v for k, v in self.record.items() if k.startswith("eval_after/")}
        if self.first_eval:
            print(f"held-out accuracy: {describe(self.first_eval, last)} "
                  f"({self.totals['time/train_total']:.0f}s of training) in {self.dir}")
        return {"first_eval": self.first_eval, "last_eval": last, "run_dir": self.dir, "totals": self.totals}

    def complete_log(self):
        """The last step's record gets its final evaluation if the run stopped before writing it."""
        path = self.path("metrics.jsonl")
        records = read_jsonl(path)
        last = records[-1] if records and records[-1]["step"] == self.start_step - 1 else {"step": self.start_step - 1}
        if not any(k.startswith("eval_after/") for k in last):
            last = {**last, **{k.replace("eval/", "eval_after/"): v for k, v in self.evaluate().items()}}
            records = [r for r in records if r["step"] != last["step"]] + [last]
            atomic_write(path, lambda tmp: write_jsonl(tmp, records), "metrics.jsonl")
        self.record = last
        print(f"{self.dir}: the run had reached step {self.start_step} but final/ was missing or partial: writing it now")


def describe(first: dict, last: dict | None = None) -> str:
    """"greedy 0.500, sampled 0.412" (or "greedy 0.500 -> 0.700, ..." with a second evaluation)."""
    parts = []
    for name in ("greedy", "sampled"):
        key = f"eval/{name}_acc"
        if key in first:
            parts.append(f"{name} {first[key]:.3f}" + (f" -> {last[key]:.3f}" if last and key in last else ""))
    return ", ".join(parts)


def headline(record: dict, prefix: str = "eval/"):
    """The progress bar's accuracy: sampled when it was measured, else greedy."""
    return record.get(f"{prefix}sampled_acc", record.get(f"{prefix}greedy_acc"))


class UpdateStats:
    """Token means over one step's update of what TRL logs (loss, entropy, kl, clip ratios), the gradient
    norms of its optimiser steps, and what it trained on (tokens/trained, rollouts/trained)."""

    def __init__(self, num_tokens: int, num_iterations: int):
        self.num_tokens, self.num_iterations = max(num_tokens, 1), num_iterations
        self.values = dict.fromkeys(["loss", "entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean"], 0.0)
        self.grad_norms, self.tokens, self.rollouts = [], 0, 0

    def add(self, loss, mask, clipped_low, clipped_high, entropy=None, logp=None, ref_logp=None):
        """One micro-batch: its loss (already normalised for the whole step) and its token indicators."""
        v = self.values
        self.tokens += int(mask.sum())
        self.rollouts += len(mask)
        w = mask.float() / self.num_tokens / self.num_iterations  # token-mean weights
        v["loss"] += loss.item() / self.num_iterations
        v["clip_ratio/low_mean"] += (clipped_low * w).sum().item()
        v["clip_ratio/high_mean"] += (clipped_high * w).sum().item()
        if entropy is not None:
            v["entropy"] += (entropy * mask).sum().item() / self.num_tokens
        if ref_logp is not None:
            d = (ref_logp - logp).detach()
            v["kl"] += ((torch.exp(d) - d - 1) * w).sum().item()

    @property
    def loss_is_finite(self) -> bool:
        return bool(np.isfinite(self.values["loss"]))

    def metrics(self, beta: float) -> dict:
        out = {**self.values, "grad_norm": float(np.mean(self.grad_norms)) if self.grad_norms else 0.0,
               "clip_ratio/region_mean": self.values["clip_ratio/low_mean"] + self.values["clip_ratio/high_mean"],
               "tokens/trained": self.tokens, "rollouts/trained": self.rollouts}
        if beta == 0:
            del out["kl"]  # no reference model: nothing measured
        return out


# ---------------------------------------------------------------------------------------------- files
def run_dir(args, script: str) -> str:
    name = args.run_name or f"{script}_{args.task}_seed{args.seed}"
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        fail(f"--run_name {name!r} must be a plain folder name (no '/', not '..'): runs live in --output_dir")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        fail(f"--output_dir {args.output_dir!r} is a file, not a folder")
    return os.path.join(args.output_dir, name)


def _writable(path: str):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        fail(f"cannot write the run folder {path!r}: {e.strerror or e}")


def atomic_write(path: str, write, what: str):
    """write(tmp) then rename over `path`: a kill or a full disk mid-write leaves the old file whole."""
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        if os.path.exists(tmp):
            os.remove(tmp)
        fail(f"could not write {what} to {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}; "
             f"is the disk full?). The previous version is intact: free some space and --resume")


def write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
    atomic_write(path, write, os.path.basename(path))


def finite_json(record: dict) -> str:
    """A JSON line; a non-finite float becomes null (JSON has no NaN or Infinity)."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()})


def append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(finite_json(record) + "\n")


def write_jsonl(path: str, records: list) -> None:
    with open(path, "w") as f:
        f.writelines(finite_json(r) + "\n" for r in records)


def read_jsonl(path: str) -> list[dict]:
    """The intact records of a log: a torn line (a kill mid-append) or a hand-edited record without an
    integer step is dropped."""
    out = []
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("step"), int):
                    out.append(record)
    return out


def _trim_jsonl(path: str, start_step: int) -> None:
    """Drop the records a resumed run will write again (and torn lines). When they are a tail of the file
    it is cut in place, which needs no free disk space: a run stopped by a full disk resumes on that disk."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        lines = f.readlines()
    keep = [_earlier(line, start_step) for line in lines]
    whole = next((i for i, k in enumerate(keep) if not k), len(lines))  # the prefix that stays as it is
    if not any(keep[whole:]):
        os.truncate(path, sum(map(len, lines[:whole])))
        return

    def rewrite(tmp):
        with open(tmp, "wb") as f:
            f.writelines(line for line, k in zip(lines, keep) if k)
    atomic_write(path, rewrite, os.path.basename(path))


def _earlier(line: bytes, start_step: int) -> bool:
    """A whole record (newline included) of a step before start_step."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return line.endswith(b"\n") and isinstance(record, dict) and isinstance(record.get("step"), int) \
        and record["step"] < start_step


def final_complete(path: str) -> bool:
    """final/ holds a whole model: a config and weights (save_pretrained writes them last to first)."""
    final = os.path.join(path, "final")
    return os.path.isfile(os.path.join(final, "config.json")) and any(
        f.endswith((".safetensors", ".bin")) or f == "model.safetensors.index.json" for f in os.listdir(final)) \
        if os.path.isdir(final) else False


def _holds_a_run(path: str) -> bool:
    """A checkpoint, a final model or any logged step: what a fresh run must not silently mix with."""
    metrics = os.path.join(path, "metrics.jsonl")
    return (os.path.exists(os.path.join(path, "checkpoint.pt")) or os.path.exists(os.path.join(path, "final"))
            or (os.path.isfile(metrics) and os.path.getsize(metrics) > 0))


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        fail(f"--resume: no checkpoint at {path}: the run stopped before its first checkpoint, so there is "
             f"nothing to resume; start it again with --overwrite")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        assert isinstance(ckpt, dict) and {"step", "model", "optimizer", "totals", "rng"} <= ckpt.keys()
    except Exception as e:  # a truncated or foreign file can fail in many ways inside torch.load
        fail(f"--resume: the checkpoint {path} is unreadable ({type(e).__name__}); it is truncated or not "
             f"one of ours. Start again with --overwrite")
    return ckpt


def prepare(args, script: str):
    """Check and set up the run folder. Returns (run_dir, checkpoint or None). Exits 0 when a resumed
    run is already complete; never touches a model."""
    path = run_dir(args, script)
    config = {**dataclasses.asdict(args), "script": script}
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(os.path.join(path, "checkpoint.pt"))
        saved = ckpt.get("config") or {}
        differ = [k for k in sorted(set(saved) | set(config)) if k not in RESUMABLE and saved.get(k) != config.get(k)]
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in differ)
            fail(f"--resume: {path} was trained with other settings ({shown}); resume with the saved ones "
                 f"(see its config.json) or start a new run")
        if ckpt["step"] >= args.max_steps and final_complete(path):
            print(f"{path}: already complete ({ckpt['step']} of {args.max_steps} steps); nothing to do")
            raise SystemExit(0)
        _writable(path)
        for name in ("metrics.jsonl", "samples.jsonl"):
            _trim_jsonl(os.path.join(path, name), ckpt["step"])
        if os.path.exists(os.path.join(path, "checkpoint.pt.tmp")):
            os.remove(os.path.join(path, "checkpoint.pt.tmp"))  # the remains of a write that never finished
    else:
        if _holds_a_run(path):
            if not args.overwrite:
                started = os.path.exists(os.path.join(path, "checkpoint.pt")) or os.path.exists(os.path.join(path, "final"))
                fail(f"{path} already holds a run; " + ("pass --resume to continue it or --overwrite to replace it"
                     if started else "it stopped before its first checkpoint (nothing to resume): pass --overwrite "
                     "to start it again"))
            for f in RUN_FILES:
                if os.path.exists(os.path.join(path, f)):
                    os.remove(os.path.join(path, f))
            for folder in ("final", "final.tmp", "tensorboard"):  # the run's own folders, nothing else
                shutil.rmtree(os.path.join(path, folder), ignore_errors=True)
        _writable(path)
        for name in ("metrics.jsonl", "samples.jsonl"):
            open(os.path.join(path, name), "w").close()
    write_json(os.path.join(path, "config.json"), config)
    return path, ckpt


def save_final(model, tok, run_dir: str) -> None:
    """final/ is written beside the old one and swapped in, so it is never half-written."""
    final, tmp = os.path.join(run_dir, "final"), os.path.join(run_dir, "final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from common.tiny import quiet_transformers

    try:
        with quiet_transformers():  # no "Writing model shards" bar at the end of every run
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    except (OSError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        fail(f"could not write {final} ({e}; is the disk full?). The checkpoint is intact: free some space and --resume")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def weights_usable(model, input_ids=None, attention_mask=None) -> bool:
    """All parameters finite (one fused norm: finite exactly when every element is, short of an overflow
    of the squares, a blow-up all the same), and a forward pass over `input_ids` (default: one token)
    gives finite logits."""
    params = [p.detach() for p in model.parameters()]
    if not bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
        return False
    if input_ids is None:
        input_ids = torch.zeros(1, 1, dtype=torch.long, device=params[0].device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ok = bool(torch.isfinite(model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits).all())
    model.train(was_training)
    return ok
