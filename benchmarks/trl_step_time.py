"""Per-step wall time of grpo.py against TRL's GRPOTrainer on the identical setting.

Same tiny model (the cached warm start), same prompts, 16 prompts x 8 completions per step, 64 new
tokens at most, temperature 1, beta 0, num_iterations 1, loss_type dapo, learning rate 1e-4, two
micro-batches of 64 sequences, CPU. TRL is needed only here:  pip install trl==1.16.0 accelerate

    python benchmarks/trl_step_time.py --steps 15 --warmup 3

Reports the median step time over the steps after the warm-up, for each trainer.
"""

import argparse
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


def time_ours(model_path, steps, out_dir):
    args = grpo.Args(model=model_path, max_steps=steps, eval_every=0, eval_size=1, eval_num_samples=0,
                     save_every=0, log_samples_every=0, output_dir=out_dir, run_name="ours")
    grpo.main(args)
    import json
    with open(os.path.join(out_dir, "ours", "metrics.jsonl")) as f:
        return [json.loads(line)["time/step"] for line in f]


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
    a = p.parse_args()
    model_path = ensure_tiny()
    with tempfile.TemporaryDirectory() as out:
        ours = time_ours(model_path, a.steps, out)[a.warmup:]
        trl = time_trl(model_path, a.steps, out)[a.warmup:]
    mo, mt = statistics.median(ours), statistics.median(trl)
    print(f"\nmedian step time over {a.steps - a.warmup} steps (16 prompts x 8 completions, CPU, "
          f"{torch.get_num_threads()} threads):")
    print(f"  grpo.py          {mo:.3f} s   (min {min(ours):.3f}, max {max(ours):.3f})")
    print(f"  TRL GRPOTrainer  {mt:.3f} s   (min {min(trl):.3f}, max {max(trl):.3f})")
    print(f"  ratio grpo.py / TRL = {mo / mt:.2f}")


if __name__ == "__main__":
    main()
