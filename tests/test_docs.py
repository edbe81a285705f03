"""The course material: the method pages (docs/methods/*.md) and docs/course.md.

Every page has its sections and generated blocks, the generated blocks are up to date with the code,
the results and the saved demo runs (python -m tools.method_pages), every relative link resolves, every
part of each method acts in its saved demo run, and no page reads like a development log.
"""

import os
import re
import shutil

import pytest

from tools import method_pages as mp

ROOT = mp.ROOT
PAGES = {m: os.path.join(ROOT, "docs", "methods", f"{m}.md") for m in mp.METHODS}
COURSE = os.path.join(ROOT, "docs", "course.md")
SECTIONS = ["## The idea", "## The code that matters", "## The equations, line by line", "## Logged metrics",
            "## A healthy run", "## The paper's setting and ours", "## History and known results", "## Results",
            "## Exercise"]
# Words of a development log, not of course material: a reader of this repository has no issue tracker
# numbers, sessions, or files outside the repository.
DEV_LOG = [r"\bissues?\s*#?\d+", r"\bthis session\b", r"\bprevious session\b", r"\bshared/", r"DECISIONS\.md",
           r"SIGSTOP", r"\baudits?/"]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("method", mp.METHODS)
def test_every_page_has_its_sections_and_blocks(method):
    text = read(PAGES[method])
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    for section in SECTIONS:
        assert section in headings, f"docs/methods/{method}.md lacks the section {section!r}"
    assert any(h.startswith("## Where") and "grpo.py" in h for h in headings), "a section on the hooks into grpo.py"
    for block in ("results", "configs", "demo", "code"):
        assert f"<!-- {block}:start" in text, f"docs/methods/{method}.md has no {block} block"
    assert f"](img/{method}.png)" in text, "the page shows its demo figure"
    if method != "grpo":
        assert f"python -m exercises.check {method}" in text


@pytest.mark.parametrize("method", [m for m in mp.METHODS if mp.METRIC_PREFIXES[m]])
def test_every_metric_the_method_logs_is_explained_on_its_page(method):
    source, page = read(os.path.join(ROOT, f"{method}.py")), read(PAGES[method])
    keys = {re.sub(r"\{[^}]*\}", "<k>", k) for prefix in mp.METRIC_PREFIXES[method]
            for k in re.findall(rf'"({re.escape(prefix)}[^"]+)"', source)}
    assert keys, f"no {mp.METRIC_PREFIXES[method]} key found in {method}.py"
    missing = sorted(k for k in keys if f"`{k}`" not in page)
    assert not missing, f"docs/methods/{method}.md does not explain {missing}"


@pytest.mark.parametrize("method", mp.METHODS)
def test_committed_pages_are_up_to_date(method):
    text = read(PAGES[method])
    assert mp.render(text, method) == text, f"run python -m tools.method_pages (docs/methods/{method}.md is stale)"


def test_regenerating_a_copy_changes_nothing_and_is_idempotent(tmp_path):
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    shutil.copytree(os.path.join(ROOT, "docs"), tmp_path / "docs")
    shutil.copytree(os.path.join(ROOT, "benchmarks"), tmp_path / "benchmarks",
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    for _ in range(2):  # the second run must find nothing to change
        assert mp.main(["--root", str(tmp_path), "--no-figures"]) == 0
        for method, path in PAGES.items():
            assert read(tmp_path / "docs" / "methods" / f"{method}.md") == read(path), method
    assert mp.main(["--root", str(tmp_path), "--check"]) == 0


def test_a_stale_block_is_refreshed_and_a_broken_one_is_one_clear_error():
    text = read(PAGES["pods"])
    stale = re.sub(r"(<!-- code:start pods.py def select_max_variance -->\n).*?(<!-- code:end -->)",
                   r"\1old text\n\2", text, count=1, flags=re.DOTALL)
    assert stale != text and mp.render(stale, "pods") == text
    with pytest.raises(SystemExit, match="error: pods.py has no top-level def or class 'no_such_function'"):
        mp.render("<!-- code:start pods.py def no_such_function -->\n<!-- code:end -->\n", "pods")
    with pytest.raises(SystemExit, match="error: .*not closed"):
        mp.render("<!-- results:start -->\n", "pods")


def test_code_regions_are_found_by_their_text():
    lines = ["x = 1", "    # === PODS: keep m", "    y = 2", "    # === end PODS ===", "z = 3  # === PODS: one line ==="]
    assert mp.regions(lines) == [(1, 3), (4, 4)]
    block = mp.code_block('pods.py region "keep m of the n rollouts per group"', ROOT)
    assert "select_max_variance(" in block and block.count("# === ") == 2 and "](../../pods.py#L" in block


def test_results_rows_follow_the_config_names_whatever_the_table_looks_like(tmp_path):
    """Another statistics layout: config names in backticks, other columns, a per-seed table (left out),
    a table with no row of the method (left out)."""
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "table.md").write_text(
        "# Results\n\n## Speed\n\n| method | p-value | speed-up |\n|:--|--:|--:|\n| `grpo` | - | 1.00x |\n"
        "| `pods` | 0.03 | 1.10x |\n| **pods_paper** | 0.2 | 0.9x |\n| grpo_pods_paper | - | 1.00x |\n"
        "| cppo | 0.01 | 1.2x |\n\nPer seed:\n\n| config | seed | updates |\n|---|---|---|\n| pods | seed0 | 31 |\n\n"
        "## Other\n\n| config | x |\n|---|---|\n| dgg | 1 |\n", encoding="utf-8")
    block = mp.results_block("pods", str(tmp_path))
    assert "**Speed**" in block and "| method | p-value | speed-up |" in block and "|:--|--:|--:|" in block
    assert "| `pods` | 0.03 | 1.10x |" in block and "| **pods_paper** |" in block and "| grpo_pods_paper |" in block
    assert "| `grpo` |" not in block and "| cppo |" not in block and "seed0" not in block and "Other" not in block
    assert "| `grpo` | - | 1.00x |" in mp.results_block("grpo", str(tmp_path))
    assert "No row of" in mp.results_block("d3s", str(tmp_path))


def test_every_benchmark_config_belongs_to_exactly_one_page():
    from benchmarks.harness import CONFIGS

    for name in CONFIGS:
        owners = [m for m in mp.METHODS if mp.owns(m, name)]
        assert len(owners) == 1, f"config {name!r} is shown on {owners or 'no page'}: fix PREFIXES"


@pytest.mark.parametrize("method", mp.METHODS)
def test_every_part_of_the_method_acts_in_its_demo_run(method):
    records = mp.load_records(mp.run_path(method, ROOT))
    assert len(records) == int(mp.DEMO_FLAGS[1]) and [r["step"] for r in records] == list(range(len(records)))
    for check in mp.CHECKS[method]:
        if (method, check[0]) in mp.IDLE_AT_DEFAULTS:
            assert not mp.acts(check, records), f"{check[0]} was expected idle at {method}.py's defaults"
            stem = mp.EXTRA_RUNS[method][0][0]
            assert mp.acts(check, mp.load_records(mp.run_path(stem, ROOT))), f"{check[0]} never acts in {stem}"
        else:
            assert mp.acts(check, records), f"{method}.py's demo never shows {check[0]} ({check[1]})"


def test_merge_flags_keeps_the_last_value_of_a_repeated_flag():
    assert mp.merge_flags(["--a", "1", "--b", "2", "--a", "3"]) == ["--a", "3", "--b", "2"]
    assert mp.merge_flags(["--flag"]) == ["--flag"]


def relative_links(text):
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            yield target.split("#")[0]


@pytest.mark.parametrize("path", sorted(PAGES.values()) + [COURSE], ids=os.path.basename)
def test_relative_links_resolve(path):
    text = read(path)
    links = list(relative_links(text))
    assert links, "a page with no link is suspicious"
    for target in links:
        assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{os.path.basename(path)}: {target}"


@pytest.mark.parametrize("path", sorted(PAGES.values()) + [COURSE], ids=os.path.basename)
def test_no_development_log_words(path):
    text = read(path)
    for pattern in DEV_LOG:
        found = re.search(pattern, text, re.IGNORECASE)
        assert not found, f"{os.path.basename(path)}: {found.group(0)!r}"


def test_the_course_has_a_lesson_per_script_in_order():
    text = read(COURSE)
    lessons = re.findall(r"^## Lesson \d+: .*?`(\w+)\.py`", text, re.MULTILINE)
    assert lessons[0] == "grpo" and sorted(lessons) == sorted(mp.METHODS), lessons
    for method in mp.METHODS:
        assert f"methods/{method}.md" in text
        if method != "grpo":
            assert f"python -m exercises.check {method}" in text
