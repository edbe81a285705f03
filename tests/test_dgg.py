"""dgg.py: the gate on hand-made sequences, a dropped update never reaching the optimiser, the two
neutral settings (K = 1 and tau = inf are grpo.py), argument checks, and a smoke run."""

import math
import os

import pytest
import torch

import dgg
from tests.helpers import cli_error, SMALL, assert_same_as_grpo, records


def primed(norms, window, tau=0.5):
    gate = dgg.GradientGate(window, tau)
    for g in norms:
        gate.update(g)
    return gate


def test_never_before_the_window_is_full():
    gate = primed([1.0, 1.1, 1.0], window=4)  # three increments recorded, the window needs four
    assert not gate.should_drop(100.0, pass_index=2) and gate.z is None


def test_spec_example_spike_fires_and_small_change_depends_on_tau():
    norms = [1.0, 1.1, 1.0, 1.05, 1.05]  # increments 0.10, -0.10, 0.05, 0.00
    gate = primed(norms, window=4)
    assert gate.should_drop(1.05 + 0.5, pass_index=2)
    assert gate.z == pytest.approx(6.592, abs=1e-3)  # (0.5 - 0.0125) / 0.073951, population std
    assert gate.should_drop(1.05 + 0.05, pass_index=2) and gate.z == pytest.approx(0.507, abs=1e-3)
    assert not primed(norms, window=4, tau=1.0).should_drop(1.05 + 0.05, pass_index=2)


def test_the_first_pass_is_never_dropped():
    gate = primed([1.0, 1.1, 1.0, 1.05, 1.05], window=4)
    assert not gate.should_drop(100.0, pass_index=1) and gate.z > 1000  # the z-score is still computed


def test_constant_statistic_gives_finite_z():
    gate = primed([1.0, 2.0, 3.0, 4.0, 5.0], window=4)  # every increment is 1: sigma = 0
    assert not gate.should_drop(6.0, pass_index=3) and gate.z == 0.0
    assert gate.should_drop(6.5, pass_index=3) and math.isfinite(gate.z)


def test_window_slides_and_infinite_tau_never_fires():
    gate = primed([0.0, 10.0] + [10.0 + 0.1 * i for i in range(1, 5)], window=4)
    assert list(gate.deltas) == pytest.approx([0.1] * 4)  # the early jump of 10 has left the window
    assert not primed([1.0, 1.1, 1.0, 1.05, 1.05], window=4, tau=math.inf).should_drop(1e9, pass_index=2)


@pytest.mark.parametrize("flags, message", [
    (["--gate_window", "0"], "error: --gate_window must be >= 1"),
    (["--gate_tau", "nan"], "error: --gate_tau must be a number (inf disables the gate)"),
    (["--num_iterations", "0"], "error: --num_iterations must be >= 1"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("dgg.py", flags) == message


def test_single_use_is_exactly_grpo(tiny_path, tmp_path):
    assert_same_as_grpo(dgg, tiny_path, tmp_path, dict(num_iterations=1), steps=2)


def test_no_gate_is_exactly_grpo_with_reuse(tiny_path, tmp_path):
    assert_same_as_grpo(dgg, tiny_path, tmp_path, dict(num_iterations=3, gate_tau=math.inf, gate_window=1),
                        grpo_kwargs=dict(num_iterations=3), steps=2)


def test_a_dropped_update_never_reaches_the_optimiser(tiny_path, tmp_path, monkeypatch):
    """Force the gate on every reused pass: each batch then gets exactly one update, and Adam counts one."""
    monkeypatch.setattr(dgg.GradientGate, "should_drop", lambda self, g, k: k >= 2)
    common = dict(SMALL, model=tiny_path, output_dir=str(tmp_path), learning_rate=1e-3, max_steps=1)
    gated = dgg.main(dgg.Args(run_name="gated", num_iterations=3, **common))
    once = dgg.main(dgg.Args(run_name="once", num_iterations=1, **common))
    rec = records(gated["run_dir"])[-1]
    assert rec["dgg/fired_at_pass"] == 2 and rec["dgg/passes"] == 1 and rec["updates_total"] == 1
    ckpt = torch.load(os.path.join(gated["run_dir"], "checkpoint.pt"), weights_only=False)
    ref = torch.load(os.path.join(once["run_dir"], "checkpoint.pt"), weights_only=False)
    assert all(s["step"].item() == 1 for s in ckpt["optimizer"]["state"].values())
    # One applied update, as the single-use run. The old log-probs of a reused batch come from their own
    # no-grad pass, so the two agree to float rounding rather than bit for bit.
    for name, p in ref["model"].items():
        torch.testing.assert_close(ckpt["model"][name], p, rtol=0, atol=1e-6)
    for k, s in ref["optimizer"]["state"].items():
        torch.testing.assert_close(ckpt["optimizer"]["state"][k]["exp_avg_sq"], s["exp_avg_sq"], rtol=1e-4, atol=1e-12)


def test_smoke_run_logs_the_gate_and_the_divergence(tiny_path, tmp_path):
    out = dgg.main(dgg.Args(model=tiny_path, output_dir=str(tmp_path), gate_window=2, **dict(SMALL, max_steps=3)))
    recs = records(out["run_dir"])
    for r in recs:
        if "dgg/passes" in r:
            assert 1 <= r["dgg/passes"] <= 4 and "dgg/lm_head_grad_norm/pass1" in r
            assert r["dgg/rel_change/lm_head"] > 0 and r["dgg/rel_change/mid_layer"] > 0
    updates = sum(r.get("dgg/passes", 0) for r in recs)
    assert recs[-1]["updates_total"] == updates and recs[-1]["dgg/fired_total"] == sum(
        r["dgg/fired_at_pass"] > 0 for r in recs if "dgg/fired_at_pass" in r)
