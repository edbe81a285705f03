"""benchmarks/run_queue.py with a stand-in training script: pairs, reuse, resume after a kill, one queue at a time."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import harness  # noqa: E402
import run_queue  # noqa: E402

FAKE = '''
import argparse, json, os, sys, time
p = argparse.ArgumentParser()
for flag in ("--seed", "--max_steps", "--output_dir", "--run_name", "--save_every"):
    p.add_argument(flag, type=str)
p.add_argument("--resume", action="store_true")
p.add_argument("--overwrite", action="store_true")
a, _ = p.parse_known_args()
path = os.path.join(a.output_dir, a.run_name)
os.makedirs(path, exist_ok=True)
start = json.load(open(os.path.join(path, "checkpoint.pt")))["step"] if a.resume else 0
with open(os.path.join(path, "calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
cfg = {"seed": int(a.seed), "max_steps": int(a.max_steps), "eval_size": 512, "eval_num_samples": 4, "script": "fake"}
json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
for step in range(start, int(a.max_steps)):
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    with open(os.path.join(path, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, "updates_total": step + 1, "eval/sampled_acc": 0.5}) + "\\n")
    if (step + 1) % int(a.save_every) == 0:
        json.dump({"step": step + 1}, open(os.path.join(path, "checkpoint.pt"), "w"))
os.makedirs(os.path.join(path, "final"), exist_ok=True)
json.dump(cfg, open(os.path.join(path, "final", "config.json"), "w"))
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    for config in ("grpo", "cppo", "pods"):
        monkeypatch.setitem(harness.CONFIGS, config, (str(script), []))
    monkeypatch.setattr(run_queue, "SAVE_EVERY", ["--save_every", "2"])
    return str(script)


def args(tmp_path, *extra):
    return ["--configs", "cppo", "pods", "--seeds", "0", "1", "--steps", "4", "--results", str(tmp_path / "res"),
            "--save", str(tmp_path / "saved"), *extra]


def test_plan_gives_the_baselines_own_run_to_the_first_config_and_twins_to_the_others(tmp_path):
    jobs = run_queue.plan(["cppo", "pods", "cppo_paper"], [0], steps=4, results=str(tmp_path))
    labels = [(c, [m[0] for m in members]) for c, _, members in jobs]
    assert labels == [("cppo", ["cppo", "grpo"]), ("pods", ["pods", "grpo_beside_pods"]),
                      ("cppo_paper", ["cppo_paper", "grpo_cppo_paper"])]
    assert jobs[1][2][1][1] == "grpo"  # the twin runs grpo's own config
    own = harness.run_dir("grpo", 0, 4, str(tmp_path))  # grpo seed 0 ran beside pods earlier: pods keeps it
    os.makedirs(own)
    with open(f"{own}.beside", "w") as f:
        f.write("pods")
    labels = [[m[0] for m in members] for _, _, members in run_queue.plan(["cppo", "pods"], [0], 4, str(tmp_path))]
    assert labels == [["cppo", "grpo_beside_cppo"], ["pods", "grpo"]]


def test_pairs_run_together_are_saved_and_reused(tmp_path, fake):
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        run_queue.main(args(tmp_path))
        log = (tmp_path / "res" / "run_queue.log").read_text()
        assert log.count("start ") == 8 and log.count("done  ") == 8 and "4 of 4 pairs done" in log
        assert "start grpo_beside_pods_steps4/seed1 beside pods" in log
        saved = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "saved") for d, _, fs in os.walk(tmp_path / "saved") for f in fs)
        assert saved == [f"{c}/seed{s}.jsonl" for c in ("cppo", "grpo", "grpo_beside_pods", "pods") for s in (0, 1)]
        run_queue.main(args(tmp_path))  # everything finished: nothing starts again
        assert (tmp_path / "res" / "run_queue.log").read_text().count("start ") == 8
    finally:
        signal.signal(signal.SIGTERM, handlers[0]), signal.signal(signal.SIGINT, handlers[1])


def test_a_killed_queue_stops_its_runs_and_the_next_one_resumes_them(tmp_path, fake):
    launcher = tmp_path / "queue.py"
    launcher.write_text(f"import sys\nsys.path.insert(0, {os.path.join(ROOT, 'benchmarks')!r})\nimport harness, run_queue\n"
                        f"for c in ('grpo', 'cppo', 'pods'):\n    harness.CONFIGS[c] = ({fake!r}, [])\n"
                        "run_queue.SAVE_EVERY = ['--save_every', '2']\nrun_queue.main(sys.argv[1:])\n")
    env = dict(os.environ, FAKE_SLEEP="0.5")
    proc = subprocess.Popen([sys.executable, str(launcher), *args(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid_files = [harness.run_dir(c, 0, 4, str(tmp_path / "res")) + ".pid" for c in ("cppo", "grpo")]
    ckpt = os.path.join(harness.run_dir("cppo", 0, 4, str(tmp_path / "res")), "checkpoint.pt")
    deadline = time.time() + 60
    while not (os.path.exists(ckpt) and all(os.path.exists(p) for p in pid_files)) and time.time() < deadline:
        time.sleep(0.1)
    children = [int(open(p).read()) for p in pid_files]
    with pytest.raises(SystemExit, match="another queue is running"):  # one queue at a time
        run_queue.main(args(tmp_path))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "stopped: start the queue again" in out
    for pid in children:  # the pair's processes went with the queue
        with pytest.raises(OSError):
            os.kill(pid, 0)
    assert not harness.finished(os.path.dirname(ckpt))
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        run_queue.main(args(tmp_path))
    finally:
        signal.signal(signal.SIGTERM, handlers[0]), signal.signal(signal.SIGINT, handlers[1])
    calls = open(os.path.join(os.path.dirname(ckpt), "calls.txt")).read().splitlines()
    assert len(calls) == 2 and calls[1].endswith("--resume")  # picked up from its checkpoint
    assert [json.loads(line)["step"] for line in open(os.path.join(os.path.dirname(ckpt), "metrics.jsonl"))][:2] == [0, 1]
    assert harness.finished(os.path.dirname(ckpt))
