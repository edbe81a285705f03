"""scale/train.py: flags, batch geometry, the run-folder rules, and short runs in one process and two (gloo).

The plug-ins' loss and gradient against the scripts are in tests/test_scale_plugins.py. Run as a script,
this file is the worker that the two-process test starts with `accelerate launch`.
"""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("trl")
pytest.importorskip("accelerate")

import grpo  # noqa: E402
from scale import train  # noqa: E402
from scale import trainers as T  # noqa: E402

# A small step: 4 prompts x 8 completions; seed 1 at temperature 1.5 gives mixed groups.
SMALL = ["--seed", "1", "--temperature", "1.5", "--max_steps", "2", "--prompts_per_step", "4", "--num_generations", "8",
         "--micro_batch_size", "16", "--max_completion_length", "24", "--eval_every", "0", "--eval_size", "4",
         "--eval_num_samples", "0", "--save_every", "0", "--learning_rate", "1e-3"]
METHOD_ARGS = {"pods": ["--num_keep", "4"], "cppo": ["--prune_rate", "0.5", "--allocation", "false"],
               "d3s": ["--sample_ratio_start", "0.5", "--token_ratio_start", "0.5"],
               "dppo": ["--completion_prune_rate", "0.5", "--completion_pool", "0.75"],
               "dgg": ["--num_iterations", "2"]}


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_defaults_and_batch_geometry():
    """Defaults come from the method script; the geometry bounds the trained micro-batch; the configs are TRL's."""
    from trl import GRPOConfig

    launch, config, _, _, _, geometry = train.parse(["--method", "pods"])
    assert isinstance(config, T.PODSConfig) and isinstance(config, GRPOConfig)
    assert (config.num_generations, config.num_keep, config.learning_rate, config.lr_scheduler_type) == (16, 8, 1e-4, "constant")
    assert geometry == {"prompts_per_step": 16, "num_processes": 1, "rows_generated_per_process": 256, "rows_trained": 128,
                        "gradient_accumulation_steps": 2, "per_device_train_batch_size": 128, "trained_rows_per_micro_batch": 64}
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps, config.steps_per_generation) == (128, 2, 2)
    g = train.batch_geometry("cppo", dict(prompts_per_step=16, num_generations=8, micro_batch_size=64, allocation=True,
                                          prune_rate=0.75, num_keep=None), 2)
    assert (g["prompts_per_step"], g["rows_generated_per_process"], g["rows_trained"], g["gradient_accumulation_steps"]) == \
        (64, 256, 128, 1)
    assert train.parse(["--method", "dppo"])[1].loss_type == "grpo"
    assert train.parse(["--method", "dgg"])[1].num_iterations == 4
    # every GRPOConfig field is a flag: here vLLM's server address and a TRL-only loss
    config = train.parse(["--method", "cppo", "--vllm_server_host", "10.0.0.2", "--loss_type", "bnpo"])[1]
    assert (config.vllm_server_host, config.loss_type) == ("10.0.0.2", "bnpo")


@pytest.mark.parametrize("flags, message", [
    (["--method", "pods", "--num_keepp", "4"], "unrecognized arguments: --num_keepp"),
    (["--method", "pods", "--num_keep", "1"], "num_keep must be in"),
    (["--method", "nope"], "unknown --method"),
    (["--method", "dppo", "--completion_prune_rate", "0.8"], r"completion_prune_rate must be in \[0, completion_pool\)"),
    (["--method", "grpo", "--prompts_per_step", "3", "--num_generations", "3"], None),
    (["--method", "grpo", "--learning_rate", "nan"], "finite"),
    (["--method", "pods", "--per_device_train_batch_size", "16", "--prompts_per_step", "4"], "not both"),
    (["--method", "cppo", "--dataset_name", "x.jsonl"], "needs --reward_funcs"),
    (["--method", "cppo", "--run_name", "../escaped"], "plain folder name"),
])
def test_bad_flags_are_one_line(flags, message, tmp_path):
    if message is None:  # 9 rows cannot split over 2 processes
        with pytest.raises(SystemExit, match="do not split over 2"):
            train.batch_geometry("grpo", dict(prompts_per_step=3, num_generations=3, micro_batch_size=8,
                                              allocation=False, prune_rate=None, num_keep=None), 2)
        return
    with pytest.raises(SystemExit, match="^error: .*" + message):
        train.main([*flags, "--output_dir", str(tmp_path), "--model", "/nonexistent"])


def test_cli_unknown_flag_is_one_line():
    proc = subprocess.run([sys.executable, "scale/train.py", "--method", "pods", "--num_keepp", "4"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == \
        "error: unrecognized arguments: --num_keepp 4 (see --help)", proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_run_folder_rules(tiny_path, tmp_path, monkeypatch):
    """A used folder is refused; --resume needs a checkpoint and the same training flags; --overwrite replaces
    only the run's files; a resumed run finishes with final/; metrics.jsonl has every step at num_iterations 2."""
    base = ["--method", "pods", *SMALL, *METHOD_ARGS["pods"], "--output_dir", str(tmp_path), "--run_name", "r",
            "--num_iterations", "2", "--beta", "0.04"]
    with pytest.raises(SystemExit, match="no checkpoint-N folder"):
        train.main([*base, "--resume"])
    out = train.main([*base, "--save_every", "1"])
    run = out["run_dir"]
    assert run == os.path.join(str(tmp_path), "r") and os.path.isdir(os.path.join(run, "final"))
    logged = records(run)
    assert [r["step"] for r in logged] == [0, 1]  # the reuse step (no new rewards) is recorded too
    assert "reward" in logged[0] and "reward" not in logged[1] and all("loss" in r for r in logged)
    with pytest.raises(SystemExit, match="already holds a run"):
        train.main(base)
    with pytest.raises(SystemExit, match=r"learning_rate: 0\.001 -> 0\.5"):
        train.main([*base, "--save_every", "1", "--resume", "--learning_rate", "0.5"])
    open(os.path.join(run, "notes.txt"), "w").close()
    out = train.main([*base, "--save_every", "1", "--resume", "--max_steps", "3"])  # max_steps may change
    assert out["trainer"].state.global_step == 3 and [r["step"] for r in records(run)] == [0, 1, 2]
    train.main([*base, "--overwrite", "--max_steps", "1"])
    assert os.path.exists(os.path.join(run, "notes.txt")) and not any(n.startswith("checkpoint-") for n in os.listdir(run))
    assert len(records(run)) == 1


def test_custom_dataset_and_lora(tiny_path, tmp_path):
    """--dataset_name with --reward_funcs, and LoRA (PEFT on a CPU) for two steps."""
    pytest.importorskip("peft")
    from common.tasks import load_task

    data = tmp_path / "data.jsonl"
    with open(data, "w") as f:
        for row in load_task("add", eval_size=2).train[:16]:
            f.write(json.dumps({"prompt": row["prompt"], "answer": row["answer"]}) + "\n")
    out = train.main(["--method", "cppo", *SMALL, *METHOD_ARGS["cppo"], "--output_dir", str(tmp_path), "--run_name", "lora",
                      "--dataset_name", str(data), "--reward_funcs", "correctness_reward", "--use_peft", "--lora_r", "4",
                      "--lora_target_modules", "q_proj", "v_proj", "--model", tiny_path])
    trainer = out["trainer"]
    lora = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # the adapters trained (lora_B starts at 0)
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" not in n)
    assert len(records(out["run_dir"])) == 2 and os.path.exists(os.path.join(out["run_dir"], "final", "adapter_config.json"))


def test_dgg_gate_skips_the_update_and_the_remaining_passes(tiny_path, tmp_path, monkeypatch):
    """When the gate fires at pass 2, the optimizer sees no gradient (weights and Adam state unchanged) and the
    next step generates a new batch instead of running pass 3."""
    fired = []
    monkeypatch.setattr(T.dgg.GradientGate, "should_drop", lambda self, g, k: fired.append(k) or k == 2)
    generated = []
    original = T.GRPOTrainer._generate_and_score_completions
    monkeypatch.setattr(T.GRPOTrainer, "_generate_and_score_completions",
                        lambda self, inputs: generated.append(self.state.global_step) or original(self, inputs))
    weights = []
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            weights.append(model.lm_head.weight.detach().clone())

    out = train.main(["--method", "dgg", *SMALL, "--num_iterations", "3", "--max_steps", "3", "--output_dir", str(tmp_path),
                      "--run_name", "gate"], callbacks=[Watch()])
    assert fired == [1, 2, 1]  # pass 3 of the first batch never ran
    logged = records(out["run_dir"])
    assert [r["dgg/pass"] for r in logged] == [1, 2, 1] and [r["dgg/fired"] for r in logged] == [0, 1, 0]
    assert logged[-1]["dgg/fired_total"] == 1 and logged[0]["dgg/lm_head_grad_norm"] > 0
    assert generated == [0, 2]  # a new batch at the third step
    assert torch.equal(weights[0], weights[1])  # the dropped pass changed nothing


def test_trl_loss_and_gradient_equal_grpo_py(tiny_path, tmp_path):
    """On one fixed batch TRL's GRPO loss and gradient are grpo.py's (ratios off 1, so the clip matters; KL on)."""
    from datasets import Dataset
    from trl import GRPOConfig

    from common.rollout import encode_prompts, generate, load_policy, per_token_logps
    from common.tasks import load_task

    torch.manual_seed(0)
    model, tok = load_policy(tiny_path, torch.device("cpu"))
    task = load_task("add", eval_size=1)
    rows, G, L_max = task.train[:4], 4, 48
    prompt_ids, prompt_mask = encode_prompts(tok, [r["prompt"] for r in rows], 256, "cpu")
    assert prompt_mask.min() == 0  # left padding present: position handling is part of what is compared
    completion_ids, completion_mask, _ = generate(model, tok, prompt_ids, prompt_mask, G, L_max)
    rewards = torch.tensor([1., 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0.5, 0])
    advantages = grpo.group_advantages(rewards, G)
    owner = torch.arange(4).repeat_interleave(G)
    ids, attention = torch.cat([prompt_ids[owner], completion_ids], 1), torch.cat([prompt_mask[owner], completion_mask], 1)
    L, N = completion_ids.size(1), 16
    with torch.no_grad():
        base = per_token_logps(model, ids, attention, L)[0]
    gen = torch.Generator().manual_seed(1)
    old, ref = base + 0.3 * torch.randn(N, L, generator=gen), base + 0.3 * torch.randn(N, L, generator=gen)
    beta = 0.04
    cfg = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=G, bf16=False,
                     use_bias_correction_kl=False, max_completion_length=L_max, beta=beta, epsilon=0.2, use_cpu=True,
                     report_to="none", save_strategy="no")
    trainer = T.GRPOTrainer(model=model, reward_funcs=task.reward_funcs, args=cfg, processing_class=tok,
                            train_dataset=Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]))
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model.train()
    for loss_type in ("dapo", "grpo", "dr_grpo"):  # the normalisers, see grpo.aggregate_loss
        trainer.loss_type = loss_type
        model.zero_grad()
        inputs = {"prompt_ids": prompt_ids[owner], "prompt_mask": prompt_mask[owner], "completion_ids": completion_ids,
                  "completion_mask": completion_mask, "advantages": advantages, "num_items_in_batch": completion_mask.sum(),
                  "old_per_token_logps": old, "ref_per_token_logps": ref}
        trl_loss = trainer.compute_loss(model, inputs)
        trl_loss.backward()
        trl_loss, theirs = trl_loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        logp, _ = per_token_logps(model, ids, attention, L)
        token_loss, low, high = grpo.clipped_token_loss(logp, old, advantages, 0.2, 0.2, ref, beta)
        assert low.any() or high.any()  # the batch exercises the clip
        loss = grpo.aggregate_loss(token_loss, completion_mask, loss_type, N, int(completion_mask.sum()), L_max)
        loss.backward()
        assert abs(loss.item() - trl_loss) < 1e-5 * max(1.0, abs(loss.item())), loss_type
        for n, p in model.named_parameters():
            assert torch.allclose(p.grad, theirs[n], rtol=1e-4, atol=1e-7), (loss_type, n)


def test_two_processes_through_the_launcher(tiny_path, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): PODS and DPPO (random kept counts, so
    padding) with gradient accumulation 2, no hang, the same rows on both processes, every step logged."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           os.path.abspath(__file__), str(tmp_path), "pods", "dppo"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for method in ("pods", "dppo"):
        with open(tmp_path / method / "config.json") as f:
            geometry = json.load(f)["geometry"]
        assert geometry["num_processes"] == 2 and geometry["gradient_accumulation_steps"] == 2
        logged = records(tmp_path / method)
        assert len(logged) == 2 and all(r["loss"] == r["loss"] and "reward" in r for r in logged)
        for r in logged:
            assert r["scale/rows_trained"] + r["scale/padding_rows"] == 2 * 2 * -(-r["scale/rows_trained"] // 4)
        with open(tmp_path / f"{method}_rows.json") as f:
            rows = json.load(f)
        assert rows["0"] == rows["1"]  # every micro-step trained as many rows on each process
    assert all(r["pods/kept_fraction"] == 0.5 for r in records(tmp_path / "pods"))


if __name__ == "__main__":  # the worker of test_two_processes_through_the_launcher
    torch.set_num_threads(1)
    out_dir, methods = sys.argv[1], sys.argv[2:]
    for method in methods:
        seen = []
        original = T.SelectingGRPOTrainer._compute_loss

        def counting(self, model, inputs, original=original, seen=seen):
            seen.append(inputs["completion_ids"].size(0))
            return original(self, model, inputs)

        T.SelectingGRPOTrainer._compute_loss = counting
        # 16 kept rows (PODS) or up to 32 (DPPO) over 2 processes, at most 4 or 8 per micro-batch: GA 2 for both
        out = train.main(["--method", method, *SMALL, *METHOD_ARGS[method], "--micro_batch_size", {"pods": "4", "dppo": "8"}[method],
                          "--output_dir", out_dir, "--run_name", method])
        T.SelectingGRPOTrainer._compute_loss = original
        rank = out["trainer"].accelerator.process_index
        everyone = [None, None]
        torch.distributed.all_gather_object(everyone, seen)
        if rank == 0:
            with open(os.path.join(out_dir, f"{method}_rows.json"), "w") as f:
                json.dump({"0": everyone[0], "1": everyone[1]}, f)
    train.close_process_group()
