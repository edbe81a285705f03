"""grpo.py against each method script: the marked method regions, the changed-line budgets, and a
readable rendering of each diff.

    python -m tools.diffs            # writes docs/diffs/<method>.html|.diff and docs/diffs/README.md

A method's own lines live between `# === NAME ...` and `# === end NAME ===` (or on one line that
carries a `# === NAME ... ===` comment). Outside those regions a script matches grpo.py line for
line, the module docstring excepted. Scripts are found by looking, not from a list: every top-level
*.py with such markers is a method script, and it declares its budget of changed code lines on a
marked line `DIFF_BUDGET = N  # === NAME ... ===`. tests/test_diffs.py enforces the regions and the
budgets for every script it finds.
"""

import difflib
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"^\s*(?:.*?)#\s===\s(?!end\b)([A-Za-z][\w+-]*)")
BUDGET = re.compile(r"^DIFF_BUDGET\s*=\s*(\d+)\b")


def discover(root=ROOT) -> dict:
    """{script: (marker name, budget or None)} for every top-level script with `# === NAME` markers."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "*.py"))):
        script = os.path.basename(path)
        if script == "grpo.py":
            continue
        with open(path) as f:
            lines = f.read().splitlines()
        names = [m.group(1) for line in lines if (m := MARKER.match(line))]
        if not names:
            continue
        budget = next((int(m.group(1)) for line in lines if (m := BUDGET.match(line))), None)
        found[script] = (max(set(names), key=names.count), budget)
    return found


METHODS = discover()


def code_lines(path):
    """The file's lines after its module docstring."""
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    if not text.startswith('"""'):
        raise ValueError(f"{path} must open with its docstring")
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
    if inside:
        raise ValueError(f"an unclosed '# === {name}' region")
    return flags


def opcodes(script):
    base, mine = code_lines("grpo.py"), code_lines(script)
    return base, mine, difflib.SequenceMatcher(None, base, mine, autojunk=False).get_opcodes()


def changed_lines(script):
    """Lines added plus lines removed against grpo.py, docstrings excluded."""
    return sum(max(i2 - i1, 0) + max(j2 - j1, 0) for tag, i1, i2, j1, j2 in opcodes(script)[2] if tag != "equal")


def drift(script, name=None):
    """Differences from grpo.py that lie outside the script's marked regions (should be none)."""
    name = name or discover()[script][0]
    base, mine, ops = opcodes(script)
    flags, problems = marked(mine, name), []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "delete":  # a grpo.py line may only go where a method region replaces it
            if not any(flags[j] for j in (j1 - 1, j1) if 0 <= j < len(mine)):
                problems += [f"grpo.py line dropped: {line}" for line in base[i1:i2]]
        elif tag != "equal":  # blank lines are free
            problems += [f"unmarked: {mine[j]}" for j in range(j1, j2) if not flags[j] and mine[j].strip()]
    return problems


def render(out_dir=os.path.join(ROOT, "docs", "diffs"), methods=None):
    """Code only (module docstrings out), so each diff opens on the algorithm."""
    methods = discover() if methods is None else methods
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for script, (name, budget) in methods.items():
        base, mine = code_lines("grpo.py"), code_lines(script)
        html = difflib.HtmlDiff(tabsize=4, wrapcolumn=100).make_file(
            base, mine, "grpo.py", script, context=True, numlines=3)
        page, patch = script.replace(".py", ".html"), script.replace(".py", ".diff")
        with open(os.path.join(out_dir, page), "w") as f:
            f.write(html)
        with open(os.path.join(out_dir, patch), "w") as f:  # GitHub renders .diff files with colours
            f.writelines(difflib.unified_diff([line + "\n" for line in base], [line + "\n" for line in mine],
                                              "grpo.py", script, n=3))
        rows.append(f"| {script} | [side by side]({page}), [unified]({patch}) | `# === {name}` "
                    f"| {changed_lines(script)} | {budget} |")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("# grpo.py against each method\n\nThe code of every method script against grpo.py (module docstrings "
                "left out, so each diff opens on the algorithm; 3 lines of context), regenerated by "
                "`python -m tools.diffs`. Changed lines count added plus removed code lines; each script declares "
                "its budget (`DIFF_BUDGET`), and tests/test_diffs.py fails when a script outgrows it or differs from "
                "grpo.py outside its marked regions.\n\n| script | diff | marker | changed lines | budget |\n"
                "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return out_dir


if __name__ == "__main__":
    print(f"wrote {render()}")
