"""Every method script is grpo.py plus its marked method code, and nothing else (see tools/diffs.py).
The scripts are discovered, so a new one is checked without being listed anywhere."""

import pytest

from tools import diffs

SCRIPTS = sorted(diffs.discover())


def test_the_six_methods_are_discovered():
    assert {"pods.py", "cppo.py", "dppo.py", "d3s.py", "gvm_raft.py", "dgg.py"} <= set(SCRIPTS)
    assert "grpo.py" not in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_code_outside_the_marked_regions_is_grpo(script):
    name, _ = diffs.discover()[script]
    assert any(diffs.marked(diffs.code_lines(script), name)), f"{script} has no '# === {name}' region"
    assert diffs.drift(script) == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_diff_stays_within_budget(script):
    name, budget = diffs.discover()[script]
    assert budget is not None, (f"{script} has '# === {name}' regions but no budget: add the line "
                                f"'DIFF_BUDGET = N  # === {name}: changed code lines against grpo.py ===' after its imports")
    assert diffs.changed_lines(script) <= budget, f"{script}: {diffs.changed_lines(script)} changed lines > {budget}"


def test_drift_is_detected():
    lines = ["x = 1", "    # === PODS", "y = 2", "    # === end PODS ===", "z = 3  # === PODS: one line ==="]
    assert diffs.marked(lines, "PODS") == [False, True, True, True, True]
    with pytest.raises(ValueError):
        diffs.marked(["# === PODS", "y = 2"], "PODS")


def test_discovery_finds_a_new_script_and_its_budget(tmp_path):
    (tmp_path / "grpo.py").write_text('"""doc"""\nx = 1\n')
    (tmp_path / "mine.py").write_text('"""doc"""\nDIFF_BUDGET = 7  # === MINE: budget ===\nx = 1\n')
    (tmp_path / "helper.py").write_text('"""no markers"""\n')
    (tmp_path / "nobudget.py").write_text('"""doc"""\n# === NEW\ny = 2\n# === end NEW ===\n')
    assert diffs.discover(str(tmp_path)) == {"mine.py": ("MINE", 7), "nobudget.py": ("NEW", None)}


def test_rendered_diffs_show_code_only(tmp_path):
    diffs.render(str(tmp_path))
    index = (tmp_path / "README.md").read_text()
    for script in SCRIPTS:
        assert script in index and (tmp_path / script.replace(".py", ".html")).exists()
        patch = (tmp_path / script.replace(".py", ".diff")).read_text()
        assert "+++ " + script in patch
        assert "Paper:" not in patch  # the module docstrings are left out
