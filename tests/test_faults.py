"""Fault injection for every script: kill and resume, corrupt checkpoints, run folders that must not
mix, impossible and all-correct data, non-finite gradients, and flags that used to slip through."""

import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import tqdm

import grpo
from common import runs
from tools import diffs
from tests.helpers import ROOT, params, records

SCRIPTS = ["grpo"] + [s[:-3] for s in diffs.discover()]  # found by their marked regions, not listed
# Small enough for a fault test: 4 prompts x 4 completions (PODS keeps 2 of 4), greedy evaluation only.
TINY_RUN = dict(prompts_per_step=4, num_generations=4, eval_size=4, eval_num_samples=0, eval_every=0,
                log_samples_every=1, learning_rate=1e-3)
METHOD_FLAGS = {"pods": dict(num_keep=2), "gvm_raft": dict(num_pilot=2)}


def make_args(name, tiny_path, tmp_path, **kw):
    module = importlib.import_module(name)
    fields = module.Args.__dataclass_fields__
    flags = {k: v for k, v in {**TINY_RUN, **METHOD_FLAGS.get(name, {}), **kw}.items() if k in fields}
    return module, module.Args(model=tiny_path, output_dir=str(tmp_path), **flags)


class Killed(Exception):
    pass


def killing_trange(at_step):
    """A stand-in for the scripts' progress bar that kills the run when step `at_step` begins."""
    def fake(*args, **kwargs):
        bar = tqdm.trange(*args, **kwargs, disable=True)

        class Bar:
            def __iter__(self):
                for step in bar:
                    if step == at_step:
                        raise Killed
                    yield step

            def set_postfix(self, **kw):
                pass
        return Bar()
    return fake


@pytest.mark.parametrize("name", SCRIPTS)
def test_kill_then_resume_gives_the_uninterrupted_run(name, tiny_path, tmp_path, monkeypatch):
    module, straight = make_args(name, tiny_path, tmp_path, max_steps=4, save_every=2, run_name="straight")
    module.main(straight)
    _, killed = make_args(name, tiny_path, tmp_path, max_steps=4, save_every=2, run_name="killed")
    monkeypatch.setattr(runs, "trange", killing_trange(3))
    with pytest.raises(Killed):
        module.main(killed)
    monkeypatch.undo()
    run = os.path.join(str(tmp_path), "killed")
    assert [r["step"] for r in records(run)] == [0, 1, 2]  # step 2 was logged after the step-2 checkpoint
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "rew')  # a kill in mid-append tears the last line
    killed.resume = True
    module.main(killed)
    a, b = params(os.path.join(str(tmp_path), "straight", "final")), params(os.path.join(run, "final"))
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ra, rb = records(os.path.join(str(tmp_path), "straight")), records(run)
    assert [r["step"] for r in rb] == [0, 1, 2, 3]
    for key in ("loss", "reward", "grad_norm", "tokens/trained", "updates_total"):
        assert [r.get(key) for r in ra] == [r.get(key) for r in rb], key
    with open(os.path.join(run, "samples.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == sorted(steps) and steps.count(2) == steps.count(3) > 0  # no duplicated records


def test_run_folders_never_mix(tiny_path, tmp_path, capsys):
    module, args = make_args("grpo", tiny_path, tmp_path, max_steps=2, save_every=1, run_name="R")
    module.main(args)
    run = os.path.join(str(tmp_path), "R")
    # a fresh run over it is refused, before anything is touched
    mtime = os.path.getmtime(os.path.join(run, "checkpoint.pt"))
    with pytest.raises(SystemExit, match="already holds a run; pass --resume .* or --overwrite"):
        module.main(args)
    assert os.path.getmtime(os.path.join(run, "checkpoint.pt")) == mtime
    # resuming a finished run: "already complete", exit 0, nothing rewritten
    args.resume = True
    stamps = {f: os.path.getmtime(os.path.join(run, f)) for f in ("config.json", "metrics.jsonl", "final/config.json")}
    with pytest.raises(SystemExit) as e:
        module.main(args)
    assert e.value.code == 0 and "already complete" in capsys.readouterr().out
    assert stamps == {f: os.path.getmtime(os.path.join(run, f)) for f in stamps}
    # resuming with other training flags, or with another script, names every difference
    _, other = make_args("grpo", tiny_path, tmp_path, max_steps=3, run_name="R", resume=True, seed=1, learning_rate=5e-4)
    with pytest.raises(SystemExit, match=r"learning_rate: 0\.001 -> 0\.0005, .*seed: 0 -> 1"):
        module.main(other)
    pods, pods_args = make_args("pods", tiny_path, tmp_path, max_steps=3, run_name="R", resume=True)
    with pytest.raises(SystemExit, match="script: 'grpo' -> 'pods'"):
        pods.main(pods_args)
    # --overwrite replaces the run: a fresh log and new weights, the old checkpoint gone
    _, fresh = make_args("grpo", tiny_path, tmp_path, max_steps=1, save_every=0, run_name="R", overwrite=True, seed=3)
    module.main(fresh)
    assert [r["step"] for r in records(run)] == [0]
    assert torch.load(os.path.join(run, "checkpoint.pt"), weights_only=False)["config"]["seed"] == 3


def test_resume_errors_are_one_line(tiny_path, tmp_path):
    module, args = make_args("grpo", tiny_path, tmp_path, max_steps=2, save_every=1, run_name="R")
    args.resume = True
    with pytest.raises(SystemExit, match="no checkpoint at"):
        module.main(args)
    args.resume = False
    module.main(args)
    ckpt = os.path.join(str(tmp_path), "R", "checkpoint.pt")
    with open(ckpt, "rb") as f:
        data = f.read()
    args.resume, args.max_steps = True, 3
    for broken in (data[: len(data) // 2], b"not a checkpoint", b""):
        with open(ckpt, "wb") as f:
            f.write(broken)
        with pytest.raises(SystemExit, match="checkpoint .* is unreadable") as e:
            module.main(args)
        assert "\n" not in str(e.value)


def test_bad_folders_and_names_fail_before_the_model_loads(tmp_path):
    base = dict(model="/nonexistent-model-path")  # would fail later: the folder checks must come first
    (tmp_path / "file").write_text("x")
    cases = [(dict(output_dir=str(tmp_path / "file")), "is a file, not a folder"),
             (dict(output_dir=str(tmp_path / "file" / "sub")), "cannot write the run folder"),
             (dict(run_name="../x"), "must be a plain folder name"),
             (dict(run_name="a/b"), "must be a plain folder name")]
    for kw, message in cases:
        args = grpo.Args(**{**base, "output_dir": str(tmp_path), **kw})
        args.model = "tiny"  # a valid name: only the folder is wrong
        with pytest.raises(SystemExit, match=message):
            grpo.main(args)


@pytest.mark.parametrize("flags,message", [
    (dict(max_grad_norm=math.nan), "--max_grad_norm must be a finite number"),
    (dict(max_grad_norm=-1.0), "--max_grad_norm must be > 0"),
    (dict(max_grad_norm=0.0), "--max_grad_norm must be > 0"),
    (dict(learning_rate=math.inf), "--learning_rate must be a finite number"),
    (dict(temperature=math.inf), "--temperature must be a finite number"),
    (dict(beta=math.nan), "--beta must be a finite number"),
    (dict(epsilon_high=math.inf), "--epsilon_high must be a finite number"),
    (dict(model="tiny:abc"), "write tiny or tiny:SEED"),
    (dict(model="/nonexistent"), "no such folder"),
    (dict(model="qwen2.5-0.5b-shape:x"), "number of layers"),
    (dict(model="qwen2.5-0.5b-shape:25"), "number of layers"),
    (dict(task="add", dataset_path="x.jsonl"), "--dataset_path needs --task gsm8k or math"),
    (dict(resume=True, overwrite=True), "--resume and --overwrite exclude each other"),
])
def test_flags_that_used_to_slip_through(flags, message, tmp_path):
    with pytest.raises(SystemExit, match=message):  # validate() and the run's own checks, before any model loads
        grpo.main(grpo.Args(output_dir=str(tmp_path), **flags))


def test_unknown_flag_is_one_line():
    proc = subprocess.run([sys.executable, "grpo.py", "--no_such_flag", "3"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == \
        "error: unrecognized arguments: --no_such_flag 3 (see --help)"


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("reward", [0.0, 1.0])
def test_impossible_and_all_correct_data(name, reward, tiny_path, tmp_path, monkeypatch):
    """Every reward equal (nothing ever correct or accepted; or everything): no crash, no NaN, no update."""
    module, args = make_args(name, tiny_path, tmp_path, max_steps=2, save_every=0)
    score = module.score_completions

    def constant(task, rows, completions, num_generations):
        _, means = score(task, rows, completions, num_generations)
        return torch.full((len(completions),), reward), {k: reward for k in means}
    monkeypatch.setattr(module, "score_completions", constant)
    out = module.main(args)
    recs = records(out["run_dir"])
    text = open(os.path.join(out["run_dir"], "metrics.jsonl")).read()
    assert "NaN" not in text and "Infinity" not in text
    assert all(r["reward"] == reward for r in recs)
    before, after = params(tiny_path), params(os.path.join(out["run_dir"], "final"))
    assert all(torch.isfinite(v).all() for v in after.values())
    if name == "gvm_raft" and reward == 1.0:  # RAFT++ fine-tunes on accepted samples: all-correct is a signal
        assert recs[-1]["updates_total"] == 2
        return
    assert recs[-1]["updates_total"] == 0  # no signal, beta = 0: no optimiser step
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_nonfinite_loss_is_skipped_and_counted(tiny_path, tmp_path, monkeypatch):
    module, args = make_args("grpo", tiny_path, tmp_path, max_steps=2, save_every=0)
    aggregate = module.aggregate_loss
    monkeypatch.setattr(module, "aggregate_loss", lambda *a, **k: aggregate(*a, **k) * float("nan"))
    out = module.main(args)
    recs = records(out["run_dir"])
    assert recs[-1]["skipped/nonfinite_total"] == sum(r["tokens/trained"] > 0 for r in recs) > 0
    assert recs[-1]["updates_total"] == 0
    after = params(os.path.join(out["run_dir"], "final"))
    assert all(torch.isfinite(v).all() for v in after.values())
