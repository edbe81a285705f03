"""benchmarks/trl_plugins.py's curve axis: a TRL run's evaluations counted in rollout batches, as a script's are."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import trl_plugins  # noqa: E402


def fake_run(path, config, evaluated_after):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 0, "eval/sampled_acc": 0.5}) + "\n")
        for step, acc in evaluated_after.items():
            f.write(json.dumps({"step": step - 1, "eval_after/sampled_acc": acc}) + "\n")


def test_trl_steps_become_rollout_batches(tmp_path):
    # DGG's plug-in: K = 4 passes (num_iterations), one optimizer step each: 4 TRL steps per rollout batch
    trl = str(tmp_path / "trl")
    fake_run(trl, {"flags": {"num_iterations": 4, "steps_per_generation": 2, "gradient_accumulation_steps": 2}},
             {5: 0.6, 10: 0.7, 20: 0.8, 40: 0.9})
    assert trl_plugins.steps_per_batch(trl) == 4
    assert trl_plugins.accuracy_by_batch(trl) == {0: 0.5, 5: 0.8, 10: 0.9}  # steps 5 and 10 fall inside a batch
    # a script: one step is one rollout batch, whatever its passes
    script = str(tmp_path / "script")
    fake_run(script, {"num_iterations": 4, "max_steps": 60}, {5: 0.6, 10: 0.7})
    assert trl_plugins.steps_per_batch(script) == 1
    assert trl_plugins.accuracy_by_batch(script) == {0: 0.5, 5: 0.6, 10: 0.7}
