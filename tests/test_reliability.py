"""The trained model is never lost and nothing misleads: kills while final/ is written, a full disk,
a run killed before its first checkpoint, runs that diverge, odd logs, flags checked before loading."""

import errno
import json
import signal
import subprocess
import sys

import pytest
import torch

import grpo
from common import runs
from tests.helpers import ROOT, cli_error, records

SMALL = dict(prompts_per_step=4, num_generations=4, eval_size=4, eval_num_samples=0, eval_every=0,
             log_samples_every=1, learning_rate=1e-3)


def make(tiny_path, tmp_path, **kw):
    return grpo.Args(**{**SMALL, "model": tiny_path, "output_dir": str(tmp_path), "run_name": "R", **kw})


def test_a_kill_while_final_is_written_is_finished_by_resume(tiny_path, tmp_path):
    """SIGKILL in the middle of writing final/ (only final.tmp exists); --resume writes final/."""
    code = f"""
import os, signal, sys
sys.path.insert(0, {ROOT!r})
import grpo
from common import runs
def dying(model, tok, run_dir):
    os.makedirs(os.path.join(run_dir, "final.tmp"))
    model.config.save_pretrained(os.path.join(run_dir, "final.tmp"))
    os.kill(os.getpid(), signal.SIGKILL)
grpo.runs.save_final = dying
grpo.main(grpo.Args(model={tiny_path!r}, output_dir={str(tmp_path)!r}, run_name="R", max_steps=2, save_every=1,
                    prompts_per_step=4, num_generations=4, eval_size=4, eval_num_samples=0, eval_every=0,
                    learning_rate=1e-3))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    run = tmp_path / "R"
    assert (run / "final.tmp").exists() and not (run / "final").exists()
    out = grpo.main(make(tiny_path, tmp_path, max_steps=2, save_every=1, resume=True))
    assert (run / "final" / "model.safetensors").exists() and not (run / "final.tmp").exists()
    assert [r["step"] for r in records(str(run))] == [0, 1]
    assert "eval/greedy_acc" in out["last_eval"]


def test_resume_with_fewer_steps_finishes_the_run_with_its_final_evaluation(tiny_path, tmp_path, monkeypatch):
    """A 4-step run killed after its step-1 checkpoint, resumed with --max_steps 1: final/ and the
    final evaluation are written, not "already complete"."""
    from tests.test_faults import Killed, killing_trange

    monkeypatch.setattr(runs, "trange", killing_trange(1))
    with pytest.raises(Killed):
        grpo.main(make(tiny_path, tmp_path, max_steps=4, save_every=1))
    monkeypatch.undo()
    run = tmp_path / "R"
    out = grpo.main(make(tiny_path, tmp_path, max_steps=1, save_every=1, resume=True))
    assert (run / "final" / "model.safetensors").exists()
    recs = records(str(run))
    assert [r["step"] for r in recs] == [0] and "eval_after/greedy_acc" in recs[-1]
    assert out["last_eval"]["eval/greedy_acc"] == recs[-1]["eval_after/greedy_acc"]
    with pytest.raises(SystemExit) as e:  # and now it is complete
        grpo.main(make(tiny_path, tmp_path, max_steps=1, save_every=1, resume=True))
    assert e.value.code == 0


def test_a_full_disk_during_a_checkpoint_leaves_a_resumable_run(tiny_path, tmp_path, monkeypatch):
    save, calls = torch.save, []

    def disk_full(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint: part of it is written, then the disk is full
            with open(path, "wb") as f:
                f.write(b"x" * 1000)
            raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 4780672 vs 4780560")
        return save(obj, path, *a, **k)
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(SystemExit, match="could not write the checkpoint of step 2 .*is the disk full.*--resume") as e:
        grpo.main(make(tiny_path, tmp_path, max_steps=3, save_every=1))
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    run = tmp_path / "R"
    assert not (run / "checkpoint.pt.tmp").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 1
    grpo.main(make(tiny_path, tmp_path, max_steps=3, save_every=1, resume=True))
    assert [r["step"] for r in records(str(run))] == [0, 1, 2]


def test_trimming_a_log_on_resume_needs_no_free_space(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(4)) + '{"step": 4, "rew')
    monkeypatch.setattr(runs, "atomic_write", lambda *a: pytest.fail("rewrote the file: that needs free space"))
    runs._trim_jsonl(str(path), 2)
    assert path.read_text() == '{"step": 0}\n{"step": 1}\n'


def test_a_hand_edited_log_does_not_break_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": null}\n7\n{"step": 1}\n{"step": 5}\n')
    runs._trim_jsonl(str(path), 3)
    assert [r["step"] for r in runs.read_jsonl(str(path))] == [0, 1]


def test_a_run_killed_before_its_first_checkpoint_has_one_way_forward(tiny_path, tmp_path, monkeypatch):
    from tests.test_faults import Killed, killing_trange

    monkeypatch.setattr(runs, "trange", killing_trange(1))
    with pytest.raises(Killed):
        grpo.main(make(tiny_path, tmp_path, max_steps=3, save_every=2))
    monkeypatch.undo()
    with pytest.raises(SystemExit, match="nothing to resume; start it again with --overwrite"):
        grpo.main(make(tiny_path, tmp_path, max_steps=3, save_every=2, resume=True))
    with pytest.raises(SystemExit, match="stopped before its first checkpoint .*pass --overwrite"):
        grpo.main(make(tiny_path, tmp_path, max_steps=3, save_every=2))
    grpo.main(make(tiny_path, tmp_path, max_steps=1, save_every=2, overwrite=True))


def test_no_sampled_accuracy_is_reported_when_nothing_was_sampled(tiny_path, tmp_path, capsys):
    out = grpo.main(make(tiny_path, tmp_path, max_steps=1))
    text = (tmp_path / "R" / "metrics.jsonl").read_text()
    assert "sampled_acc" not in text and "eval_after/greedy_acc" in text
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("step 0:", "held-out"))]
    assert len(printed) == 2 and all("greedy" in line and "sampled" not in line.split(" in ")[0] for line in printed)
    assert set(out["last_eval"]) == {"eval/greedy_acc"}


def test_non_finite_numbers_are_written_as_null(tiny_path, tmp_path):
    grpo.main(make(tiny_path, tmp_path, max_steps=1, beta=1e30, num_iterations=2))
    text = (tmp_path / "R" / "metrics.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert all(isinstance(json.loads(line), dict) for line in text.splitlines())


def test_a_diverging_run_stops_before_saving_the_blown_up_weights(tiny_path, tmp_path):
    with pytest.raises(SystemExit, match="training diverged at step 0: .*no checkpoint was written"):
        grpo.main(make(tiny_path, tmp_path, max_steps=2, save_every=1, learning_rate=1e10))
    assert not (tmp_path / "R" / "checkpoint.pt").exists() and not (tmp_path / "R" / "final").exists()


def test_weights_usable_sees_an_overflow_that_finite_weights_hide(tiny_path):
    from common.rollout import load_policy

    model, _ = load_policy(tiny_path, torch.device("cpu"))
    assert runs.weights_usable(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e10)
    assert all(torch.isfinite(p).all() for p in model.parameters()) and not runs.weights_usable(model)


@pytest.mark.parametrize("flags,message", [
    (["--seed", "-1"], "error: --seed must be in [0, 2**32 - 1], got -1"),
    (["--seed", "4294967296"], "error: --seed must be in [0, 2**32 - 1], got 4294967296"),
    (["--temperature", "1e-45"], "error: --temperature must be >= 0.001"),
])
def test_flags_fail_before_the_model_loads(flags, message):
    assert cli_error("grpo.py", flags).startswith(message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line():
    assert cli_error("grpo.py", ["--device", "cuda"]).startswith("error: --device cuda: this torch sees no CUDA")


def test_the_write_error_is_one_line(tmp_path):
    def full(tmp):
        with open(tmp, "w") as f:
            f.write("x")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(SystemExit, match=r"could not write x to .*No space left on device.*free some space") as e:
        runs.atomic_write(str(tmp_path / "x"), full, "x")
    assert "\n" not in str(e.value) and not (tmp_path / "x.tmp").exists()
