"""The generated parts of the method pages (docs/methods/*.md): no quoted line, result or demo number is typed by hand.

    python -m tools.method_pages             # refresh every page's generated blocks, then the figures
    python -m tools.method_pages --check     # exit 1, naming each page whose blocks are out of date
    python -m tools.method_pages --import-run dppo /tmp/docruns/dppo_add_seed0   # keep a demo run, compactly
    python -m tools.method_pages --import-run gvm_raft RUN_DIR --extra           # ... or the method's extra run

A page marks each generated block with a pair of HTML comments; the text between them is replaced:

    <!-- code:start pods.py def select_max_variance -->      a top-level function or class, with a link to its lines
    <!-- code:start pods.py region "keep m of the n" -->     the `# === NAME` region (or one-line `# === ... ===`
                                                             edit) of the script whose text contains the quote
    <!-- code:start gvm_raft.py lines "FROM" "TO" -->        from the first line containing FROM to the next with TO
    <!-- results:start -->                                   the rows of docs/results/table.md that name the
                                                             method's configs, under their tables' headers
    <!-- configs:start -->                                   the method's benchmark configs (benchmarks/harness.py)
    <!-- demo:start -->                                      what the saved demo run shows each part of the method doing
    ... each closed by <!-- code:end -->, <!-- results:end -->, and so on.

The method is the page's file name (docs/methods/pods.md -> pods). A demo run is the script at its
defaults but shorter (DEMO_FLAGS; an extra run adds the flags in EXTRA_RUNS, to show a part that the
defaults leave idle); `--import-run` refuses a run with any other setting and keeps
only the numeric metrics the page discusses, rounded, in docs/methods/runs/<method>.jsonl (10-30
kB), from which the figure docs/methods/img/<method>.png is drawn. The figures need matplotlib
(optional); the text does not. tests/test_docs.py checks that the committed pages are up to date.
"""

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import shlex
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("grpo", "pods", "cppo", "dppo", "d3s", "gvm_raft", "dgg")
TABLE = "docs/results/table.md"
DEMO_FLAGS = ["--max_steps", "60", "--eval_every", "10", "--eval_size", "128"]
# Flags a demo run may set beyond DEMO_FLAGS: where it is written, never what it trains.
FREE_FLAGS = {"output_dir", "run_name", "overwrite", "resume", "report_to", "device", "save_every", "log_samples_every"}

# A benchmark config belongs to the method whose prefix starts its name (grpo owns only "grpo": its
# variants are named after the method whose paper they are the baseline of, e.g. grpo_pods_paper).
PREFIXES = {"grpo": (), "pods": ("pods", "grpo_pods"), "cppo": ("cppo", "grpo_cppo"), "dppo": ("dppo", "grpo_dppo"),
            "d3s": ("d3s", "d2s", "d1s", "grpo_d3s"), "gvm_raft": ("gvm", "raft"),
            "dgg": ("dgg", "reuse_k", "grpo_dgg")}

# What the demo run keeps: the common curves, and every metric under the method's own prefixes.
COMMON_KEYS = ("step", "reward", "reward_std", "frac_reward_zero_std", "grad_norm", "tokens/trained",
               "rollouts/trained", "clip_ratio/region_mean", "eval/sampled_acc", "eval_after/sampled_acc")
METRIC_PREFIXES = {"grpo": (), "pods": ("pods/",), "cppo": ("cppo/",), "dppo": ("dppo/", "pack/"), "d3s": ("d3s/",),
                   "gvm_raft": ("gvm/",), "dgg": ("dgg/",)}
SKIP_KEYS = ("gvm/time_pilot",)  # clocks depend on the machine


# ------------------------------------------------------------------------------------------------ what acts
def _first(records, key):
    return next(r[key] for r in records if key in r)


def script_args(method: str, root: str = ROOT):
    """The script's Args dataclass (importing the script loads torch, not a model)."""
    sys.path.insert(0, root)
    try:
        return importlib.import_module(method).Args
    finally:
        sys.path.remove(root)


def default(method: str, flag: str):
    return next(f.default for f in dataclasses.fields(script_args(method)) if f.name == flag)


# Per method: (part of the method, the logged condition that shows it acting, what that means, the
# condition as a predicate on (one record, all records)). A record that lacks a metric does not count.
CHECKS = {
    "grpo": [
        ("group baseline", "`reward_std` > 0", "some group's rewards differ, so its advantages are not 0",
         lambda r, rs: r["reward_std"] > 0),
        ("policy update", "`grad_norm` > 0", "an optimiser step was taken", lambda r, rs: r["grad_norm"] > 0),
    ],
    "pods": [
        ("max-variance down-sampling", "`pods/reward_var_after` > `pods/reward_var_before`",
         "the m kept vary more than the n generated",
         lambda r, rs: r["pods/reward_var_after"] > r["pods/reward_var_before"]),
    ],
    "cppo": [
        ("completion pruning", "`cppo/kept_fraction` < 1", "completions were dropped before the update",
         lambda r, rs: r["cppo/kept_fraction"] < 1),
        ("dynamic allocation", "`cppo/prompts_per_step` > the flag `prompts_per_step`", "more prompts drawn than GRPO's B",
         lambda r, rs: r["cppo/prompts_per_step"] > default("cppo", "prompts_per_step")),
    ],
    "dppo": [
        ("prompt level (before the rollout)", "`dppo/prompts_pruned` > 0", "a revisited, pooled prompt was skipped",
         lambda r, rs: r["dppo/prompts_pruned"] > 0),
        ("completion level (after the advantages)", "`dppo/completions_pruned` > 0", "completions were pruned",
         lambda r, rs: r["dppo/completions_pruned"] > 0),
        ("importance weights", "`dppo/prompt_weight_mean` > 1", "surviving pooled prompts weigh 1 / (1 - r_q)",
         lambda r, rs: r["dppo/prompt_weight_mean"] > 1),
        ("dense packing", "`pack/density` > `pack/density_unpacked`", "packed micro-batches hold less padding",
         lambda r, rs: r["pack/density"] > r["pack/density_unpacked"]),
    ],
    "d3s": [
        ("sample level", "`d3s/sample_ratio` < 1", "fewer rollouts trained than generated",
         lambda r, rs: r["d3s/sample_ratio"] < 1 and r["rollouts/trained"] > 0),
        ("token level", "`d3s/score_kept` > `d3s/score_dropped` and `d3s/frac_positions_trained` < 1",
         "low |A| x H tokens were dropped and the update ran on fewer positions",
         lambda r, rs: r["d3s/score_kept"] > r["d3s/score_dropped"] and r["d3s/frac_positions_trained"] < 1),
        ("schedule", "`d3s/sample_ratio` above its first value", "the keep ratios grow with training",
         lambda r, rs: r["d3s/sample_ratio"] > _first(rs, "d3s/sample_ratio")),
    ],
    "gvm_raft": [
        ("pilot and allocation", "`gvm/allocation` not uniform", "prompts got different budgets n_i",
         lambda r, rs: max(r["gvm/allocation"]) != min(r["gvm/allocation"])),
        ("cap on n_i", "max of `gvm/allocation` = the flag `max_per_prompt`", "a prompt's budget was capped",
         lambda r, rs: max(r["gvm/allocation"]) >= default("gvm_raft", "max_per_prompt")),
        ("rejection (RAFT's E-step)", "`gvm/accepted_samples` < `gvm/samples_used`",
         "rejected samples got A = 0 and were left out of the update",
         lambda r, rs: r["gvm/accepted_samples"] < r["gvm/samples_used"]),
        ("RAFT++'s ratio clip", "`clip_ratio/region_mean` > 0", "a token's ratio left [1 - eps, 1 + eps]",
         lambda r, rs: r["clip_ratio/region_mean"] > 0),
    ],
    "dgg": [
        ("reuse", "`dgg/passes` > 1", "a batch was trained on more than once", lambda r, rs: r["dgg/passes"] > 1),
        ("the gate", "`dgg/fired_at_pass` > 0", "a reused pass was dropped and the batch abandoned",
         lambda r, rs: r["dgg/fired_at_pass"] > 0),
    ],
}
# Parts that the demo cannot show acting at the script's defaults, with the extra run where they do (the page says why).
IDLE_AT_DEFAULTS = {("gvm_raft", "RAFT++'s ratio clip")}
# Extra saved runs shown in a page's demo block: (file stem, the flags beyond DEMO_FLAGS, what it shows).
EXTRA_RUNS = {"gvm_raft": [("gvm_raft_spg2", ["--max_steps", "20", "--steps_per_generation", "2"],
                            "with two optimiser steps per rollout batch")]}


# ------------------------------------------------------------------------------------------------ code blocks
def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def fail(message: str):
    raise SystemExit(f"error: {message}")


def regions(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) 0-based line spans of the `# === NAME` ... `# === end NAME ===` blocks and of the
    one-line edits marked `# === NAME ... ===` at the end of a line of code."""
    spans, open_at = [], None
    for i, line in enumerate(lines):
        m = re.search(r"# === (.*)$", line)
        if not m:
            continue
        body = m.group(1).rstrip()
        if body.startswith("end "):
            if open_at is not None:
                spans.append((open_at, i))
                open_at = None
        elif line.lstrip().startswith("# ===") and not body.endswith("==="):
            open_at = i  # a block opens on a comment line of its own
        elif open_at is None:
            spans.append((i, i))  # code with the marker at its end: a one-line edit
    return sorted(spans)


def locate(source: str, spec: list[str], script: str) -> tuple[int, int]:
    """The 0-based (first, last) lines of SCRIPT that a code block's spec names."""
    lines = source.splitlines()
    kind, args = spec[0], spec[1:]
    if kind == "def" and len(args) == 1:
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == args[0]:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                return first - 1, node.end_lineno - 1
        fail(f"{script} has no top-level def or class {args[0]!r}")
    if kind == "region" and len(args) == 1:
        found = [s for s in regions(lines) if args[0] in "\n".join(lines[s[0]:s[1] + 1])]
        if len(found) != 1:
            fail(f"{script}: {len(found)} marked regions contain {args[0]!r} (a code block needs exactly one)")
        return found[0]
    if kind == "lines" and len(args) == 2:
        starts = [i for i, line in enumerate(lines) if args[0] in line]
        if len(starts) != 1:
            fail(f"{script}: {len(starts)} lines contain {args[0]!r} (a code block needs exactly one)")
        ends = [i for i in range(starts[0], len(lines)) if args[1] in lines[i]]
        if not ends:
            fail(f"{script}: no line after {args[0]!r} contains {args[1]!r}")
        return starts[0], ends[0]
    fail(f"unknown code block {' '.join(spec)!r}: use def NAME, region \"TEXT\" or lines \"FROM\" \"TO\"")


def code_block(args: str, root: str) -> str:
    spec = shlex.split(args)
    if len(spec) < 2:
        fail(f"a code block names a script and what to quote, got {args!r}")
    script, spec = spec[0], spec[1:]
    path = os.path.join(root, script)
    if not os.path.isfile(path):
        fail(f"a code block quotes {script}, which does not exist")
    source = read(path)
    first, last = locate(source, spec, script)
    body = textwrap.dedent("\n".join(source.splitlines()[first:last + 1]))
    where = f"lines {first + 1}-{last + 1}" if last > first else f"line {first + 1}"
    anchor = f"#L{first + 1}-L{last + 1}" if last > first else f"#L{first + 1}"
    return f"[`{script}`, {where}](../../{script}{anchor}):\n\n```python\n{body}\n```\n"


# ------------------------------------------------------------------------------------------------ results
def owns(method: str, config: str) -> bool:
    if method == "grpo":
        return config in ("grpo", "grpo_tiny1")  # the second warm start's baseline too
    return config.startswith(PREFIXES[method])


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def bare(cell: str) -> str:
    """A table cell without markdown emphasis or code marks: how a config's name is compared."""
    return cell.strip().strip("*_`").strip()


def results_block(method: str, root: str) -> str:
    """Every table of docs/results/table.md with a row that names one of the method's configs: its
    nearest heading, its header and those rows, verbatim. Per-seed tables (a "seed" column) are left
    out: the summaries carry their intervals, and the page links the file for the rest."""
    path = os.path.join(root, TABLE)
    if not os.path.isfile(path):
        return f"No results yet: `{TABLE}` does not exist (`python benchmarks/compare.py` writes it).\n"
    lines = read(path).splitlines()
    out, heading, caption, i = [], None, None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading, caption, i = line.lstrip("#").strip(), None, i + 1
            continue
        is_table = (line.lstrip().startswith("|") and i + 1 < len(lines)
                    and re.fullmatch(r"\s*\|?[\s:|-]*-[\s:|-]*\|?\s*", lines[i + 1]))
        if not is_table:
            caption = re.split(r": |\. |; | \(", line)[0].strip() or caption  # the sentence that introduces a table
            i += 1
            continue
        header, j = lines[i], i + 2
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            j += 1
        rows = [r for r in lines[i + 2:j] if any(owns(method, bare(c)) for c in cells(r))]
        if rows and "seed" not in [bare(c).lower() for c in cells(header)]:
            # a comparison's section holds several tables: each is named by the sentence above it
            label = f"{heading}: {caption}" if heading and caption and heading.startswith("Against") else heading
            out += ([f"**{label}**", ""] if label else []) + [header, lines[i + 1]] + rows + [""]
        i = j
    link = f"[`{TABLE}`](../results/{os.path.basename(TABLE)})"
    if not out:
        return f"No row of {link} names this method's configs yet.\n"
    text = (f"Copied from {link} (`python benchmarks/compare.py` writes it; definitions of "
            "every column, per-seed rows and the statistics are there).\n\n" + "\n".join(out))
    return text


def merge_flags(flags) -> list[str]:
    """`--name value` pairs with a repeated flag given once, at its first place, with its last value (as
    the parser reads it); anything that is not pairs is returned unchanged."""
    flags = list(flags)
    if len(flags) % 2 or not all(f.startswith("--") for f in flags[::2]):
        return flags
    merged = dict(zip(flags[::2], flags[1::2]))  # later pairs overwrite earlier values in place
    return [x for pair in merged.items() for x in pair]


def command(script: str, flags) -> str:
    return shlex.join(["python", script, *merge_flags(flags)])


def configs_block(method: str, root: str) -> str:
    sys.path.insert(0, root)
    try:
        harness = importlib.import_module("benchmarks.harness")
    finally:
        sys.path.remove(root)
    rows = [f"| `{name}` | `{command(script, flags)}` |"
            for name, (script, flags) in harness.CONFIGS.items() if owns(method, name)]
    if not rows:
        return "No benchmark config belongs to this method.\n"
    return ("| config | command (plus the protocol's flags: `benchmarks/harness.py`) |\n|---|---|\n"
            + "\n".join(rows) + "\n")


# ------------------------------------------------------------------------------------------------ demo runs
def load_records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def acts(check, records) -> list[int]:
    """The steps at which a check's predicate holds (a record lacking the metric does not count)."""
    steps = []
    for r in records:
        try:
            if check[-1](r, records):
                steps.append(r["step"])
        except (KeyError, TypeError, ValueError, StopIteration):
            pass
    return steps


def run_path(stem: str, root: str) -> str:
    return os.path.join(root, "docs", "methods", "runs", f"{stem}.jsonl")


def demo_line(check, records) -> str:
    steps = acts(check, records)
    when = f"{len(steps)} of {len(records)} steps, first at step {steps[0]}" if steps else \
        f"**never** in {len(records)} steps"
    return f"- {check[0]}: {check[1]} ({check[2]}): {when}."


def demo_block(method: str, root: str) -> str:
    script = f"{method}.py"
    out = [f"`{command(script, DEMO_FLAGS)}` (saved: "
           f"[`runs/{method}.jsonl`](runs/{method}.jsonl)); where each part of the method acts (steps count from 0, "
           "as `step` does in metrics.jsonl):", ""]
    path = run_path(method, root)
    if not os.path.isfile(path):
        return f"No saved demo run yet (`python -m tools.method_pages --import-run {method} RUN_DIR`).\n"
    records = load_records(path)
    out += [demo_line(c, records) for c in CHECKS[method]]
    first = next((r for r in records if "eval/sampled_acc" in r), None)
    last = next((r for r in reversed(records) if "eval_after/sampled_acc" in r), None)
    if first and last:
        out += ["", f"Held-out sampled accuracy (128 problems, 4 samples each) {first['eval/sampled_acc']:.3f} at the "
                f"warm start, {last['eval_after/sampled_acc']:.3f} after {last['step'] + 1} steps"
                + (". " if method == "grpo" else "; the figure repeats grpo.py's demo run for comparison. ")
                + "One seed: only the results below, over several seeds, can rank methods."]
    for stem, flags, what in EXTRA_RUNS.get(method, []):  # the parts idle at the defaults, in the extra run
        if os.path.isfile(run_path(stem, root)):
            extra = load_records(run_path(stem, root))
            out += ["", f"The same {what}: `{command(script, DEMO_FLAGS + flags)}` (saved: "
                    f"[`runs/{stem}.jsonl`](runs/{stem}.jsonl)):", ""]
            out += [demo_line(c, extra) for c in CHECKS[method] if (method, c[0]) in IDLE_AT_DEFAULTS]
    return "\n".join(out) + "\n"


def compact(record: dict, method: str) -> dict:
    """The numeric metrics a page discusses, rounded to 4 significant digits."""
    keep = {}
    for k, v in record.items():
        if k in SKIP_KEYS or not (k in COMMON_KEYS or k.startswith(METRIC_PREFIXES[method])):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, list)):
            continue
        keep[k] = [round(x, 4) if isinstance(x, float) else x for x in v] if isinstance(v, list) else \
            v if isinstance(v, int) else float(f"{v:.4g}")
    return keep


def import_run(method: str, run_dir: str, root: str, stem: str | None = None, extra_flags=()) -> str:
    """Check that RUN_DIR is METHOD's demo (its defaults, DEMO_FLAGS and extra_flags), then save it compactly."""
    config_path, metrics_path = (os.path.join(run_dir, f) for f in ("config.json", "metrics.jsonl"))
    if not (os.path.isfile(config_path) and os.path.isfile(metrics_path)):
        fail(f"{run_dir} is not a finished run folder (config.json and metrics.jsonl)")
    config = json.loads(read(config_path))
    defaults = {f.name: f.default for f in dataclasses.fields(script_args(method, root))}
    flags = merge_flags(list(DEMO_FLAGS) + list(extra_flags))
    wanted = {**defaults, **{flags[i].lstrip("-"): flags[i + 1] for i in range(0, len(flags), 2)}}
    differ = [k for k, v in wanted.items() if k not in FREE_FLAGS and str(config.get(k)) != str(v)
              and not _same_number(config.get(k), v)]
    if config.get("script") != method or differ:
        fail(f"{run_dir} is not {method}.py's demo run: {', '.join(differ) or 'another script'} differ from "
             f"the defaults with {' '.join(flags)}")
    records = load_records(metrics_path)
    if len(records) != int(wanted["max_steps"]):
        fail(f"{run_dir} has {len(records)} steps, not {wanted['max_steps']}: finish it first")
    out = run_path(stem or method, root)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(compact(r, method), separators=(",", ":")) + "\n" for r in records)
    return out


def _same_number(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ figures
# Per method: panels of (title, keys drawn in it); every figure starts with reward and held-out accuracy.
# "grpo:KEY" draws KEY from grpo.py's saved demo run, for comparison.
PANELS = {
    "grpo": [("groups with zero reward std", ["frac_reward_zero_std"]), ("tokens trained per step", ["tokens/trained"])],
    "pods": [("reward variance of a group", ["pods/reward_var_before", "pods/reward_var_after"])],
    "cppo": [("|A| of kept and pruned completions", ["cppo/abs_adv_kept", "cppo/abs_adv_pruned"]),
             ("groups with zero reward std", ["frac_reward_zero_std"])],
    "dppo": [("fraction pruned", ["dppo/prompts_pruned", "dppo/completions_pruned"]),
             ("packing density", ["pack/density", "pack/density_unpacked"])],
    "d3s": [("keep ratios (schedule)", ["d3s/sample_ratio", "d3s/token_ratio"]),
            ("tokens trained per step", ["tokens/trained", "grpo:tokens/trained"])],
    "gvm_raft": [("prompts per step (of 16)", ["n_i = 0", "n_i at the cap", "gvm/prompts_without_support"]),
                 ("pilot acceptance rate", ["gvm/accept_rate_mean"])],
    "dgg": [("passes applied per batch", ["dgg/passes"]),
            ("relative weight change per step", ["dgg/rel_change/lm_head", "dgg/rel_change/mid_layer"])],
}


# Series computed from a logged list: GVM's allocation, one n_i per prompt.
DERIVED = {"n_i = 0": lambda r: sum(n == 0 for n in r["gvm/allocation"]),
           "n_i at the cap": lambda r: sum(n >= default("gvm_raft", "max_per_prompt") for n in r["gvm/allocation"])}


def series(records, key):
    xs, ys = [], []
    for r in records:
        if key in DERIVED:
            xs.append(r["step"] + 1), ys.append(DERIVED[key](r))
            continue
        if key in ("eval/sampled_acc",):
            if "eval/sampled_acc" in r:
                xs.append(0), ys.append(r["eval/sampled_acc"])
            if "eval_after/sampled_acc" in r:
                xs.append(r["step"] + 1), ys.append(r["eval_after/sampled_acc"])
        elif key in r and isinstance(r[key], (int, float)):
            xs.append(r["step"] + 1), ys.append(r[key])
    return xs, ys


def draw_figure(method: str, root: str) -> str | None:
    path = run_path(method, root)
    if not os.path.isfile(path):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = load_records(path)
    accuracy = ["eval/sampled_acc"] + (["grpo:eval/sampled_acc"] if method != "grpo" else [])
    panels = [("reward (training batch)", ["reward"]), ("held-out sampled accuracy", accuracy)]
    panels += PANELS[method]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.6), dpi=90)
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            other, _, name = key.rpartition(":")
            xs, ys = series(load_records(run_path(other, root)) if other else records, name)
            compared = any(k.startswith("grpo:") for k in keys)
            label = f"{other or method}.py" if compared else name.split("/")[-1]
            ax.plot(xs, ys, marker="o" if name == "eval/sampled_acc" else None, ms=3, lw=1,
                    label=label if len(keys) > 1 else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("steps done", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(keys) > 1:
            ax.legend(fontsize=6)
    fig.suptitle(command(f"{method}.py", DEMO_FLAGS), fontsize=9)
    fig.tight_layout()
    out = os.path.join(root, "docs", "methods", "img", f"{method}.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------ pages
BLOCK = re.compile(r"<!-- (code|results|configs|demo):start(.*?)-->\n(.*?)<!-- \1:end -->", re.DOTALL)


def render(text: str, method: str, root: str = ROOT) -> str:
    """The page with every generated block refreshed (rendering twice changes nothing)."""
    def fill(m):
        kind, args = m.group(1), m.group(2).strip()
        body = {"code": lambda: code_block(args, root), "results": lambda: results_block(method, root),
                "configs": lambda: configs_block(method, root), "demo": lambda: demo_block(method, root)}[kind]()
        return f"<!-- {kind}:start{' ' + args if args else ''} -->\n{body}<!-- {kind}:end -->"

    for opener in re.findall(r"<!-- (\w+):start", text):
        if opener not in ("code", "results", "configs", "demo"):
            fail(f"docs/methods/{method}.md: unknown block {opener!r}")
    if len(re.findall(r"<!-- \w+:start", text)) != len(re.findall(r"<!-- \w+:end -->", text)):
        fail(f"docs/methods/{method}.md: a generated block is not closed")
    return BLOCK.sub(fill, text)


def page_path(method: str, root: str) -> str:
    return os.path.join(root, "docs", "methods", f"{method}.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report pages whose generated blocks are out of date")
    p.add_argument("--import-run", nargs=2, metavar=("METHOD", "RUN_DIR"), help="save a finished demo run")
    p.add_argument("--extra", action="store_true", help="with --import-run: the method's extra run (EXTRA_RUNS)")
    p.add_argument("--no-figures", action="store_true", help="refresh the text only")
    p.add_argument("--root", default=ROOT, help="the repository to work on (default: this one)")
    a = p.parse_args(argv)
    if a.import_run:
        method, run_dir = a.import_run
        if method not in METHODS:
            fail(f"unknown method {method!r} ({', '.join(METHODS)})")
        stem, flags = (EXTRA_RUNS[method][0][:2] if a.extra else (None, ()))
        print(import_run(method, run_dir, a.root, stem, flags))
        return 0
    stale, missing = [], []
    for method in METHODS:
        path = page_path(method, a.root)
        if not os.path.isfile(path):
            missing.append(os.path.relpath(path, a.root))
            continue
        text = read(path)
        new = render(text, method, a.root)
        if new != text:
            stale.append(os.path.relpath(path, a.root))
            if not a.check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
    for path in missing:
        print(f"{path} is missing")
    if a.check:
        for path in stale:
            print(f"{path} is out of date: run python -m tools.method_pages")
        return 1 if stale or missing else 0
    if not a.no_figures:
        if importlib.util.find_spec("matplotlib") is None:
            print("matplotlib is not installed: figures left as they are (pip install matplotlib)")
        else:
            for method in METHODS:
                draw_figure(method, a.root)
    for path in stale:
        print(f"updated {path}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
