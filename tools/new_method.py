"""Start a new method script from grpo.py: the scaffold every method in this repository grew from.

    python -m tools.new_method NAME [--flag strength]

writes NAME.py (grpo.py with a method docstring to fill in, a diff budget, one flag whose neutral value
0 trains exactly as grpo.py, and empty marked regions where methods usually act) and tests/test_NAME.py
(the neutral-setting test, and a hand-vector test of the method's core function to extend). The new
script passes tests/test_diffs.py, renders in docs/diffs (python -m tools.diffs) and runs, with no
other file touched: the tooling finds scripts by their `# === NAME` markers. docs/adding-a-method.md
explains the conventions.
"""

import argparse
import keyword
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOCSTRING = '''"""{MARK}: <the method's full name> = grpo.py + <what it adds, in a phrase>.

Paper: <authors>, "<title>", arXiv <id>; official code: <repository, or "none found">.
Page: docs/methods/{name}.md.

The idea. <One paragraph: what cost or weakness of GRPO the method attacks, and how.>

One step (what differs from grpo.py; the equations with their symbols):
    <symbol> = <equation>

Symbols: <paper symbol> = {flag}. Neutral setting: {flag} = 0 is grpo.py (tests/test_{name}.py).

Run it:
    python {name}.py                                   # offline tiny demo
    python {name}.py --{flag} <value>                  # the paper's setting
Outputs go to runs/<run_name>/ as for grpo.py, with {name}/* metrics added.
"""'''

FUNCTION = '''# === {MARK}
def {name}_advantages(advantages: torch.Tensor, {flag}: float) -> torch.Tensor:
    """The method's core as a pure function, tested on hand-computed vectors (tests/test_{name}.py).
    The scaffold changes nothing, as {flag} = 0 must: replace the body with the method."""
    return advantages
# === end {MARK} ===


def main('''

TEST = '''"""{name}.py: its core on hand-computed vectors, and its neutral setting (= grpo.py)."""

import torch

import {name}
from tests.helpers import assert_same_as_grpo


def test_core_on_a_hand_vector():
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    assert torch.equal({name}.{name}_advantages(advantages, 0.0), advantages)  # neutral: unchanged
    # add the cases you computed by hand: edge cases (all equal, empty, ties) first


def test_neutral_setting_is_grpo(tiny_path, tmp_path):
    assert_same_as_grpo({name}, tiny_path, tmp_path, dict({flag}=0.0))
'''


def scaffold(name: str, flag: str = "strength", root: str = ROOT) -> tuple[str, str]:
    """Write root/NAME.py and root/tests/test_NAME.py; returns their paths. Refuses to overwrite."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise SystemExit(f"error: {name!r} must be a lower-case Python name (letters, digits, _), e.g. dsf")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", flag):
        raise SystemExit(f"error: --flag {flag!r} must be a lower-case Python name")
    script, test = os.path.join(root, f"{name}.py"), os.path.join(root, "tests", f"test_{name}.py")
    for path in (script, test):
        if os.path.exists(path):
            raise SystemExit(f"error: {path} exists; choose another name (nothing was written)")
    mark = name.upper()
    with open(os.path.join(root, "grpo.py")) as f:
        text = f.read()
    code = text[text.index('"""', 3) + 3:]
    fields = dict(name=name, MARK=mark, flag=flag)
    edits = [  # (anchor in grpo.py, replacement); each anchor must occur exactly once
        ("\n\n\n@dataclass", f"\n\nDIFF_BUDGET = 40  # === {mark}: changed code lines against grpo.py, checked by "
                             f"tests/test_diffs.py ===\n\n\n@dataclass"),
        ('    # --- evaluation, logging, checkpoints\n',
         f'    # === {mark}\n    {flag}: float = field(default=0.0, metadata={{"help": "the method\'s knob; 0 trains '
         f'exactly as grpo.py (the neutral setting)"}})\n    # === end {mark} ===\n'
         '    # --- evaluation, logging, checkpoints\n'),
        ("    runs.check_args(args)\n",
         f"    runs.check_args(args)\n    # === {mark}\n    runs.check_finite({flag}=args.{flag})\n"
         f'    runs.require([(args.{flag} >= 0, "--{flag} must be >= 0")])\n    # === end {mark} ===\n'),
        ("\n\ndef main(", "\n\n" + FUNCTION.format(**fields)),
        ("        run.log_samples(rows, owner, texts, rewards, advantages, G)\n",
         "        run.log_samples(rows, owner, texts, rewards, advantages, G)\n"
         f"        # === {mark}: the advantages are known and nothing is trained yet: where selection methods act\n"
         f"        advantages = {name}_advantages(advantages, args.{flag})\n"
         f'        metrics["{name}/{flag}"] = args.{flag}\n'
         f"        # === end {mark} ===\n"),
    ]
    for anchor, replacement in edits:
        if code.count(anchor) != 1:
            raise SystemExit(f"error: grpo.py changed: the scaffold's anchor {anchor.strip()!r} is not found once; "
                             f"update tools/new_method.py")
        code = code.replace(anchor, replacement)
    with open(script, "w") as f:
        f.write(DOCSTRING.format(**fields) + code)
    with open(test, "w") as f:
        f.write(TEST.format(**fields))
    return script, test


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the new script's name, e.g. dsf (writes dsf.py and tests/test_dsf.py)")
    parser.add_argument("--flag", default="strength", help="the method's knob (default: strength); 0 = grpo.py")
    args = parser.parse_args(argv)
    script, test = scaffold(args.name, args.flag)
    print(f"wrote {os.path.relpath(script, ROOT)} and {os.path.relpath(test, ROOT)}\n"
          f"next: python {args.name}.py --max_steps 2   |   python -m pytest tests/test_{args.name}.py tests/test_diffs.py"
          f"   |   python -m tools.diffs   |   docs/adding-a-method.md")


if __name__ == "__main__":
    sys.exit(main())
