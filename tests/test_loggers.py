"""--report_to: the checks, TensorBoard (when installed) and a stand-in wandb module."""

import importlib.util
import math
import sys
import types

import pytest

from common.loggers import Reporter, check_report_to, numeric

RECORDS = [{"step": 0, "reward": 0.25, "eval/greedy_acc": 0.5, "tokens/trained": 120, "skipped": True,
            "note": "text", "kl": float("nan"), "none": None},
           {"step": 1, "reward": 0.75, "tokens/trained": 96}]


def test_numeric_keeps_finite_numbers_only():
    assert numeric(RECORDS[0]) == {"reward": 0.25, "eval/greedy_acc": 0.5, "tokens/trained": 120.0}


def test_unknown_tracker_and_missing_package_are_one_error_line(monkeypatch):
    check_report_to("none")
    with pytest.raises(SystemExit, match=r"^error: unknown --report_to 'mlflow' \(none, tensorboard, wandb\)$"):
        check_report_to("mlflow")
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SystemExit, match=r"^error: --report_to wandb needs the wandb package \(pip install wandb\)$"):
        check_report_to("wandb")
    with pytest.raises(SystemExit, match="^error: unknown"):
        Reporter("mlflow", "unused", {})


def test_none_logs_nothing(tmp_path):
    r = Reporter("none", str(tmp_path), {})
    r.log(RECORDS[0]), r.close()
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_scalars_at_each_records_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = Reporter("tensorboard", str(tmp_path), {"seed": 0, "model": "tiny"})
    for record in RECORDS:
        r.log(record)
    r.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"reward", "eval/greedy_acc", "tokens/trained"}
    assert [(e.step, e.value) for e in events.Scalars("reward")] == [(0, 0.25), (1, 0.75)]
    assert [(e.step, e.value) for e in events.Scalars("tokens/trained")] == [(0, 120.0), (1, 96.0)]


def test_wandb_run_gets_config_name_offline_mode_and_every_record(tmp_path, monkeypatch):
    calls = {"log": [], "finished": 0}

    def init(**kwargs):
        calls["init"] = kwargs
        return types.SimpleNamespace(log=lambda values, step: calls["log"].append((step, values)),
                                     finish=lambda: calls.__setitem__("finished", calls["finished"] + 1))

    fake = types.ModuleType("wandb")
    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_report_to("wandb")  # the stand-in counts as installed
    run_dir = tmp_path / "grpo_add_seed0"
    r = Reporter("wandb", str(run_dir), {"seed": 0})
    for record in RECORDS:
        r.log(record)
    r.close()
    assert calls["init"]["name"] == "grpo_add_seed0" and calls["init"]["config"] == {"seed": 0}
    assert calls["init"]["mode"] == "offline" and calls["init"]["dir"] == str(run_dir)
    assert calls["log"] == [(0, numeric(RECORDS[0])), (1, {"reward": 0.75, "tokens/trained": 96.0})]
    assert calls["finished"] == 1 and all(math.isfinite(v) for _, vs in calls["log"] for v in vs.values())
