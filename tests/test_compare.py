"""benchmarks/compare.py on a very small budget: two methods, one seed, a few steps."""

import json
import os

import pytest

from tests.helpers import ROOT


def test_compare_writes_the_table_curves_and_figure(tiny_path, tmp_path):
    import sys
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import compare

    out = compare.main(["--methods", "grpo", "pods", "--seeds", "0", "--steps", "3", "--eval_size", "8",
                        "--results", str(tmp_path / "runs"), "--out", str(tmp_path / "compare")])
    table = open(os.path.join(out, "table.md")).read()
    assert "| grpo |" in table and "| pods |" in table and "Target: 99% of grpo's peak" in table
    curves = json.load(open(os.path.join(out, "curves.json")))
    assert set(curves) == {"grpo", "pods"}
    assert curves["grpo"]["steps"] == [0, 3] and len(curves["pods"]["acc_mean"]) == 2
    assert curves["pods"]["rollouts"][-1] == 3 * 16 * 16  # n = 16 generated per prompt
    pytest.importorskip("matplotlib")
    assert os.path.getsize(os.path.join(out, "curves.png")) > 10_000
