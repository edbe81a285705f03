"""tools/plot.py on synthetic run folders."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tools.plot import labels, load_run, moving_average, plot, select


def write_run(path, rewards, eval_steps):
    """A run of len(rewards) steps, 2 s each, evaluated at the start and after the steps in eval_steps."""
    os.makedirs(path)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for s, r in enumerate(rewards):
            m = {"step": s, "reward": r, "frac_reward_zero_std": 0.5, "completions/mean_length": 30 + s,
                 "tokens/trained": 100 * (s + 1), "time/train_total": 2.0 * (s + 1)}
            if s == 0:
                m.update({"eval/sampled_acc": 0.5, "eval/greedy_acc": 0.4})
            if s in eval_steps:
                m.update({"eval_after/sampled_acc": 0.5 + 0.1 * s, "eval_after/greedy_acc": 0.6})
            f.write(json.dumps(m) + "\n")
    return str(path)


def test_series_put_the_warm_start_at_zero_and_evaluations_after_their_step(tmp_path):
    run = write_run(tmp_path / "grpo_add_seed0", [0.1, 0.2, 0.3], eval_steps=[1, 2])
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "rew')  # a running script's torn last line is skipped
    c = load_run(run)
    assert c["reward"] == ([1, 2, 3], [2.0, 4.0, 6.0], [0.1, 0.2, 0.3])
    assert c["sampled_acc"] == ([0, 2, 3], [0.0, 4.0, 6.0], [0.5, pytest.approx(0.6), pytest.approx(0.7)])
    assert c["greedy_acc"][2] == [0.4, 0.6, 0.6]
    assert c["tokens/trained"][2] == [100, 200, 300]


def test_bad_folders_are_one_error_line(tmp_path):
    with pytest.raises(SystemExit, match="^error: cannot read .*metrics.jsonl"):
        load_run(str(tmp_path / "missing"))
    run = write_run(tmp_path / "r", [0.1, 0.2], eval_steps=[])
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        f.write("not json\n{}\n")
    with pytest.raises(SystemExit, match="^error: .* line 1 is not JSON$"):
        load_run(run)


def test_moving_average_and_labels():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert labels(["runs/a", "runs/b/"]) == ["a", "b"]
    assert labels(["x/run", "y/run"]) == ["x/run", "y/run"]


def test_missing_matplotlib_is_one_clear_line(tmp_path, monkeypatch):
    run = write_run(tmp_path / "r", [0.1], eval_steps=[0])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(SystemExit, match="^error: tools.plot needs matplotlib"):
        plot([run], str(tmp_path / "out.png"))


def test_cli_draws_two_runs(tmp_path):
    pytest.importorskip("matplotlib")
    a = write_run(tmp_path / "grpo_add_seed0", [0.1, 0.2, 0.3], eval_steps=[2])
    b = write_run(tmp_path / "pods_add_seed0", [0.2, 0.2, 0.4], eval_steps=[1, 2])
    out = tmp_path / "fig" / "curves.png"
    proc = subprocess.run([sys.executable, "-m", "tools.plot", a, b, "-o", str(out), "--smooth", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10000


def test_output_path_names_what_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path / "r", [0.1, 0.2], eval_steps=[1])
    folder = tmp_path / "figs"
    folder.mkdir()
    assert plot([run], str(folder)) == str(folder / "curves.png") and (folder / "curves.png").exists()
    bare = tmp_path / "curves"
    assert plot([run], str(bare)) == str(bare) + ".png" and os.path.exists(str(bare) + ".png")
    with pytest.raises(SystemExit, match=r"^error: -o .*\.foo: matplotlib cannot write \.foo"):
        plot([run], str(tmp_path / "x.foo"))
    proc = subprocess.run([sys.executable, "-m", "tools.plot", run, "-o", str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == str(folder / "curves.png")  # the printed path exists


def test_a_bare_number_line_is_skipped_with_a_note(tmp_path, capsys):
    run = write_run(tmp_path / "r", [0.1, 0.2], eval_steps=[])
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write("42\n[1, 2]\n" + json.dumps({"step": 2, "reward": 0.3}) + "\n")
    c = load_run(run)
    assert c["reward"][2] == [0.1, 0.2, 0.3]
    assert "skipped 2 line(s) that are not step records" in capsys.readouterr().err


def test_nothing_sampled_shows_greedy_accuracy_not_a_flat_zero(tmp_path):
    run = write_run(tmp_path / "r", [0.1, 0.2, 0.3], eval_steps=[2])
    path = os.path.join(run, "metrics.jsonl")
    recs = [json.loads(line) for line in open(path)]
    with open(path, "w") as f:  # an older run logged a sampled accuracy of 0.0 with nothing sampled
        f.writelines(json.dumps({k: 0.0 if k.endswith("sampled_acc") else v for k, v in r.items()}) + "\n" for r in recs)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"eval_num_samples": 0}, f)
    c = load_run(run)
    assert "sampled_acc" not in c and c["greedy_acc"][2] == [0.4, 0.6]
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    drawn = {}
    real = plt.Axes.plot

    def spy(ax, *a, **k):
        drawn.setdefault(ax.get_title() or id(ax), []).append((k.get("label"), list(a[1])))
        return real(ax, *a, **k)

    plt.Axes.plot = spy
    try:
        plot([run], str(tmp_path / "o.png"))
    finally:
        plt.Axes.plot = real
    labelled = [lab for lines in drawn.values() for lab, _ in lines]
    assert "r (greedy: nothing sampled)" in labelled  # the sampled panel shows greedy, and says so
    assert all(max(v) > 0 for lines in drawn.values() for _, v in lines)  # no flat zero drawn


def test_metrics_patterns_pick_any_logged_metric(tmp_path):
    run = write_run(tmp_path / "r", [0.1, 0.2], eval_steps=[1])
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 2, "dgg/gate_pass": 0.5, "dgg/kept": 3}) + "\n")
    runs = [load_run(run)]
    assert [k for k, _ in select(runs, ["dgg/*"])] == ["dgg/gate_pass", "dgg/kept"]
    assert [k for k, _ in select(runs, ["reward", "sampled_acc"])] == ["reward", "sampled_acc"]
    with pytest.raises(SystemExit, match="^error: no logged metric matches nope/\\*; logged: "):
        select(runs, ["nope/*"])
    pytest.importorskip("matplotlib")
    assert os.path.exists(plot([run], str(tmp_path / "m.png"), metrics=["dgg/*"]))
