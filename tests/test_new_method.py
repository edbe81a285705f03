"""tools/new_method: a scaffolded script passes the drift and budget checks, its own tests (the neutral
setting is grpo.py) and renders in docs/diffs, in a copy of the repository with no other file touched."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tools import new_method


@pytest.fixture
def repo(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "runs", "results", "__pycache__", "*.png",
                                                              ".pytest_cache", "docs", "exercises", "scale"))
    return copy


def test_a_scaffolded_method_passes_its_checks_and_runs(repo):
    before = {p: os.path.getmtime(os.path.join(repo, p)) for p in os.listdir(repo) if p.endswith(".py")}
    script, test = new_method.scaffold("dsf", root=str(repo))
    assert {p: os.path.getmtime(os.path.join(repo, p)) for p in before} == before  # nothing else touched
    code = ("from tools import diffs; d = diffs.discover(); assert d['dsf.py'] == ('DSF', 40), d; "
            "assert diffs.drift('dsf.py') == [], diffs.drift('dsf.py'); assert diffs.changed_lines('dsf.py') <= 40; "
            "out = diffs.render(); assert 'dsf.py' in open(out + '/README.md').read()")
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=120)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_dsf.py"],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_the_scaffold_refuses_bad_names_and_never_overwrites(repo):
    for bad in ("Dsf", "1x", "class", "a-b"):
        with pytest.raises(SystemExit, match="must be a lower-case Python name"):
            new_method.scaffold(bad, root=str(repo))
    with pytest.raises(SystemExit, match="pods.py exists"):
        new_method.scaffold("pods", root=str(repo))
    assert not (repo / "tests" / "test_pods.py").read_text().startswith('"""pods.py: its core')
