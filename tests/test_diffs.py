"""Every method script is grpo.py plus its marked method code, and nothing else.

A method's own lines live between `# === NAME ...` and `# === end NAME ===` (or on one line that
carries a `# === NAME ... ===` comment). Outside those regions a script must match grpo.py line for
line (the module docstring excepted), and its diff against grpo.py must stay within the budget its
issue sets, so that `diff grpo.py <method>.py` shows the algorithm and little else.
"""

import difflib
import os
import re

import pytest

from tests.helpers import ROOT

# script -> (marker name, budget of changed code lines: lines added + lines removed, docstring excluded)
METHODS = {"pods.py": ("PODS", 80), "cppo.py": ("CPPO", 80), "dgg.py": ("DGG", 80), "d3s.py": ("D3S", 100), "dppo.py": ("DPPO", 100), "gvm_raft.py": ("GVM", 150)}


def code_lines(path):
    """The file's lines after its module docstring."""
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    assert text.startswith('"""'), f"{path} must open with its docstring"
    return text[text.index('"""', 3) + 3:].splitlines()


def marked(lines, name):
    """Which lines belong to the method: its marked regions, markers included."""
    inside, flags = False, []
    for line in lines:
        opens = re.match(rf"\s*# === {name}\b", line) is not None
        closes = re.match(rf"\s*# === end {name} ===", line) is not None
        flags.append(inside or opens or closes or f"# === {name}" in line)
        inside = (inside or opens) and not closes
        if opens and line.rstrip().endswith("==="):  # a one-line marker opens no region
            inside = False
    assert not inside, f"an unclosed '# === {name}' region"
    return flags


def changes(script):
    base, mine = code_lines("grpo.py"), code_lines(script)
    return base, mine, difflib.SequenceMatcher(None, base, mine, autojunk=False).get_opcodes()


@pytest.mark.parametrize("script", sorted(METHODS))
def test_code_outside_the_marked_regions_is_grpo(script):
    name, _ = METHODS[script]
    base, mine, ops = changes(script)
    flags = marked(mine, name)
    assert any(flags), f"{script} has no '# === {name}' region"
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        if tag == "delete":  # a grpo.py line may only go where the method's region replaces it
            near = [flags[j] for j in (j1 - 1, j1) if 0 <= j < len(mine)]
            assert any(near), f"{script} drops grpo.py lines {i1 + 1}-{i2} outside its regions: {base[i1:i2]}"
        else:
            drift = [mine[j] for j in range(j1, j2) if not flags[j] and mine[j].strip()]  # blank lines are free
            assert not drift, f"{script} differs from grpo.py outside its '# === {name}' regions: {drift}"


@pytest.mark.parametrize("script", sorted(METHODS))
def test_diff_stays_within_budget(script):
    _, budget = METHODS[script]
    _, _, ops = changes(script)
    changed = sum(max(i2 - i1, 0) + max(j2 - j1, 0) for tag, i1, i2, j1, j2 in ops if tag != "equal")
    assert changed <= budget, f"{script}: {changed} changed lines against grpo.py, budget {budget}"
