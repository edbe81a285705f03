"""Per-step wall time of grpo.py against TRL's GRPOTrainer on the identical setting.

Same tiny model (the cached warm start), same prompts, 16 prompts x 8 completions per step, 64 new
tokens at most, temperature 1, beta 0, num_iterations 1, loss_type dapo, learning rate 1e-4, two
micro-batches of 64 sequences, CPU. TRL is needed only here:  pip install trl==1.16.0 accelerate

    python benchmarks/trl_step_time.py --steps 15 --warmup 3                   # grpo.py with its default sampler
    python benchmarks/trl_step_time.py --steps 15 --warmup 3 --sampler lean hf  # both of grpo.py's samplers

Reports the median step time over the steps after the warm-up, for each trainer (and each grpo.py
sampler: "lean" = common/sampler.py, "hf" = HF `generate`), with the median generation time of
grpo.py's steps. --runs N repeats everything N times, alternating the trainers, and reports the
median of the per-run medians (the README's protocol: a quiet machine, several runs).
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import grpo  # noqa: E402
from common.tasks import correctness_reward, load_task  # noqa: E402
from common.tiny import ensure_tiny  # noqa: E402


def time_ours(model_path, steps, out_dir, sampler=None):
    """Per-step wall times and generation times of grpo.py (sampler None: grpo.py's default)."""
    extra = {} if sampler is None else {"sampler": sampler}
    run_name = f"ours_{sampler or 'default'}_{len(os.listdir(out_dir))}"
    args = grpo.Args(model=model_path, max_steps=steps, eval_every=0, eval_size=1, eval_num_samples=0,
                     save_every=0, log_samples_every=0, output_dir=out_dir, run_name=run_name, **extra)
    grpo.main(args)
    with open(os.path.join(out_dir, run_name, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [r["time/step"] for r in records], [r["time/generate"] for r in records]


def time_trl(model_path, steps, out_dir):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    task = load_task("add")
    data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in task.train[:4000]])
    tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    cfg = GRPOConfig(output_dir=os.path.join(out_dir, "trl"), max_steps=steps, per_device_train_batch_size=64,
                     gradient_accumulation_steps=2, num_generations=8, max_completion_length=64,
                     temperature=1.0, top_p=1.0, top_k=0, learning_rate=1e-4, beta=0.0, num_iterations=1,
                     loss_type="dapo", scale_rewards="group", max_grad_norm=1.0, lr_scheduler_type="constant",
                     warmup_steps=0, weight_decay=0.0, logging_steps=1, save_strategy="no", report_to="none",
                     use_cpu=True, bf16=False, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    times, last = [], [time.perf_counter()]

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

    trainer = GRPOTrainer(model=model, reward_funcs=correctness_reward, args=cfg, train_dataset=data,
                          processing_class=tok, callbacks=[Clock()])
    last[0] = time.perf_counter()
    trainer.train()
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sampler", nargs="+", default=None, choices=["lean", "hf"],
                   help="grpo.py's sampler(s) to time (default: grpo.py's own default)")
    p.add_argument("--runs", type=int, default=1, help="repeat everything, alternating the trainers")
    p.add_argument("--skip_trl", action="store_true", help="time grpo.py only (no TRL needed)")
    a = p.parse_args()
    if a.steps <= a.warmup or a.runs < 1:
        raise SystemExit("error: need --steps > --warmup and --runs >= 1")
    if a.sampler and "sampler" not in {f.name for f in dataclasses.fields(grpo.Args)}:
        raise SystemExit("error: this grpo.py has no --sampler flag yet")
    model_path = ensure_tiny()
    samplers = a.sampler or [None]
    step, gen, trl = {s: [] for s in samplers}, {s: [] for s in samplers}, []  # per-run medians
    with tempfile.TemporaryDirectory() as out:
        for _ in range(a.runs):
            for s in samplers:
                times, gen_times = time_ours(model_path, a.steps, out, s)
                step[s].append(statistics.median(times[a.warmup:]))
                gen[s].append(statistics.median(gen_times[a.warmup:]))
            if not a.skip_trl:
                trl.append(statistics.median(time_trl(model_path, a.steps, out)[a.warmup:]))
    med = statistics.median
    spread = lambda xs: f"(runs: {', '.join(f'{x:.3f}' for x in xs)})" if len(xs) > 1 else ""  # noqa: E731
    print(f"\nmedian step time over steps {a.warmup}..{a.steps - 1}, median of {a.runs} run(s) "
          f"(16 prompts x 8 completions, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}):")
    for s in samplers:
        name = f"grpo.py ({s or 'default'} sampler)"
        print(f"  {name:28s} {med(step[s]):.3f} s   generate {med(gen[s]):.3f} s   {spread(step[s])}")
    if trl:
        print(f"  {'TRL GRPOTrainer':28s} {med(trl):.3f} s   {spread(trl)}")
        for s in samplers:
            print(f"  ratio grpo.py ({s or 'default'}) / TRL = {med(step[s]) / med(trl):.2f}")


if __name__ == "__main__":
    main()
