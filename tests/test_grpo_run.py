"""grpo.py end to end on the tiny model: smoke, resume, degenerate steps, the real-data path, CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch

import grpo
from common.rollout import encode_prompts, load_policy
from common.tiny import build_model, build_tokenizer
from tests.helpers import ROOT, SMALL, params, records


def test_smoke_run_writes_outputs_and_changes_every_parameter(tiny_path, tmp_path):
    out = grpo.main(grpo.Args(model=tiny_path, output_dir=str(tmp_path), learning_rate=1e-3, **SMALL))
    run = out["run_dir"]
    for name in ("config.json", "metrics.jsonl", "samples.jsonl", "checkpoint.pt", "final/config.json"):
        assert os.path.exists(os.path.join(run, name)), name
    recs = records(run)
    assert [r["step"] for r in recs] == [0, 1]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
                "completions/clipped_ratio", "entropy", "grad_norm", "clip_ratio/region_mean", "loss",
                "time/generate", "time/score", "time/update", "tokens/generated", "tokens/trained",
                "rewards/correctness_reward/mean"):
        assert key in recs[1], key
    assert "kl" not in recs[1]  # beta = 0: no reference model, no kl
    assert "eval/sampled_acc" in recs[0] and "eval_after/greedy_acc" in recs[1]
    # GRPO trains on every token of a step that has a gradient (step 0's batch depends only on the warm start;
    # whether step 1's groups all tie depends on float rounding in the first update)
    assert recs[0]["tokens/trained"] == recs[0]["tokens/generated"] > 0
    assert recs[1]["rollouts/generated_total"] == 2 * 8 * 4
    before, after = params(tiny_path), params(os.path.join(run, "final"))
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == [], unchanged
    assert all(torch.isfinite(v).all() for v in after.values())
    with open(os.path.join(run, "samples.jsonl")) as f:
        sample = json.loads(f.readline())
    assert set(sample) == {"step", "prompt", "completion", "reward", "advantage"}


def test_resume_continues_exactly(tiny_path, tmp_path):
    common = dict(SMALL, max_steps=4, output_dir=str(tmp_path), beta=0.04, num_iterations=2, learning_rate=1e-3)
    straight = grpo.main(grpo.Args(model=tiny_path, run_name="straight", **common))
    grpo.main(grpo.Args(model=tiny_path, run_name="split", **dict(common, max_steps=2)))
    resumed = grpo.main(grpo.Args(model=tiny_path, run_name="split", resume=True, **common))
    a, b = params(os.path.join(straight["run_dir"], "final")), params(os.path.join(resumed["run_dir"], "final"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in records(resumed["run_dir"])] == [0, 1, 2, 3]
    ra, rb = records(straight["run_dir"]), records(resumed["run_dir"])
    assert [r["reward"] for r in ra] == [r["reward"] for r in rb] and "kl" in ra[3]


def test_all_zero_advantages_skip_the_update(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setattr(grpo, "score_completions", lambda task, rows, texts, G: (torch.ones(len(texts)), {}))
    out = grpo.main(grpo.Args(model=tiny_path, output_dir=str(tmp_path), **SMALL))
    before, after = params(tiny_path), params(os.path.join(out["run_dir"], "final"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    rec = records(out["run_dir"])[-1]
    assert rec["skipped/degenerate_total"] == 2 and rec["frac_reward_zero_std"] == 1.0 and rec["tokens/trained"] == 0


def test_non_finite_loss_never_reaches_the_weights(tiny_path, tmp_path, monkeypatch):
    real = grpo.aggregate_loss
    monkeypatch.setattr(grpo, "aggregate_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    out = grpo.main(grpo.Args(model=tiny_path, output_dir=str(tmp_path), **SMALL))
    before, after = params(tiny_path), params(os.path.join(out["run_dir"], "final"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert records(out["run_dir"])[-1]["skipped/nonfinite_total"] == 2


@pytest.fixture
def untrained_model_dir(tmp_path):
    """A tiny Qwen2 built in-process and saved with save_pretrained: stands in for a hub model."""
    tok = build_tokenizer()
    path = str(tmp_path / "local-qwen")
    build_model(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_gsm8k_path_on_a_local_model_and_fixture(untrained_model_dir, tmp_path):
    rows = [{"question": f"Tom has {i} apples and buys {i}. How many?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}
            for i in range(12)] + [{"question": "broken row", "answer": "no marker"}]
    data = tmp_path / "gsm8k_fixture.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = grpo.main(grpo.Args(model=untrained_model_dir, task="gsm8k", dataset_path=str(data), max_steps=2,
                              prompts_per_step=2, num_generations=2, max_completion_length=8, eval_size=2,
                              eval_num_samples=1, output_dir=str(tmp_path / "runs"), save_every=0))
    rec = records(out["run_dir"])[-1]
    assert {"rewards/correctness_reward/mean", "rewards/format_reward/mean"} <= set(rec)
    assert rec["completions/max_length"] <= 8
    with open(os.path.join(out["run_dir"], "samples.jsonl")) as f:
        assert "Tom has" in json.loads(f.readline())["prompt"][0]["content"]


def test_prompts_go_through_the_chat_template_when_there_is_one(untrained_model_dir):
    model, tok = load_policy(untrained_model_dir, torch.device("cpu"))
    ids, mask = encode_prompts(tok, [[{"role": "user", "content": "1+2"}], [{"role": "user", "content": "33+44"}]],
                               64, "cpu")
    assert tok.decode(ids[0][mask[0].bool()]) == "<|user|>1+2<|assistant|>"
    assert mask[0].tolist()[:3] == [0, 0, 1]  # left padding: "1+2" is two characters shorter
    tok.chat_template = None
    ids, mask = encode_prompts(tok, [[{"role": "user", "content": "1+2"}]], 64, "cpu")
    assert tok.decode(ids[0]) == "1+2"


def test_cli_rejects_bad_arguments_before_loading_anything():
    proc = subprocess.run([sys.executable, "grpo.py", "--num_generations", "1", "--model", "/nonexistent"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: --num_generations must be >= 2 (a group needs a baseline)"


def test_grpo_learns_the_tiny_task(tiny_path, tmp_path):
    """The real learning test: default hyper-parameters, 40 steps (about 30 s on 2 cores)."""
    out = grpo.main(grpo.Args(model=tiny_path, max_steps=40, eval_every=0, eval_size=128, save_every=0,
                              output_dir=str(tmp_path)))
    before, after = out["first_eval"], out["last_eval"]
    assert after["eval/sampled_acc"] >= before["eval/sampled_acc"] + 0.15, (before, after)
    assert after["eval/greedy_acc"] > before["eval/greedy_acc"], (before, after)


def test_generation_calls_are_logged_per_step(tiny_path, tmp_path):
    """One generation call per grpo.py step; the evaluations (which generate too) are not counted in it."""
    import grpo
    out = grpo.main(grpo.Args(model=tiny_path, output_dir=str(tmp_path), **dict(SMALL, max_steps=2, eval_every=1)))
    assert [r["rollouts/generate_calls"] for r in records(out["run_dir"])] == [1, 1]
