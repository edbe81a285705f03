"""benchmarks/: the statistics every comparison rests on (hand-computed), and compare.py end to end on a
very small budget (two methods, two seeds, a few steps)."""

import json
import math
import os
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import cost_model  # noqa: E402
import harness  # noqa: E402

# evaluation points: (updates, cpu s, rollouts, tokens, accuracy, steps)
CURVE = [(0, 0.0, 0, 0, 0.50, 0), (10, 4.0, 100, 1000, 0.70, 10), (20, 8.0, 200, 2000, 0.90, 20), (30, 12.0, 300, 3000, 0.80, 30)]


def test_crossing_interpolates_every_axis_between_the_evaluations_around_it():
    hit = harness.crossing(CURVE, 0.75)  # a quarter of the way from 0.70 (10 updates) to 0.90 (20)
    assert hit == pytest.approx({"updates": 12.5, "cpu_s": 5.0, "rollouts": 125, "tokens": 1250, "steps": 12.5})
    assert harness.crossing(CURVE, 0.95) is None  # never reached
    assert harness.crossing(CURVE, 0.5)["updates"] == 0  # the warm start is already there
    assert harness.crossing(CURVE, 0.85)["updates"] == pytest.approx(17.5)  # the first crossing, not the later dip


def test_area_is_the_mean_accuracy_over_the_first_k_updates():
    # [0, 10]: mean 0.6; [10, 20]: 0.8; [20, 25]: from 0.90 to 0.85, mean 0.875
    assert harness.area(CURVE, 25) == pytest.approx((10 * 0.6 + 10 * 0.8 + 5 * 0.875) / 25)
    assert harness.area(CURVE, 30) == pytest.approx((6 + 8 + 8.5) / 30)
    assert harness.area(CURVE, 31) is None  # the run stops short of the limit


def test_bootstrap_intervals():
    est, lo, hi = harness.interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert est == 3.0 and 1.6 <= lo < 3.0 < hi <= 4.4
    assert math.isnan(harness.interval([2.0])[1])  # one seed: no interval
    assert harness.interval([2.0, 2.0, 2.0])[1:] == (2.0, 2.0)
    est, lo, hi = harness.ratio_interval([40.0, 44.0, 36.0], [20.0, 22.0, 18.0])
    assert est == pytest.approx(2.0) and lo > 1.5 and hi < 2.6  # resolved: excludes 1
    assert math.isnan(harness.ratio_interval([40.0], [20.0, 22.0])[1])


def test_generation_cost_interpolates_in_log_batch_size():
    cal = {"c_gen": {"32": 4.0, "128": 2.0}}
    assert cost_model.c_gen(cal, 64) == pytest.approx(3.0)  # halfway in log2: 32 -> 64 -> 128
    assert cost_model.c_gen(cal, 8) == 4.0 and cost_model.c_gen(cal, 4096) == 2.0  # held at the ends
    pods, cppo = cost_model.modelled({"R": 64, "T": 100}, {"R": 16, "T": 100})
    assert pods == pytest.approx((5.03 + 0.0542 * 64 + 1.7) / 7.6, rel=1e-6)  # PODS 64/16: ~1.33x its GRPO
    assert cppo == pytest.approx(0.06 * 4 + 0.94)


@pytest.mark.parametrize("cfg, passes_seen", [({"script": "grpo"}, 0), ({"script": "cppo", "num_iterations": 2, "beta": 0.04}, 2),
                                               ({"script": "gvm_raft", "steps_per_generation": 8, "beta": 0.001}, 2)])
def test_workload_counts_each_no_grad_pass_over_the_batch_once(tmp_path, cfg, passes_seen):
    updates = cfg.get("num_iterations", 1) * cfg.get("steps_per_generation", 1)
    trained = 400 * cfg.get("num_iterations", 1)  # a 400-token batch, trained num_iterations times per step
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step in (1, 2):
            f.write(json.dumps({"rollouts/generated_total": 64 * step, "tokens/trained_total": trained * step,
                                "updates_total": updates * step, "tokens/generated": 1000}) + "\n")
    w = cost_model.workload([str(tmp_path)])
    assert (w["R"], w["T"], w["U"]) == (64, trained, updates)
    assert w["F"] == pytest.approx(passes_seen * 400)  # old (and reference) log-probs: one pass over the 400 tokens each


def test_compare_writes_tables_with_intervals_and_the_figures(tiny_path, tmp_path):
    import compare

    out = compare.main(["--methods", "grpo", "pods", "--seeds", "0", "1", "--steps", "3", "--eval_size", "8",
                        "--results", str(tmp_path / "runs"), "--out", str(tmp_path / "compare")])
    table = open(os.path.join(out, "table.md")).read()
    assert "Target: 95% of grpo's peak" in table and "### Statistical power" in table
    rows = [line for line in table.splitlines() if line.startswith("| pods | 2 |")]
    assert len(rows) == 1 and rows[0].count("[") >= 2  # two seeds: intervals in the headline row
    assert table.count("| grpo | seed") == 2 and table.count("| pods | seed") == 2  # per-seed results
    curves = json.load(open(os.path.join(out, "curves.json")))
    assert set(curves) == {"grpo", "pods"}
    assert curves["grpo"]["steps"] == [0, 3] and len(curves["pods"]["acc_mean"]) == 2
    assert curves["pods"]["rollouts"][-1] == 3 * 16 * 16  # n = 16 generated per prompt
    pytest.importorskip("matplotlib")
    assert os.path.getsize(os.path.join(out, "panels.png")) > 10_000
    assert os.path.exists(os.path.join(out, "break_even.png")) or "break_even" not in table


HAND_TABLE = """# A report

## Against grpo (the defaults)

| config | seeds | reached | updates to target | rollouts generated to target | tokens trained to target | CPU s to target | peak acc | AUC | speed-up in updates | speed-up in CPU time |
|---|---|---|---|---|---|---|---|---|---|---|
| grpo | 3 | 3/3 | 40 | 400 | 4000 | 40 | 0.9 | 0.8 | 1.00x | 1.00x |
| fast | 3 | 2/3 | - | - | - | - | 0.9 | 0.8 | 2.00x [1.80-2.20]* | 1.10x [0.90-1.30] |

| config | seed | updates | rollouts | tokens | CPU s | peak | AUC |
|---|---|---|---|---|---|---|---|
| grpo | seed0 | 40.0 | 400 | 4000 | 40.0 | 0.900 | 0.800 |
| grpo | seed1 | 44.0 | 440 | 4400 | 44.0 | 0.900 | 0.800 |
| grpo | seed2 | 36.0 | 360 | 3600 | 36.0 | 0.900 | 0.800 |
| fast | seed0 | 20.0 | 200 | 2000 | 20.0 | 0.900 | 0.800 |
| fast | seed1 | 22.0 | 220 | 2200 | 22.0 | 0.900 | 0.800 |
| fast | seed2 | not reached | - | - | - | 0.800 | 0.700 |
"""


def test_reanalysis_keeps_the_censored_seed_and_pairs_the_seeds():
    import reanalysis

    sections = reanalysis.parse(HAND_TABLE)
    assert sections["grpo"]["stars"] == {("fast", "updates")}
    assert sections["grpo"]["configs"]["fast"][2] == (2, None)
    curves = {"grpo": {"updates": [0, 60], "cpu_s": [0, 60]}, "fast": {"updates": [0, 60], "cpu_s": [0, 60]}}
    rows = {r["axis"]: r for r in reanalysis.analyse(sections, curves)}
    up = rows["updates"]
    # log(40/20), log(44/22), log(36/60) = 0.693, 0.693, -0.511: of the 8 sign flips, |sum| >= 0.875 for 4
    assert up["paired"] and up["p"] == pytest.approx(0.5) and up["reached"] == (3, 3, 2, 3)
    assert up["adjusted"] == pytest.approx(1.0) and up["old_star"]  # Holm over the family of 2: 2 * 0.5
    assert up["speedup"] == pytest.approx((40 * 44 * 36 / (20 * 22 * 60)) ** (1 / 3))
    text = reanalysis.render(list(rows.values()), "table.md")
    assert "**0 of the 1 claims the report marked resolved (*) survive**" in text
