"""benchmarks/: the statistics every comparison rests on (hand-computed), and compare.py end to end on a
very small budget (two methods, two seeds, a few steps)."""

import json
import math
import os
import sys

import numpy as np
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


def test_crossings_are_censored_at_the_horizon_and_vectorised_over_targets():
    values, reached = harness.crossings(CURVE, [0.75, 0.95, 0.5], "cpu_s")
    assert values == pytest.approx([5.0, 12.0, 0.0]) and list(reached) == [True, False, True]  # 0.95: the run's end
    assert harness.crossings(CURVE, np.array([[0.75], [0.85]]), "updates")[0].shape == (2, 1)  # any target shape
    assert harness.at_budget(CURVE, 15) == pytest.approx(0.8) and harness.at_budget(CURVE, 31) is None


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
    w = cost_model.workload([harness.load(str(tmp_path))])
    assert (w["R"], w["T"], w["U"]) == (64, trained, updates)
    assert w["F"] == pytest.approx(passes_seen * 400)  # old (and reference) log-probs: one pass over the 400 tokens each


def test_workload_prices_the_generation_calls_the_runs_logged(tmp_path):
    """GVM's pilot and its second call; a step that logged one call (no extra samples drawn) counts as one."""
    cfg = {"script": "gvm_raft", "allocation": "gvm", "prompts_per_step": 4, "num_pilot": 2}
    for calls, expected in ((None, [8, 56]), ([2, 2], [8, 56]), ([1, 1], [64]), ([1, 2], [8, 56])):
        with open(tmp_path / "config.json", "w") as f:
            json.dump(cfg, f)
        with open(tmp_path / "metrics.jsonl", "w") as f:
            for step in (1, 2):
                r = {"rollouts/generated_total": 64 * step, "tokens/trained_total": 100 * step, "updates_total": step,
                     "tokens/generated": 1000}
                f.write(json.dumps(r if calls is None else {**r, "rollouts/generate_calls": calls[step - 1]}) + "\n")
        assert cost_model.workload([harness.load(str(tmp_path))])["calls"] == expected, calls
    with open(tmp_path / "config.json", "w") as f:  # a script that generates in two rounds: calls of half each
        json.dump({"script": "rounds"}, f)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step in (1, 2):
            f.write(json.dumps({"rollouts/generated_total": 64 * step, "tokens/trained_total": 100 * step,
                                "updates_total": step, "tokens/generated": 1000, "rollouts/generate_calls": 2}) + "\n")
    assert cost_model.workload([harness.load(str(tmp_path))])["calls"] == [32, 32]


def write_run(path, seed, tau, steps=60, cpu_per_step=1.0, updates_per_step=1, reach=1.0, script="grpo", samples=4):
    """A compact run copy whose accuracy rises as reach * (0.9 - 0.3 exp(-step / tau)), evaluated every 5 steps."""
    acc = lambda s: reach * (0.9 - 0.3 * math.exp(-s / tau))  # noqa: E731
    recs = []
    for s in range(steps):
        r = {"step": s, "updates_total": updates_per_step * (s + 1), "time/train_cpu_total": cpu_per_step * (s + 1),
             "rollouts/generated_total": 128 * (s + 1), "tokens/trained_total": 3000 * (s + 1), "tokens/trained": 3000,
             "tokens/generated": 3800, "time/generate": 0.3, "time/logps": 0.2, "time/update": 0.5, "kl": 0.1}
        if s == 0:
            r.update({"eval/greedy_acc": 0.5} | ({"eval/sampled_acc": acc(0)} if samples else {}))
        if (s + 1) % 5 == 0:
            r.update({"eval_after/greedy_acc": 0.5 + s / 200} | ({"eval_after/sampled_acc": acc(s + 1)} if samples else {}))
        recs.append(r)
    cfg = {"seed": seed, "max_steps": steps, "eval_size": 512, "eval_num_samples": samples, "script": script}
    harness.save({"config": cfg, "records": recs}, str(path))


def synthetic(out, seeds, speed=1.5, missing_dgg=()):
    """grpo; cppo `speed` times faster in updates on every seed (the seed's own difficulty shared, as the same prompt
    stream would), 1.3x the CPU per step; dgg slower, and never reaching the target on the seeds `missing_dgg`."""
    for s in seeds:
        tau = 20 + s
        write_run(out / "runs" / "grpo" / f"seed{s}.jsonl", s, tau)
        write_run(out / "runs" / "cppo" / f"seed{s}.jsonl", s, tau / speed, cpu_per_step=1.3, script="cppo")
        write_run(out / "runs" / "dgg" / f"seed{s}.jsonl", s, tau * 1.2, updates_per_step=3, cpu_per_step=2.5,
                  reach=0.8 if s in missing_dgg else 1.0, script="dgg")


def run_compare(out, seeds, *extra):
    import compare

    argv = ["--existing", "--methods", "grpo", "cppo", "dgg", "--seeds", *map(str, seeds), "--results",
            str(out / "none"), "--out", str(out), *extra]
    compare.main(argv)
    return (out / "table.md").read_text(), (out / "readme.md").read_text(), argv


def test_ten_consistent_pairs_resolve_and_five_never_do(tmp_path):
    synthetic(tmp_path, range(10))
    table, readme, argv = run_compare(tmp_path, range(10))
    assert f"Command: `python benchmarks/compare.py {' '.join(argv)}`" in table  # the command actually run
    assert "quick trial" not in table
    row = next(line for line in table.splitlines() if line.startswith("| cppo | updates |"))
    # 10 pairs all of one sign: p = 2 / 2^10; Holm over the family (cppo: updates, CPU s; dgg: those + rollouts)
    assert "| paired | 0.0020 | 0.010 |" in row and "**resolved: faster**" in row
    assert "Resolved: cppo faster than grpo in updates (1.50x" in readme
    # five pairs: the smallest p is 2/32 = 0.0625, so nothing can be resolved, however consistent the seeds
    five = tmp_path / "five"
    synthetic(five, range(5))
    table5, readme5, _ = run_compare(five, range(5))
    assert "| paired | 0.0625 | 0.312 |" in next(line for line in table5.splitlines() if line.startswith("| cppo | updates |"))
    assert "No claim is resolved." in readme5 and "resolved: faster" not in readme5
    assert "it takes at least **8 pairs of seeds**" in table5  # 2 / 2^8 * 5 tests < 0.05


def test_censored_seeds_are_counted_and_never_make_a_faster_claim(tmp_path):
    synthetic(tmp_path, range(10), missing_dgg=(0, 1, 2))
    table, _, _ = run_compare(tmp_path, range(10))
    dgg = [line for line in table.splitlines() if line.startswith("| dgg | 95% = ")][0]
    assert "7/10 reached, median" in dgg  # the three that never reach are in the count, not dropped
    row = next(line for line in table.splitlines() if line.startswith("| dgg | updates |"))
    assert "| 10/10, 7/10 | <= " in row  # the speed-up is a bound (censored costs are lower bounds)
    seeds = [line for line in table.splitlines() if line.startswith("| dgg | seed")]
    assert len(seeds) == 10 and sum("not reached" in line for line in seeds) == 3
    assert "| dgg | rollouts generated |" in table  # DGG is also tested on its paper's own axis


def test_a_config_short_of_seeds_is_paired_on_the_seeds_it_has_and_its_cpu_only_with_its_twins(tmp_path):
    """dgg has finished 9 of 10 seeds: its tests pair those 9 with grpo's same seeds, never an unpaired test against
    all 10 (which would let one unfinished run move the whole family's Holm verdicts). cppo's CPU seconds pair only
    with the 5 seeds whose twin ran beside it; its updates pair on all 10."""
    synthetic(tmp_path, range(10))
    os.remove(tmp_path / "runs" / "dgg" / "seed9.jsonl")
    for s in range(5):  # twins beside cppo: the co-run's clock (1.3 CPU s per step, as cppo's)
        write_run(tmp_path / "runs" / "grpo_beside_cppo" / f"seed{s}.jsonl", s, 20 + s, cpu_per_step=1.3)
    table, _, _ = run_compare(tmp_path, range(10))
    row = lambda c, a: next(line for line in table.splitlines() if line.startswith(f"| {c} | {a} |"))  # noqa: E731
    assert "| 9/9, 9/9 | " in row("dgg", "updates") and "| paired | 0.0039 |" in row("dgg", "updates")  # 2 / 2^9
    assert "| 10/10, 10/10 | " in row("cppo", "updates") and "| paired | 0.0020 |" in row("cppo", "updates")
    cpu = row("cppo", "CPU s")  # the 5 twins' clock: 1.5x fewer updates at the same CPU per update
    assert "| 5/5, 5/5 | 1.50x [" in cpu and "| paired | 0.0625 |" in cpu


def test_greedy_accuracy_when_nothing_was_sampled_and_a_quick_trial_says_so(tmp_path):
    for s in (0, 1):
        write_run(tmp_path / "runs" / "grpo" / f"seed{s}.jsonl", s, 20, steps=10, samples=0)
    import compare

    compare.main(["--existing", "--seeds", "0", "1", "--steps", "10", "--eval_num_samples", "0", "--methods", "grpo",
                  "--results", str(tmp_path / "none"), "--out", str(tmp_path)])
    table = (tmp_path / "table.md").read_text()
    assert "**A quick trial, not the protocol** (10 steps" in table and "Accuracy is greedy" in table
    curves = json.load(open(tmp_path / "curves.json"))
    assert curves["grpo"]["accuracy"] == "greedy_acc" and curves["grpo"]["acc_mean"][-1] == pytest.approx(0.5 + 9 / 200)
    with pytest.raises(SystemExit, match="^error: no finished grpo run"):  # the saved runs do not match 60 steps
        compare.main(["--existing", "--seeds", "0", "--methods", "grpo", "--results", str(tmp_path / "none"),
                      "--out", str(tmp_path)])


def test_configs_resolve_from_scripts_and_inline_flags():
    assert harness.resolve("cppo_paper") == "cppo_paper"
    assert "dgg" in harness.scripts() and "grpo" in harness.scripts() and "conftest" not in harness.scripts()
    assert harness.resolve("lr2=grpo.py:--learning_rate 2e-6") == "lr2"
    assert harness.CONFIGS["lr2"] == ("grpo.py", ["--learning_rate", "2e-6"])
    import compare

    assert compare.family("lr2") == "GRPO" and compare.family("grpo_dgg_paper") == "DGG" and compare.family("grpo") is None
    for bad in ("nope", "a/b=grpo.py:", "x=missing.py:--seed 1", "cppo=grpo.py:--seed 1"):
        with pytest.raises(SystemExit, match="^error: "):
            harness.resolve(bad)


def test_every_config_parses_and_passes_its_scripts_checks():
    """Each benchmark config is a command line its script accepts, checked as the script checks it (no model
    loads): a typo in a flag or a rejected paper setting fails here, not hours into a queued comparison."""
    import importlib

    from common import runs
    for config, (script, flags) in harness.CONFIGS.items():
        module = importlib.import_module(script[:-3])
        module.validate(runs.parse_args(module.Args, flags))
    gvm, spg = harness.CONFIGS["gvm_paper"][1], lambda f: int(f[f.index("--steps_per_generation") + 1])  # noqa: E731
    assert spg(gvm) == 32 and spg(harness.CONFIGS["raft++_paper"][1]) == 4  # the official mini-batch counts


def test_baselines_hold_the_loss_and_the_warm_start():
    import compare

    assert compare.baseline_of("dppo") == "dppo_grpo" and compare.baseline_of("pods") == "grpo"
    assert harness.CONFIGS["dppo_grpo"][0] == "dppo.py" and "--loss_type" not in harness.CONFIGS["dppo_grpo"][1]
    assert compare.baseline_of("dppo_tiny1") == "dppo_grpo_tiny1" and compare.baseline_of("cppo_tiny1") == "grpo_tiny1"
    assert harness.CONFIGS["cppo_tiny1"] == ("cppo.py", ["--model", "tiny:1"])
    assert compare.family("grpo_tiny1") is None and compare.family("dgg_tiny1") == "DGG"


def test_figures_draw_every_config(tmp_path):
    pytest.importorskip("matplotlib")
    synthetic(tmp_path, range(3), missing_dgg=(0,))
    run_compare(tmp_path, range(3))
    from PIL import Image

    for name in ("panels.png", "break_even.png"):
        width = Image.open(tmp_path / name).size[0]
        assert 780 <= width <= 860  # readable at 800 px: two panels of >= 400 px side by side
    import compare

    groups = {c: [harness.load(str(tmp_path / "runs" / c / f"seed{s}.jsonl")) for s in range(3)] for c in ("grpo", "cppo", "dgg")}
    assert compare.plot_panels(groups, {}, str(tmp_path / "p.png")) == []  # nothing left undrawn


def test_compare_trains_and_reports_end_to_end(tiny_path, tmp_path):
    import compare

    out = compare.main(["--methods", "grpo", "pods", "--seeds", "0", "1", "--steps", "3", "--eval_size", "8",
                        "--results", str(tmp_path / "runs"), "--out", str(tmp_path / "compare")])
    table = open(os.path.join(out, "table.md")).read()
    assert "**A quick trial, not the protocol**" in table and "### Statistical power" in table
    assert table.count("| grpo | seed") == 2 and table.count("| pods | seed") == 2  # per-seed results
    curves = json.load(open(os.path.join(out, "curves.json")))
    assert set(curves) == {"grpo", "pods"}
    assert curves["grpo"]["steps"] == [0, 3] and len(curves["pods"]["acc_mean"]) == 2
    assert curves["pods"]["rollouts"][-1] == 3 * 16 * 16  # n = 16 generated per prompt
    copy = harness.load(os.path.join(out, "runs", "pods", "seed1.jsonl"))  # the compact copy, enough to redo it all
    assert copy["config"]["seed"] == 1 and set(copy["records"][-1]) <= set(harness.KEEP)
    assert os.path.isdir(tmp_path / "runs" / "grpo_steps3_eval8x4" / "seed0")  # a trial never mixes with protocol runs


def test_a_baseline_twin_made_beside_a_config_gives_its_paired_cpu_times(tmp_path):
    synthetic(tmp_path, range(5))
    for s in range(5):  # the queue's twin of grpo, run beside cppo: the same curve, the co-run's slower clock
        write_run(tmp_path / "runs" / "grpo_beside_cppo" / f"seed{s}.jsonl", s, 20 + s, cpu_per_step=1.3)
    table, _, _ = run_compare(tmp_path, range(5))
    cpu = next(line for line in table.splitlines() if line.startswith("| cppo | CPU s |"))
    assert "| 1.50x [" in cpu  # 1.5x fewer updates at the same CPU per update as the twin beside it (not 1.5 / 1.3)
    assert "cppo ran seed for seed beside a twin of grpo" in table


def test_twins_are_the_baseline_runs_made_beside_each_config(tmp_path):
    """The first config paired with a seed ran beside the baseline's own run (recorded as "beside" in its copy), the
    others beside a twin; a config still missing seeds uses its finished ones, and the readme says who was paired."""
    import compare

    for s in (0, 1):
        write_run(tmp_path / "runs" / "grpo" / f"seed{s}.jsonl", s, 20)
        write_run(tmp_path / "runs" / "cppo" / f"seed{s}.jsonl", s, 15, script="cppo")
        write_run(tmp_path / "runs" / "grpo_beside_dgg" / f"seed{s}.jsonl", s, 20)
    write_run(tmp_path / "runs" / "dgg" / "seed0.jsonl", 0, 25, script="dgg")  # seed 1 of dgg has not run yet
    for s in (0, 1):  # mark the baseline's own runs as made beside cppo
        path = tmp_path / "runs" / "grpo" / f"seed{s}.jsonl"
        run = harness.load(str(path))
        harness.save({**run, "beside": "cppo"}, str(path))
    args = compare.argparse.Namespace(steps=60, eval_size=512, eval_num_samples=4, results=str(tmp_path / "none"),
                                      out=str(tmp_path), seeds=[0, 1, 2])
    groups, twins = compare.load_groups(["grpo", "cppo", "dgg"], args, "")
    assert [r["seed"] for r in groups["dgg"]] == [0] and [t["seed"] for t in twins["dgg"]] == [0]
    assert [t["path"] for t in twins["cppo"]] == [str(tmp_path / "runs" / "grpo" / f"seed{s}.jsonl") for s in (0, 1)]
    compare.main(["--existing", "--methods", "cppo", "dgg", "--seeds", "0", "1", "--results", str(tmp_path / "none"),
                  "--out", str(tmp_path)])
    readme = (tmp_path / "readme.md").read_text()
    assert "Seeds per config: grpo 2, cppo 2, dgg 1." in readme and "(benchmarks/run_queue.py): cppo, dgg." in readme
