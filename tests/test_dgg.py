"""dgg.py: the gate on hand-made pass sequences (same-batch increments only, every observed increment
enters its window, per-pass and shared windows, norm and energy), the tied lm_head, a dropped update
never reaching the optimiser, an exact --resume of the gate, the two neutral settings (K = 1 and
tau = inf are grpo.py), argument checks, and a smoke run."""

import math
import os
import re

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import dgg
from tests.helpers import cli_error, SMALL, assert_same_as_grpo, records


def feed(gate, batches):
    """Each batch is the list of its passes' norms g_1, g_2, ...; returns what the gate said at every pass."""
    return [[gate.should_drop(g, k) for k, g in enumerate(norms, 1)] for norms in batches]


def with_increments(increments, start=1.0):
    """Two-pass batches whose pass-2 increment is each of `increments` (pass 1 wanders between batches)."""
    return [[start + 7 * i, start + 7 * i + x] for i, x in enumerate(increments)]


def test_cross_batch_jumps_never_enter_the_window():
    gate = dgg.GradientGate(window=3, tau=0.5)
    feed(gate, [[1.0, 0.9, 0.85], [5.0, 4.9, 4.8], [0.2, 0.1]])  # pass 1 jumps by +4.15 and -4.6
    assert list(gate.windows[2]) == pytest.approx([-0.1, -0.1, -0.1])
    assert list(gate.windows[3]) == pytest.approx([-0.05, -0.1])
    assert set(gate.windows) == {2, 3}  # pass 1 never has a window


def test_spec_example_as_same_batch_increments():
    """algorithms.md 7.5: window [0.10, -0.10, 0.05, 0.00]; an increment of 0.5 gives z = 6.592 and fires."""
    gate = dgg.GradientGate(window=4, tau=0.5)
    assert feed(gate, with_increments([0.10, -0.10, 0.05, 0.00])) == [[False, False]] * 4
    assert gate.z is None  # the fourth increment filled the window; it was not scored
    assert feed(gate, [[2.0, 2.5]]) == [[False, True]] and gate.z == pytest.approx(6.592, abs=1e-3)
    gate = dgg.GradientGate(window=4, tau=0.5)
    feed(gate, with_increments([0.10, -0.10, 0.05, 0.00]))
    assert feed(gate, [[2.0, 2.05]]) == [[False, True]] and gate.z == pytest.approx(0.507, abs=1e-3)
    gate = dgg.GradientGate(window=4, tau=1.0)
    feed(gate, with_increments([0.10, -0.10, 0.05, 0.00]))
    assert feed(gate, [[2.0, 2.05]]) == [[False, False]]  # the same increment passes at tau = 1


def test_fired_increments_enter_the_window():
    gate = dgg.GradientGate(window=2, tau=0.5)
    feed(gate, with_increments([0.0, 0.2]))  # window [0.0, 0.2]: mean 0.1, std 0.1
    assert feed(gate, [[3.0, 3.5]]) == [[False, True]] and gate.z == pytest.approx(4.0)
    assert list(gate.windows[2]) == pytest.approx([0.2, 0.5])  # the fired 0.5 is in, the oldest slid out
    # Against [0.2, 0.5] (mean 0.35, std 0.15) an increment of 0.4 scores 0.333 and passes. Had the fired
    # increment been left out, the window [0.0, 0.2] would have scored it 3.0 and fired.
    assert feed(gate, [[4.0, 4.4, 4.4]]) == [[False, False, False]] and gate.z is None  # pass 3: no window yet
    assert gate.windows[3][0] == pytest.approx(0.0)


def test_the_window_must_be_full_and_the_first_pass_is_never_scored():
    gate = dgg.GradientGate(window=3, tau=0.5)
    assert feed(gate, [[1.0, 100.0], [1.0, 1.1]]) == [[False, False], [False, False]] and gate.z is None
    feed(gate, [[1.0, 1.2]])  # the third increment fills pass 2's window
    assert not gate.should_drop(1e9, pass_index=1) and gate.z is None  # a new batch: pass 1 only remembers g
    assert gate.should_drop(1e9 + 1e6, pass_index=2) and gate.z > 1.0


def test_per_pass_windows_against_one_shared_window():
    """Pass 2 falls by about 0.1, pass 3 by about 0.02. A shared window mixes the two, so every pass-3
    increment looks 'high' (above the mixed mean) and fires; per-pass windows compare like with like."""
    batches = [[1.0, 0.9, 0.88], [1.0, 0.88, 0.86], [1.0, 0.9, 0.88], [1.0, 0.88, 0.86]]
    shared, per_pass = dgg.GradientGate(4, 0.5, scope="shared"), dgg.GradientGate(4, 0.5)
    feed(shared, batches[:2]), feed(per_pass, batches)
    assert feed(shared, [[1.0, 0.89, 0.87]]) == [[False, False, True]] and shared.z == pytest.approx(0.997, abs=1e-3)
    assert feed(per_pass, [[1.0, 0.89, 0.87]]) == [[False, False, False]] and per_pass.z == pytest.approx(0.0, abs=1e-6)
    assert list(shared.windows) == [0] and len(shared.windows[0]) == 4


def test_energy_is_the_increment_of_the_squared_norm():
    gate = dgg.GradientGate(window=2, tau=0.5, statistic="energy")
    feed(gate, [[1.0, 2.0], [3.0, 1.0], [2.0, 3.0]])  # increments of g^2: 3, -8; then 5 is scored
    assert list(gate.windows[2]) == pytest.approx([-8.0, 5.0])
    assert gate.z == pytest.approx((5 - (-2.5)) / 5.5)


def test_constant_increments_give_a_finite_z_and_infinite_tau_never_fires():
    gate = dgg.GradientGate(window=3, tau=0.5)
    feed(gate, with_increments([0.5, 0.5, 0.5]))  # exact in binary: sigma = 0
    assert feed(gate, [[5.0, 5.5, 7.0]]) == [[False, False, False]]  # pass 3 has no full window
    assert list(gate.windows[2]) == [0.5] * 3 and list(gate.windows[3]) == [1.5]
    assert feed(gate, [[5.0, 5.75]]) == [[False, True]] and gate.z == pytest.approx(0.25 / 1e-8)
    never = dgg.GradientGate(window=2, tau=math.inf)
    assert feed(never, with_increments([0.0, 0.1, 1e9, -1e9])) == [[False, False]] * 4


def test_a_non_finite_pass_breaks_the_chain():
    gate = dgg.GradientGate(window=2, tau=0.5)
    feed(gate, [[1.0, float("nan"), 0.9, 0.8]])  # no increment touches the nan: 0.9 has no predecessor
    assert set(gate.windows) == {4} and list(gate.windows[4]) == pytest.approx([-0.1])


def test_the_gate_reads_the_shared_matrix_of_a_tied_model():
    """With tied embeddings the gate's g is the norm of the shared matrix's gradient: output use + input use."""
    cfg = dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, max_position_embeddings=32)
    torch.manual_seed(0)
    tied = Qwen2ForCausalLM(Qwen2Config(**cfg, tie_word_embeddings=True))
    untied = Qwen2ForCausalLM(Qwen2Config(**cfg, tie_word_embeddings=False))
    untied.model.load_state_dict(tied.model.state_dict())
    untied.lm_head.weight.data.copy_(tied.model.embed_tokens.weight)
    assert dgg.gated_weight(tied) is tied.get_input_embeddings().weight
    assert dgg.gated_weight(untied) is untied.lm_head.weight
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    for model in (tied, untied):
        model(ids, labels=ids).loss.backward()
    g = dgg.gated_weight(tied).grad.norm().item()
    out_use, in_use = untied.lm_head.weight.grad, untied.model.embed_tokens.weight.grad
    assert g == pytest.approx((out_use + in_use).norm().item(), rel=1e-5)
    assert abs(g - out_use.norm().item()) > 1e-3 * g  # the input use is really in it


@pytest.mark.parametrize("flags, message", [
    (["--gate_window", "1"], "error: --gate_window must be >= 2 (a z-score needs a spread)"),
    (["--gate_tau", "-1"], "error: --gate_tau must be >= 0 (inf disables the gate)"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("dgg.py", flags) == message


@pytest.mark.parametrize("kwargs, message", [
    (dict(gate_window=0), "--gate_window must be >= 2"),
    (dict(gate_tau=float("nan")), "--gate_tau must be >= 0"),
    (dict(gate_tau=-0.1), "--gate_tau must be >= 0"),
    (dict(gate_statistic="l1"), "unknown --gate_statistic 'l1' (norm, energy)"),
    (dict(gate_scope="global"), "unknown --gate_scope 'global' (per_pass, shared)"),
    (dict(num_iterations=0), "--num_iterations must be >= 1"),
])
def test_argument_checks(kwargs, message):
    with pytest.raises(SystemExit, match="^" + re.escape("error: " + message)):
        dgg.validate(dgg.Args(**kwargs))
    dgg.validate(dgg.Args(gate_tau=math.inf, gate_window=2, gate_statistic="energy", gate_scope="shared"))


def test_single_use_is_exactly_grpo(tiny_path, tmp_path):
    assert_same_as_grpo(dgg, tiny_path, tmp_path, dict(num_iterations=1), steps=2)


def test_no_gate_is_exactly_grpo_with_reuse(tiny_path, tmp_path):
    assert_same_as_grpo(dgg, tiny_path, tmp_path, dict(num_iterations=3, gate_tau=math.inf, gate_window=2),
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


def test_resume_continues_the_same_gate(tiny_path, tmp_path, monkeypatch):
    """Killed after the step-2 checkpoint, the resumed run scores its steps against the saved windows (a
    fresh gate would have none yet) and ends with the uninterrupted run's weights."""
    common = dict(SMALL, model=tiny_path, output_dir=str(tmp_path), max_steps=4, save_every=2, num_iterations=2,
                  gate_window=2, eval_num_samples=0, log_samples_every=0)
    straight = dgg.main(dgg.Args(run_name="straight", **common))
    calls, generate = [], dgg.generate

    class Killed(Exception):
        pass

    def killed_at_step_2(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return generate(*a, **k)

    monkeypatch.setattr(dgg, "generate", killed_at_step_2)
    with pytest.raises(Killed):
        dgg.main(dgg.Args(run_name="killed", **common))
    monkeypatch.setattr(dgg, "generate", generate)
    resumed = dgg.main(dgg.Args(run_name="killed", resume=True, **common))
    a, b = records(straight["run_dir"]), records(resumed["run_dir"])
    assert [r["step"] for r in b] == [0, 1, 2, 3] and any("dgg/z/pass2" in r for r in a[2:])
    assert [{k: v for k, v in r.items() if k.startswith("dgg/")} for r in a] == [
        {k: v for k, v in r.items() if k.startswith("dgg/")} for r in b]
    wa = torch.load(os.path.join(straight["run_dir"], "checkpoint.pt"), weights_only=False)["model"]
    wb = torch.load(os.path.join(resumed["run_dir"], "checkpoint.pt"), weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_smoke_run_logs_the_gate_and_the_divergence(tiny_path, tmp_path):
    out = dgg.main(dgg.Args(model=tiny_path, output_dir=str(tmp_path), gate_window=2, **dict(SMALL, max_steps=3)))
    recs = records(out["run_dir"])
    for r in recs:
        if "dgg/passes" in r:
            assert 1 <= r["dgg/passes"] <= 4 and "dgg/lm_head_grad_norm/pass1" in r and "dgg/z/pass1" not in r
            assert r["dgg/rel_change/lm_head"] > 0 and r["dgg/rel_change/mid_layer"] > 0
    assert "dgg/z/pass2" in recs[2]  # two batches filled pass 2's window
    updates = sum(r.get("dgg/passes", 0) for r in recs)
    assert recs[-1]["updates_total"] == updates and recs[-1]["dgg/fired_total"] == sum(
        r["dgg/fired_at_pass"] > 0 for r in recs if "dgg/fired_at_pass" in r)
