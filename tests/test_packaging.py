"""pyproject.toml: `pip install .` ships every training script, common/ with the tiny model's files, and scale/."""

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import ROOT


def harness_scripts():
    from benchmarks import harness

    return harness.scripts()


def test_every_discovered_script_is_a_module_of_the_package():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setup = tomllib.load(f)["tool"]["setuptools"]
    assert set(setup["py-modules"]) == harness_scripts(), "list every training script in pyproject.toml's py-modules"


def test_an_install_imports_the_plug_ins_and_finds_the_tiny_model(tmp_path):
    pytest.importorskip("setuptools")
    source, target = tmp_path / "source", tmp_path / "site"  # a copy: the build leaves build/ and *.egg-info behind
    os.makedirs(source)
    for name in ("pyproject.toml", "README.md", *(f"{m}.py" for m in harness_scripts()), "common", "scale"):
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "--target", str(target), str(source)], check=True, capture_output=True, cwd=tmp_path)
    probe = ("import common.tiny, os, pods; "
             "print(os.path.isfile(os.path.join(common.tiny.SHIPPED, 'model.safetensors')), pods.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(target)), check=True).stdout.split()
    assert out[0] == "True" and out[1].startswith(str(target))
