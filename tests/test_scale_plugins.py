"""scale/trainers.py against the scripts: the same batch gives the same loss and gradient, in one process and two.

The scripts run one real step (`module.main`) with their generation replaced by fixed completions; the
plug-in gets the same completions through a stand-in for TRL's `_generate` and trains on them as TRL's
loop does (its generation batch split into steps_per_generation micro-batches, each `compute_loss` then
backward). The gradient the script clips is compared with the plug-in's, parameter by parameter.
Run as a script, this file is the worker of the two-process test (`accelerate launch`).
"""

import copy
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

import cppo  # noqa: E402
import d3s  # noqa: E402
import dppo  # noqa: E402
import pods  # noqa: E402
from scale import trainers as T  # noqa: E402

MODULES = {"pods": pods, "cppo": cppo, "d3s": d3s, "dppo": dppo, "dppo_kl": dppo, "dppo_kl_dapo": dppo}
B, G, L = 4, 8, 32
# The method's settings: (script flags, plug-in config fields, steps_per_generation). PODS keeps 3 of 8 with the
# sequence-mean loss over 8 micro-steps: its 12 kept rows become 16 (4 padding rows), which loss_scale must undo.
CASES = {
    "pods": (dict(num_keep=3, loss_type="grpo", beta=0.04), dict(num_keep=3, loss_type="grpo", beta=0.04), 8),
    "cppo": (dict(prune_rate=0.5, allocation=False, beta=0.04), dict(prune_rate=0.5, beta=0.04), 2),
    "d3s": (dict(sample_ratio_start=0.5, token_ratio_start=0.5, beta=0.04), dict(sample_ratio_start=0.5, token_ratio_start=0.5, beta=0.04), 2),
    "dppo": (dict(completion_prune_rate=0.5, completion_pool=0.75, prompt_prune_rate=0.0, max_train_samples=0), dict(completion_prune_rate=0.5, completion_pool=0.75), 2),
    # beta > 0 with pruning: each survivor's KL term carries its weight, as dppo.py weighs the whole token loss
    "dppo_kl": (dict(completion_prune_rate=0.5, completion_pool=0.75, prompt_prune_rate=0.0, max_train_samples=0, beta=0.04), dict(completion_prune_rate=0.5, completion_pool=0.75, beta=0.04), 2),
    # the same with a token-mean loss: the added KL term is reduced as TRL reduces that loss_type
    "dppo_kl_dapo": (dict(completion_prune_rate=0.5, completion_pool=0.75, prompt_prune_rate=0.0, max_train_samples=0, beta=0.04, loss_type="dapo"), dict(completion_prune_rate=0.5, completion_pool=0.75, beta=0.04, loss_type="dapo"), 2),
}


def perturbed(model):
    """The reference model moved off the policy by a fixed pattern (the same in the script and the plug-in): at the
    first step the policy equals its copy, where the KL term and its gradient vanish and test nothing."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.05 * torch.sin(torch.arange(p.numel(), dtype=p.dtype) * 0.7 + i).view_as(p))
    return model


ORIGINAL_DEEPCOPY = copy.deepcopy


def seeded_weights(advantages, rate, group_size, pool_fraction=0.75, generator=None):
    """dppo.completion_weights with one fixed draw, so the script and the plug-in prune the same completions."""
    return ORIGINAL_WEIGHTS(advantages, rate, group_size, pool_fraction, generator=torch.Generator().manual_seed(7))


ORIGINAL_WEIGHTS = dppo.completion_weights


# ---------------------------------------------------------------------------------------------
# The script's side
# ---------------------------------------------------------------------------------------------
def script_step(method, tiny_path, out_dir, monkeypatch):
    """One step of the script on completions drawn once (seeded); returns the batch, the gradient it clipped,
    its loss and the rows it trained on."""
    from common.rollout import generate

    module, (flags, _, _) = MODULES[method], CASES[method]
    seen = {}

    def fixed_generate(model, tok, prompt_ids, prompt_mask, num_generations, max_new_tokens, *args, **kwargs):
        torch.manual_seed(123)
        ids, mask, truncated = generate(model, tok, prompt_ids, prompt_mask, num_generations, max_new_tokens, 1.2)
        seen.update(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=ids, completion_mask=mask, tok=tok)
        return ids, mask, truncated

    grads = []
    clip = torch.nn.utils.clip_grad_norm_

    def capture(params, max_norm, *args, **kwargs):
        params = list(params)
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])
        return clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(module, "generate", fixed_generate)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", capture)
    monkeypatch.setattr(dppo, "completion_weights", seeded_weights)
    # the scripts' reference is copy.deepcopy(model): perturbed here, as plugin_trainer perturbs TRL's ref_model
    monkeypatch.setattr(copy, "deepcopy", lambda x, memo=None: (
        perturbed(ORIGINAL_DEEPCOPY(x, memo)) if isinstance(x, torch.nn.Module) else ORIGINAL_DEEPCOPY(x, memo)))
    args = module.Args(model=tiny_path, max_steps=1, prompts_per_step=B, num_generations=G, max_completion_length=L,
                       eval_every=0, eval_size=2, eval_num_samples=0, save_every=0, log_samples_every=0,
                       output_dir=out_dir, run_name=method, micro_batch_size=8, **flags)
    out = module.main(args)
    monkeypatch.undo()
    with open(os.path.join(out["run_dir"], "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    return seen, grads[0], record


def fixed_batch(seen, task_rows):
    """The script's prompts and completions as TRL's generation returns them (lists of ids, no padding)."""
    tok = seen["tok"]
    prompts = [r for r in task_rows for _ in range(G)]
    prompt_ids = [ids[m.bool()].tolist() for ids, m in zip(seen["prompt_ids"], seen["prompt_mask"])]
    prompt_ids = [prompt_ids[i // G] for i in range(len(prompts))]
    completion_ids = [ids[m.bool()].tolist() for ids, m in zip(seen["completion_ids"], seen["completion_mask"])]
    texts = tok.batch_decode(seen["completion_ids"].masked_fill(seen["completion_mask"] == 0, tok.pad_token_id),
                             skip_special_tokens=True)
    return prompts, prompt_ids, completion_ids, [[{"role": "assistant", "content": t}] for t in texts]


# ---------------------------------------------------------------------------------------------
# The plug-in's side
# ---------------------------------------------------------------------------------------------
def plugin_trainer(method, tiny_path, out_dir, accumulation, num_processes=1, reward_funcs=None, **extra):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from common.tasks import load_task

    task = load_task("add", eval_size=2)
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.padding_side = "left"
    rows_per_process = B * G // num_processes
    settings = dict(per_device_train_batch_size=rows_per_process // accumulation, gradient_accumulation_steps=accumulation,
                    num_generations=G, max_completion_length=L, learning_rate=1e-4, lr_scheduler_type="constant",
                    bf16=False, use_cpu=True, report_to="none", save_strategy="no", use_bias_correction_kl=False, seed=0,
                    reward_weights=task.reward_weights)
    name = method.split("_")[0]
    cfg = T.CONFIGS[name](output_dir=out_dir, **{**settings, **CASES.get(method, CASES[name])[1], **extra})
    trainer = T.TRAINERS[name](model=tiny_path, reward_funcs=reward_funcs or task.reward_funcs, args=cfg, processing_class=tok,
                               train_dataset=Dataset.from_list(task.train[:8]))
    if trainer.ref_model is not None:
        perturbed(trainer.ref_model)
    return trainer


def plugin_step(trainer, batch, rank=0, num_processes=1):
    """The plug-in on the fixed batch, as TRL's loop runs it; returns the output, its loss, the no-grad passes' rows."""
    from trl.trainer.utils import split_tensor_dict

    prompts, prompt_ids, completion_ids, completions = batch
    per = len(prompts) // num_processes
    mine = slice(rank * per, (rank + 1) * per)
    trainer._generate = lambda p: (prompt_ids[mine], completion_ids[mine], None, completions[mine], None, {}, None, [])
    passes = []
    forward = trainer._get_per_token_logps_and_entropies

    def recording(model, input_ids, *args, **kwargs):
        passes.append(input_ids.clone())
        return forward(model, input_ids, *args, **kwargs)

    trainer._get_per_token_logps_and_entropies = recording
    model = trainer.model.train()
    out = trainer._generate_and_score_completions(prompts[mine])
    trainer._get_per_token_logps_and_entropies = forward
    spg = trainer.args.steps_per_generation
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    total = 0.0
    for chunk in split_tensor_dict(out, spg):
        loss = trainer.compute_loss(model, chunk)
        loss.backward()
        total += loss.item()
    return out, total, passes


def assert_same_gradient(script_grads, model, rtol=2e-4):
    params = list(model.parameters())
    assert len(params) == len(script_grads)
    for p, g in zip(params, script_grads):
        assert torch.allclose(p.grad, g, rtol=rtol, atol=1e-6), (p.shape, (p.grad - g).abs().max().item())
    assert sum(g.abs().sum() for g in script_grads) > 0


@pytest.mark.parametrize("method", ["pods", "cppo", "d3s", "dppo", "dppo_kl", "dppo_kl_dapo"])
def test_plugin_equals_script_on_the_same_batch(method, tiny_path, tmp_path, monkeypatch):
    """Loss and gradient of one step equal the script's; the no-grad passes saw only the kept rows (and padding),
    at the trained micro-batch size and the longest kept completion."""
    from common.tasks import load_task, prompt_indices

    seen, script_grads, record = script_step(method, tiny_path, str(tmp_path), monkeypatch)
    task = load_task("add", eval_size=2)
    rows = [task.train[i] for i in prompt_indices(len(task.train), B, 0, 0)]
    batch = fixed_batch(seen, rows)
    monkeypatch.setattr(dppo, "completion_weights", seeded_weights)
    trainer = plugin_trainer(method, tiny_path, str(tmp_path / "trl"), CASES[method][2])
    out, loss, passes = plugin_step(trainer, batch)
    assert abs(loss - record["loss"]) < 1e-5 * max(1.0, abs(record["loss"])), (loss, record["loss"])
    assert_same_gradient(script_grads, trainer.model)
    kept_rows = {tuple(ids) for ids in out["completion_ids"].tolist()}
    generated = {tuple(c) for c in batch[2]}
    # the reference pass (beta > 0; DPPO runs at beta 0) and D3S's entropies, nothing else
    assert len(passes) == {"dppo": 0, "d3s": 2}.get(method, 1)
    if trainer.beta:
        assert max(trainer._metrics["train"]["kl"]) > 1e-3  # the reference differs from the policy: KL acts
    for ids in passes:
        assert ids.size(0) == out["completion_ids"].size(0)  # kept rows and padding only
        assert ids.size(1) == out["prompt_ids"].size(1) + out["completion_ids"].size(1)
    assert out["completion_ids"].size(0) < len(batch[2]) and kept_rows < generated | kept_rows
    assert out["completion_mask"].sum(1).max() == out["completion_ids"].size(1)  # padding trimmed to the kept rows
    if method == "pods":
        assert out["completion_ids"].size(0) == 16 and int((out["tool_mask"].sum(1) == 0).sum()) == 4


def test_reward_functions_log_extra_and_metric(tiny_path, tmp_path):
    """TRL's reward-function hooks reach the logs through the plug-in: log_extra's column (one value per generated
    row, in row order) and log_metric's mean."""
    from common.tasks import load_task

    task = load_task("add", eval_size=2)

    def logging_reward(completions, log_extra, log_metric, **kwargs):
        log_extra("chars", [len(c[0]["content"]) for c in completions])
        log_metric("custom/rows", float(len(completions)))
        return [0.0] * len(completions)

    trainer = plugin_trainer("cppo", tiny_path, str(tmp_path), 2, reward_funcs=[*task.reward_funcs, logging_reward],
                             reward_weights=[*task.reward_weights, 0.0])
    rows = task.train[:B]
    prompt_ids = trainer.processing_class([trainer.processing_class.apply_chat_template(r["prompt"], tokenize=False,
                                           add_generation_prompt=True) for r in rows])["input_ids"]
    texts = [f"{'x' * (i % 5)}<answer>{i}</answer>" for i in range(B * G)]
    completion_ids = [trainer.processing_class(t)["input_ids"] + [trainer.processing_class.eos_token_id] for t in texts]
    batch = ([r for r in rows for _ in range(G)], [prompt_ids[i // G] for i in range(B * G)], completion_ids,
             [[{"role": "assistant", "content": t}] for t in texts])
    plugin_step(trainer, batch)
    assert list(trainer._logs["extra"]["chars"]) == [len(t) for t in texts]
    assert trainer._metrics["train"]["custom/rows"] == [float(B * G)]
    assert not trainer._pending_extra_logs and not trainer._pending_metrics


def test_d3s_keeps_the_scripts_tokens(tiny_path, tmp_path):
    """Which tokens: the top token_ratio by |A| x entropy over the step's kept rows (d3s.token_keep_mask on the
    rows in the script's order), not merely as many."""
    from common.rollout import per_token_logps

    trainer = plugin_trainer("d3s", tiny_path, str(tmp_path), 2)
    torch.manual_seed(0)
    prompts = [{"prompt": [{"role": "user", "content": f"{a} + {a}"}], "answer": str(2 * a)} for a in range(B) for _ in range(G)]
    tok = trainer.processing_class
    ids = [tok(tok.apply_chat_template(p["prompt"], add_generation_prompt=True, tokenize=False),
               add_special_tokens=False)["input_ids"] for p in prompts]
    vocab = trainer.model.config.vocab_size
    completions = [torch.randint(3, vocab, (3 + k % 7,)).tolist() for k in range(len(prompts))]
    texts = [[{"role": "assistant", "content": str(2 * (k // G)) if k % 3 == 0 else "x"}] for k in range(len(prompts))]
    out, _, _ = plugin_step(trainer, (prompts, ids, completions, texts))
    keep = out["tool_mask"].bool() & out["completion_mask"].bool()
    assert int(keep.sum()) == int(0.5 * out["completion_mask"].sum() + 1e-9)
    ids_full = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        _, entropy = per_token_logps(trainer.model, ids_full, attention, out["completion_ids"].size(1), with_entropy=True)
    # The plug-in's rows come in the kept order (one process, no padding): the script's mask on them must match.
    expected = d3s.token_keep_mask(out["advantages"], entropy, out["completion_mask"], 0.5)
    assert torch.equal(keep, expected)


def test_rebalance_uneven_counts():
    """Kept rows spread in contiguous blocks whose sizes differ by at most one; every process trains the same
    number of rows, a multiple of steps_per_generation, padding included."""
    class Fake:
        def __init__(self, p, P, spg):
            self.accelerator = type("A", (), {"num_processes": P, "process_index": p})()
            self.args = type("Args", (), {"steps_per_generation": spg})()

    for kept, P, spg in [(13, 2, 2), (5, 4, 1), (3, 4, 2), (16, 2, 4), (1, 2, 1)]:
        layouts = [T.SelectingGRPOTrainer.rebalance(Fake(p, P, spg), kept) for p in range(P)]
        assert len({lay["rows"] for lay in layouts}) == 1 and layouts[0]["rows"] % spg == 0
        assert [lay["start"] for lay in layouts] == [sum(lay["count"] for lay in layouts[:p]) for p in range(P)]
        assert sum(lay["count"] for lay in layouts) == kept
        assert max(lay["count"] for lay in layouts) - min(lay["count"] for lay in layouts) <= 1
        assert layouts[0]["rows"] == spg * -(-kept // (P * spg))  # the fewest padding rows that allow it


def test_error_paths(tiny_path, tmp_path):
    trainer = plugin_trainer("cppo", tiny_path, str(tmp_path), 1)
    bad = [(T.Selection(torch.tensor([], dtype=torch.long), torch.tensor([])), "kept no rows"),
           (T.Selection(torch.tensor([3, 1]), torch.zeros(2)), "ascending"),
           (T.Selection(torch.tensor([1, 1]), torch.zeros(2)), "ascending"),
           (T.Selection(torch.tensor([0, 40]), torch.zeros(2)), "ascending"),
           (T.Selection(torch.tensor([0, 1]), torch.zeros(3)), "3 advantages for 2")]
    for selection, message in bad:
        with pytest.raises(RuntimeError, match=message):
            trainer._checked(selection, 32)
    trainer.model.train()  # training batches are the plug-in's; evaluation batches stay TRL's
    with pytest.raises(ValueError, match="image inputs"):
        trainer._generate_and_score_completions([{"prompt": "x", "image": None}])
    with pytest.raises(ValueError, match="tools is not supported"):
        T.CPPOTrainer(model=tiny_path, reward_funcs=[lambda completions, **k: [0.0] * len(completions)],
                      args=trainer.args, tools=[len])
    for cls, kwargs, message in [(T.PODSConfig, dict(num_keep=20), "num_keep"),
                                 (T.CPPOConfig, dict(scope="local"), "unknown scope"),
                                 (T.D3SConfig, dict(token_ratio_end=0), r"\(0, 1\]"),
                                 (T.DGGConfig, dict(gate_window=1), "gate_window")]:
        with pytest.raises(ValueError, match=message):
            cls(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)
    assert T.DPPOConfig(output_dir=str(tmp_path), use_cpu=True, beta=0.04, completion_prune_rate=0.5).beta == 0.04


def test_args_none_gives_the_methods_config(tiny_path, tmp_path, monkeypatch):
    """args=None: the method's config with its defaults (GRPOTrainer alone would build a plain GRPOConfig, which
    lacks the method's fields); a plain GRPOConfig is refused in one line."""
    from datasets import Dataset
    from trl import GRPOConfig
    from trl.trainer.base_config import _BaseConfig

    original = _BaseConfig.__post_init__

    def on_cpu(self):  # TRL's configs default to bf16, which needs use_cpu on a machine without a GPU
        self.use_cpu = True
        original(self)

    monkeypatch.setattr(_BaseConfig, "__post_init__", on_cpu)
    monkeypatch.chdir(tmp_path)
    reward, data = [lambda completions, **k: [0.0] * len(completions)], Dataset.from_list([{"prompt": "1 + 1"}] * 4)
    trainer = T.PODSTrainer(tiny_path, reward, train_dataset=data)
    assert type(trainer.args) is T.PODSConfig and trainer.args.num_keep == pods.Args.num_keep
    assert os.path.basename(trainer.args.output_dir) == "tiny_model-PODS"
    with pytest.raises(ValueError, match="^pods: args must be a PODSConfig .*, got GRPOConfig$"):
        T.PODSTrainer(tiny_path, reward, GRPOConfig(output_dir=str(tmp_path)), train_dataset=data)


def test_kl_mu2_decoupled_generation_and_vllm_stand_in(tiny_path, tmp_path):
    """beta > 0, num_iterations = 2, steps_per_generation (2) != gradient accumulation (1), and generation by a
    stand-in for vLLM (with its own log-probs): every row key (old, ref, sampling log-probs, importance ratio)
    is computed on the kept rows only and training runs to the end with finite losses."""
    trainer = plugin_trainer("pods", tiny_path, str(tmp_path), 1, num_keep=4, beta=0.04, num_iterations=2,
                             steps_per_generation=2, per_device_train_batch_size=16,
                             max_steps=3, logging_steps=1, loss_type="dapo")
    assert trainer.args.steps_per_generation == 2 and trainer.args.gradient_accumulation_steps == 1
    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
    generator = torch.Generator().manual_seed(0)

    def vllm_stand_in(prompt_ids, images, multimodal_fields, num_generations):
        vocab = trainer.model.config.vocab_size
        ids = [torch.randint(3, vocab, (1 + k % 6,), generator=generator).tolist() for k in range(len(prompt_ids))]
        # vLLM's own log-probs: far below the policy's on odd rows (ratio > clip_max: masked), above on even rows
        return ids, [[-30.0 if k % 2 else -0.5] * len(c) for k, c in enumerate(ids)]

    trainer._generate_single_turn = vllm_stand_in
    outputs = []
    original = T.SelectingGRPOTrainer._generate_and_score_completions

    def record(self, inputs):
        out = original(self, inputs)
        outputs.append({k: v.clone() for k, v in out.items()})
        return out

    T.PODSTrainer._generate_and_score_completions = record
    try:
        trainer.train()
    finally:
        del T.PODSTrainer._generate_and_score_completions
    # one generation batch serves spg 2 x mu 2 = 4 micro-steps (one optimizer step each, GA 1): steps 1-3 reuse it,
    # training on both of its halves (so every row key was split with the rows) against stored old log-probs
    assert len(outputs) == 1
    for out in outputs:
        rows = out["completion_ids"].size(0)
        assert rows == 16  # 32 generated, 4 of 8 kept per prompt
        for key in ("old_per_token_logps", "ref_per_token_logps", "sampling_per_token_logps"):
            assert out[key].shape == out["completion_mask"].shape, key
        # TRL's default correction: one ratio per sequence, set to 0 outside [clip_min, clip_max] (3)
        assert trainer.vllm_importance_sampling_mode == "sequence_mask"
        diff = ((out["old_per_token_logps"] - out["sampling_per_token_logps"]) * out["completion_mask"]).sum(1, keepdim=True)
        ratio = torch.exp(diff)
        expected = ratio.masked_fill(ratio > trainer.vllm_importance_sampling_clip_max, 0.0)
        assert torch.allclose(out["importance_sampling_ratio"], expected, rtol=1e-5)
        assert bool((expected == 0).any()) and bool((expected > 0).any())  # both branches exercised
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


# ---------------------------------------------------------------------------------------------
# Two processes: the same batch split over two ranks trains the same kept set to the same gradient
# ---------------------------------------------------------------------------------------------
def test_two_processes_equal_the_script(tiny_path, tmp_path, monkeypatch):
    from common.tasks import load_task, prompt_indices

    methods = ["pods", "cppo", "dppo"]
    task = load_task("add", eval_size=2)
    rows = [task.train[i] for i in prompt_indices(len(task.train), B, 0, 0)]
    expected = {}
    for method in methods:
        seen, grads, record = script_step(method, tiny_path, str(tmp_path), monkeypatch)
        expected[method] = (grads, record["loss"])
        prompts, prompt_ids, completion_ids, completions = fixed_batch(seen, rows)
        with open(tmp_path / f"{method}_batch.json", "w") as f:
            json.dump([prompts, prompt_ids, completion_ids, completions], f)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           os.path.abspath(__file__), tiny_path, str(tmp_path), *methods]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for method in methods:
        result = torch.load(tmp_path / f"{method}_grads.pt")
        grads, loss = expected[method]
        assert abs(result["loss"] - loss) < 1e-5 * max(1.0, abs(loss)), (method, result["loss"], loss)
        for g, mine in zip(grads, result["grads"]):
            assert torch.allclose(mine, g, rtol=2e-4, atol=1e-6), method
        assert result["rows"][0] == result["rows"][1]  # the same number of rows on both processes


def worker(tiny_path, out_dir, methods):
    """Each rank runs the plug-in on its half of the batch; the gradients are averaged as DDP averages them."""
    import torch.distributed as dist
    from accelerate import PartialState

    state = PartialState(cpu=True)
    torch.manual_seed(0)
    dppo.completion_weights = seeded_weights
    for method in methods:
        with open(os.path.join(out_dir, f"{method}_batch.json")) as f:
            batch = json.load(f)
        trainer = plugin_trainer(method, tiny_path, os.path.join(out_dir, "trl"), CASES[method][2] if method != "pods" else 2,
                                 num_processes=2)
        out, loss, _ = plugin_step(trainer, batch, state.process_index, 2)
        grads = [p.grad.clone() for p in trainer.model.parameters()]
        for g in grads:
            dist.all_reduce(g)
            g /= 2
        total = torch.tensor([loss])
        dist.all_reduce(total)  # DDP averages the gradient; the logged step loss is the mean of the ranks' losses
        rows = [torch.zeros(1, dtype=torch.long) for _ in range(2)]
        dist.all_gather(rows, torch.tensor([out["completion_ids"].size(0)]))
        if state.is_main_process:
            torch.save({"grads": grads, "loss": total.item() / 2, "rows": [int(r) for r in rows]},
                       os.path.join(out_dir, f"{method}_grads.pt"))
        state.wait_for_everyone()


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(sys.argv[1], sys.argv[2], sys.argv[3:])
    from scale.train import close_process_group

    close_process_group()
