"""Every method script is grpo.py plus its marked method code, and nothing else (see tools/diffs.py)."""

import pytest

from tools import diffs


@pytest.mark.parametrize("script", sorted(diffs.METHODS))
def test_code_outside_the_marked_regions_is_grpo(script):
    name, _ = diffs.METHODS[script]
    assert any(diffs.marked(diffs.code_lines(script), name)), f"{script} has no '# === {name}' region"
    assert diffs.drift(script) == []


@pytest.mark.parametrize("script", sorted(diffs.METHODS))
def test_diff_stays_within_budget(script):
    _, budget = diffs.METHODS[script]
    assert diffs.changed_lines(script) <= budget, f"{script}: {diffs.changed_lines(script)} changed lines"


def test_drift_is_detected():
    lines = ["x = 1", "    # === PODS", "y = 2", "    # === end PODS ===", "z = 3  # === PODS: one line ==="]
    assert diffs.marked(lines, "PODS") == [False, True, True, True, True]
    with pytest.raises(ValueError):
        diffs.marked(["# === PODS", "y = 2"], "PODS")


def test_rendered_diffs(tmp_path):
    diffs.render(str(tmp_path))
    index = (tmp_path / "README.md").read_text()
    for script in diffs.METHODS:
        assert script in index and (tmp_path / script.replace(".py", ".html")).exists()
        assert "+++ " + script in (tmp_path / script.replace(".py", ".diff")).read_text()
