"""scale/: the methods as TRL GRPOTrainer plug-ins, in one process and in two (gloo) on the tiny model.

Skipped where TRL is not installed (pip install -r requirements-scale.txt; CI installs it). Run as a
script, this file is the worker that the two-process test starts with `accelerate launch`.
"""

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("trl")
pytest.importorskip("accelerate")

import cppo  # noqa: E402
import d3s  # noqa: E402
import grpo  # noqa: E402
import pods  # noqa: E402
from scale import train  # noqa: E402
from scale import trainers as T  # noqa: E402

# A small step: 4 prompts x 8 completions (CPPO's allocation draws 8 prompts), micro-batches of 16;
# seed 1 at temperature 1.5 gives mixed groups (most groups of the warm start are all right or all wrong).
SMALL = ["--seed", "1", "--temperature", "1.5", "--max_steps", "2", "--prompts_per_step", "4", "--num_generations", "8", "--micro_batch_size", "16",
         "--max_completion_length", "48", "--eval_every", "0", "--eval_size", "8", "--eval_num_samples", "0",
         "--save_every", "0", "--learning_rate", "1e-3"]
METHOD_ARGS = {"pods": ["--num_keep", "4"], "cppo": ["--prune_rate", "0.5"],
               "d3s": ["--max_steps", "1", "--sample_ratio_start", "0.5", "--token_ratio_start", "0.5"],
               "dppo": ["--max_steps", "1", "--completion_prune_rate", "0.5", "--completion_pool", "0.75"]}


# ---------------------------------------------------------------------------------------------
# The worker: run methods through scale/train.py's main and record what each selection did
# ---------------------------------------------------------------------------------------------
@contextmanager
def recording(records: list):
    """Wrap select, _keep_rows and _compute_loss of the plug-ins; restore them afterwards."""
    saved = {(cls, name): cls.__dict__[name] for cls in (T.PODSTrainer, T.CPPOTrainer, T.D3STrainer, T.DPPOTrainer)
             for name in ("select",)}
    saved[(T.SelectingGRPOTrainer, "_keep_rows")] = T.SelectingGRPOTrainer._keep_rows
    saved[(T.SelectingGRPOTrainer, "_compute_loss")] = T.SelectingGRPOTrainer.__dict__.get("_compute_loss")

    def wrap_select(original):
        def select(self, out, rewards, all_rewards):
            G = self.num_generations
            before = {k: v.clone() for k, v in out.items() if torch.is_tensor(v)}
            self._last_kept = None
            result = original(self, out, rewards, all_rewards)
            prompts = before["prompt_ids"].view(-1, G, before["prompt_ids"].size(1))
            loss_mask = result["completion_mask"] * result.get("tool_mask", 1)
            records.append({
                "kind": "select", "method": self.method, "rank": self.accelerator.process_index,
                "step": self.state.global_step, "rewards": rewards.tolist(), "all_rewards": all_rewards.tolist(),
                "adv_before": before["advantages"].tolist(), "adv_after": result["advantages"].tolist(),
                "groups_whole": bool((prompts == prompts[:, :1]).all()),
                "kept": None if self._last_kept is None else self._last_kept.tolist(),
                "rows_after": result["completion_ids"].size(0), "num_items": int(result["num_items_in_batch"]),
                "local_loss_tokens": int(loss_mask.sum()),
                "kept_tokens_before_mask": int(result["completion_mask"].sum()),
                "kept_rows_match": self._last_kept is None or bool(torch.equal(
                    result["completion_ids"], before["completion_ids"][self._last_kept.to(before["completion_ids"].device)]))})
            return result
        return select

    def keep_rows(self, out, kept):
        self._last_kept = kept.clone()
        return saved[(T.SelectingGRPOTrainer, "_keep_rows")](self, out, kept)

    def compute_loss(self, model, inputs):
        records.append({"kind": "loss", "method": self.method, "rank": self.accelerator.process_index,
                        "step": self.state.global_step, "rows": inputs["completion_ids"].size(0)})
        return T.GRPOTrainer._compute_loss(self, model, inputs)

    try:
        for cls in (T.PODSTrainer, T.CPPOTrainer, T.D3STrainer, T.DPPOTrainer):
            cls.select = wrap_select(saved[(cls, "select")])
        T.SelectingGRPOTrainer._keep_rows = keep_rows
        T.SelectingGRPOTrainer._compute_loss = compute_loss
        yield records
    finally:
        for (cls, name), fn in saved.items():
            if fn is None:
                delattr(cls, name)
            else:
                setattr(cls, name, fn)


def run_methods(out_dir: str, methods: list[str]) -> list:
    records = []
    with recording(records):
        for method in methods:
            train.main(["--method", method, *SMALL, *METHOD_ARGS[method], "--output_dir", out_dir, "--run_name", method])
    return records


# ---------------------------------------------------------------------------------------------
# What every run must show
# ---------------------------------------------------------------------------------------------
def check_records(records: list, out_dir: str, methods: list[str], num_processes: int):
    selects = [r for r in records if r["kind"] == "select"]
    for method in methods:
        mine = [r for r in selects if r["method"] == method]
        assert mine and {r["rank"] for r in mine} == set(range(num_processes))
        for step in {r["step"] for r in mine}:
            at = [r for r in mine if r["step"] == step]
            rows = {r["rows_after"] for r in at}
            assert len(rows) == 1, f"{method}: kept counts differ across processes {rows}"
            assert sum(r["local_loss_tokens"] for r in at) == at[0]["num_items"]  # dapo's normaliser, recounted
            trained = [r["rows"] for r in records if r["kind"] == "loss" and r["method"] == method and r["step"] == step]
            assert sum(trained) == rows.pop() * num_processes  # TRL trains on the kept rows, and only those
        for r in mine:
            assert r["kept_rows_match"]
            check_selection(method, r)
        assert any(any(a != 0 for a in r["adv_after"]) for r in mine)  # the checks saw a learning signal
        with open(os.path.join(out_dir, method, "metrics.jsonl")) as f:
            logged = [json.loads(line) for line in f]
        assert len(logged) == (1 if method in ("d3s", "dppo") else 2)
        assert all(f"{method}/" + name in rec for rec in logged for name in
                   {"pods": ["kept_fraction", "reward_var_before", "reward_var_after"],
                    "cppo": ["kept_fraction", "abs_adv_kept", "abs_adv_pruned", "prompts_per_step"],
                    "d3s": ["sample_ratio", "token_ratio", "samples_kept", "tokens_kept"],
                    "dppo": ["completions_kept"]}[method])
        assert all(rec["reward"] == rec["reward"] and "loss" in rec for rec in logged)  # no NaN
        with open(os.path.join(out_dir, method, "config.json")) as f:
            assert json.load(f)["geometry"]["num_processes"] == num_processes


def check_selection(method: str, r: dict):
    rewards, before, after = torch.tensor(r["rewards"]), torch.tensor(r["adv_before"]), torch.tensor(r["adv_after"])
    G = 8
    if method == "pods":  # exactly m per prompt, chosen by pods.py's rule, advantages recomputed on the kept m
        assert r["groups_whole"]
        expected = torch.cat([g * G + pods.select_max_variance(rewards[g * G:(g + 1) * G], 4) for g in range(len(rewards) // G)])
        assert r["kept"] == expected.tolist()
        assert torch.allclose(after, pods.group_advantages(rewards[expected], 4), atol=1e-6)
        assert all(len([k for k in r["kept"] if k // G == g]) == 4 for g in range(len(rewards) // G))
    elif method == "cppo":  # the rollouts prune_completions keeps on this process, advantages as TRL made them
        assert r["kept"] == cppo.prune_completions(before, 0.5).tolist()
        assert torch.equal(after, before[r["kept"]])
    elif method == "d3s":  # max-Var(A) half of the rows, then half of their tokens (as a loss-only mask)
        assert r["kept"] == d3s.select_max_variance(before, len(before) // 2).tolist()
        assert torch.equal(after, before[r["kept"]])
        assert r["local_loss_tokens"] == int(0.5 * r["kept_tokens_before_mask"] + 1e-9)
    elif method == "dppo":  # every row stays; pruned completions get weight 0, survivors 1 / (1 - q)
        q = 0.5 * G / 6  # rate n / pool size; the pool is the ceil(0.75 x 8) = 6 smallest |A| of each group
        for g in range(len(before) // G):
            pool = set(torch.sort(before[g * G:(g + 1) * G].abs(), stable=True).indices[:6].tolist())
            for i in range(G):
                a, b = after[g * G + i].item(), before[g * G + i].item()
                if i not in pool:
                    assert a == b
                else:
                    assert a == 0 or abs(a - b / (1 - q)) < 1e-5


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------
def test_flags_and_batch_geometry():
    """Defaults come from the method script; the geometry puts whole groups on each process; bad input is one error line."""
    args = train.resolve(train.ScaleArgs(method="pods"))
    assert (args.num_generations, args.num_keep, args.micro_batch_size) == (16, 8, 64)
    assert train.batch_geometry(args, 1) == {
        "prompts_per_step": 16, "num_processes": 1, "rows_generated_per_process": 256, "rows_trained_per_process": 128,
        "gradient_accumulation_steps": 2, "per_device_train_batch_size": 128, "trained_rows_per_micro_batch": 64}
    args = train.resolve(train.ScaleArgs(method="cppo", prune_rate=0.75))
    g = train.batch_geometry(args, 2)  # allocation: 64 prompts x 8, 256 rows per process, 64 kept
    assert (g["prompts_per_step"], g["rows_generated_per_process"], g["rows_trained_per_process"],
            g["gradient_accumulation_steps"], g["per_device_train_batch_size"]) == (64, 256, 64, 1, 256)
    assert train.resolve(train.ScaleArgs(method="dppo")).loss_type == "grpo"
    assert train.resolve(train.ScaleArgs(method="grpo")).allocation is False
    bad = [(dict(method="pods", prompts_per_step=3), 2, "whole groups"),
           (dict(method="pods", num_keep=20), 1, "--num_keep"),
           (dict(method="nope"), 1, "unknown --method"),
           (dict(method="dppo", beta=0.04), 1, "--beta 0"),
           (dict(method="grpo", prompts_per_step=3, num_generations=3, micro_batch_size=8), 2, "split over 2")]
    for kwargs, procs, message in bad:
        with pytest.raises(SystemExit, match=message):
            train.batch_geometry(train.resolve(train.ScaleArgs(**kwargs)), procs)


def test_bad_flags_fail_before_any_model_loads(monkeypatch):
    with pytest.raises(SystemExit, match="^error: --num_keep"):
        train.main(["--method", "pods", "--num_keep", "1"])
    # `accelerate launch --cpu --num_processes 2` starts one process: say so instead of training alone.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit, match="starts one process"):
        train.main(["--method", "pods"])


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_trl_loss_and_gradient_equal_grpo_py(tiny_path, tmp_path, loss_type):
    """On one fixed batch TRL's GRPO loss and gradient are grpo.py's (ratios off 1, so the clip matters; KL on).

    Normalisers: TRL's "grpo" averages per micro-batch and divides by the accumulation steps, equal to
    grpo.py's whole-step sequence mean when micro-batches (and processes) have equal row counts; "dapo"
    divides by num_items_in_batch x (GA / steps_per_generation) / processes, the step's token count when
    steps_per_generation = GA (TRL's default); "dr_grpo" by rows x max_completion_length, as grpo.py."""
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
    # Two TRL 1.16 defaults differ from grpo.py, and scale/train.py turns both off: bf16 autocast (on a CPU
    # too) and use_bias_correction_kl (the KL term times the ratio, which changes its gradient at beta > 0).
    cfg = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=G, bf16=False,
                     use_bias_correction_kl=False,
                     max_completion_length=L_max, loss_type=loss_type, beta=beta, epsilon=0.2, use_cpu=True,
                     report_to="none", save_strategy="no")
    trainer = T.GRPOTrainer(model=model, reward_funcs=task.reward_funcs, args=cfg, processing_class=tok,
                            train_dataset=Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]))
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model.train()
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
    assert abs(loss.item() - trl_loss) < 1e-5 * max(1.0, abs(loss.item()))
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, theirs[n], rtol=1e-4, atol=1e-7), n
    assert sum(g.abs().sum() for g in theirs.values()) > 0


def test_plugins_one_process(tiny_path, tmp_path):
    """PODS, CPPO, D3S and DPPO for a step or two in this process, checked against the scripts' functions."""
    methods = ["pods", "cppo", "d3s", "dppo"]
    check_records(run_methods(str(tmp_path), methods), str(tmp_path), methods, 1)


def test_plugins_two_processes(tiny_path, tmp_path):
    """The same under `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): no hang, equal kept
    counts on both processes, selections as the scripts' functions make them, our metric names logged."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    methods = ["pods", "cppo", "d3s"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           os.path.abspath(__file__), str(tmp_path), *methods]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = []
    for rank in range(2):
        with open(tmp_path / f"records_rank{rank}.json") as f:
            records += json.load(f)
    check_records(records, str(tmp_path), methods, 2)


if __name__ == "__main__":  # the worker of test_plugins_two_processes
    torch.set_num_threads(1)
    out_dir, methods = sys.argv[1], sys.argv[2:]
    records = run_methods(out_dir, methods)
    rank = int(os.environ.get("RANK", 0))
    with open(os.path.join(out_dir, f"records_rank{rank}.json"), "w") as f:
        json.dump(records, f)
