"""The tiny-model cache: every file checked, damage detected and rebuilt, an unwritable cache refused
at once, builds that show progress, and quiet loading of the models this project builds."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import common.tiny as tiny
from common.rollout import load_policy
from tests.helpers import ROOT


@pytest.fixture
def cache(tiny_path, tmp_path, monkeypatch):
    """A private RLVR_CACHE holding a copy of the cached tiny model; returns the copy's path."""
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    path = tiny.default_cache_dir()
    shutil.copytree(tiny_path, path)
    return path


@pytest.fixture
def fake_build(tiny_path, monkeypatch):
    """build_tiny replaced by a copy of the intact cache (a real build takes minutes); records calls."""
    calls = []

    def build(path, seed=0, progress=True):
        calls.append(path)
        shutil.copytree(tiny_path, path, dirs_exist_ok=True)

    monkeypatch.setattr(tiny, "build_tiny", build)
    return calls


def truncate(path, keep):
    with open(path, "r+b") as f:
        f.truncate(keep)


def write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


def set_vocab_size(path, n):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**cfg, "vocab_size": n}, f)


SAFETENSORS = "model.safetensors"
DAMAGE = {
    "tokenizer.json is missing": lambda p: os.remove(os.path.join(p, "tokenizer.json")),
    "chat_template.jinja is missing": lambda p: os.remove(os.path.join(p, "chat_template.jinja")),
    "config.json is empty": lambda p: truncate(os.path.join(p, "config.json"), 0),
    "tokenizer_config.json is not valid JSON": lambda p: write(os.path.join(p, "tokenizer_config.json"), b"\xff{"),
    "model.safetensors is truncated (1000000 of 3263168 bytes)": lambda p: truncate(os.path.join(p, SAFETENSORS), 10**6),
    "model.safetensors is truncated (4 bytes)": lambda p: truncate(os.path.join(p, SAFETENSORS), 4),
    "the vocabulary sizes disagree": lambda p: set_vocab_size(p, 99),
}


def test_the_cached_model_is_intact(tiny_path):
    assert tiny.cache_problem(tiny_path) is None
    assert os.path.getsize(os.path.join(tiny_path, "model.safetensors")) == 3263168  # as in DAMAGE above


@pytest.mark.parametrize("problem", list(DAMAGE))
def test_damage_is_named(cache, problem):
    DAMAGE[problem](cache)
    assert tiny.cache_problem(cache).startswith(problem)


def test_a_damaged_cache_is_rebuilt_in_place(cache, fake_build, capfd):
    truncate(os.path.join(cache, "model.safetensors"), 1000)
    assert tiny.ensure_tiny() == cache
    assert len(fake_build) == 1 and fake_build[0] != cache  # built beside it, then renamed into place
    assert tiny.cache_problem(cache) is None
    assert not [n for n in os.listdir(os.path.dirname(cache)) if n != os.path.basename(cache)]  # no leftovers
    err = capfd.readouterr().err
    assert "must be rebuilt (model.safetensors is truncated" in err and "minutes" in err
    tiny.ensure_tiny()  # intact now: no second build
    assert len(fake_build) == 1


def test_an_unwritable_cache_fails_before_any_build(tmp_path, monkeypatch, fake_build):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "a_file" / "cache"))
    with pytest.raises(SystemExit) as e:
        tiny.ensure_tiny()
    assert str(e.value).startswith("error: cannot build the tiny model") and "RLVR_CACHE" in str(e.value)
    assert "\n" not in str(e.value) and fake_build == []


def test_an_unwritable_cache_is_one_error_line_from_the_cli(tmp_path):
    (tmp_path / "a_file").write_text("")
    env = {**os.environ, "RLVR_CACHE": str(tmp_path / "a_file")}
    proc = subprocess.run([sys.executable, "grpo.py", "--max_steps", "1", "--output_dir", str(tmp_path / "runs")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot build the tiny model")


def test_a_short_build_shows_progress_writes_a_manifest_and_detects_changed_bytes(tmp_path, monkeypatch, capfd):
    monkeypatch.setitem(tiny.RECIPE, "sft_steps", 2)
    path = str(tmp_path / "built")
    tiny.build_tiny(path)
    err = capfd.readouterr().err
    assert "tiny model warm start" in err and "2/2" in err and "Writing model shards" not in err
    assert tiny.cache_problem(path) is None
    assert set(json.load(open(os.path.join(path, "tiny_files.json")))) == set(tiny.FILES)
    with open(os.path.join(path, "model.safetensors"), "r+b") as f:  # one byte of weight data
        f.seek(-3, os.SEEK_END)
        byte = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert tiny.cache_problem(path) == "model.safetensors changed after the build"


def test_safetensors_header_checks(tmp_path):
    file = str(tmp_path / "t.safetensors")
    save_file({"a": torch.zeros(3, 5), "b": torch.ones(7, dtype=torch.bfloat16)}, file)
    assert tiny.safetensors_problem(file) is None
    size = os.path.getsize(file)
    with open(file, "ab") as f:
        f.write(b"xx")
    assert tiny.safetensors_problem(file) == "t.safetensors has 2 unexpected trailing bytes"
    truncate(file, size - 1)
    assert tiny.safetensors_problem(file) == f"t.safetensors is truncated ({size - 1} of {size} bytes)"
    with open(file, "r+b") as f:
        f.seek(9)
        f.write(b"!!!!")
    assert tiny.safetensors_problem(file) == "t.safetensors has a corrupt header"


def test_loading_bars_are_silenced_only_for_our_cached_models(tiny_path, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    load_policy(tiny_path, torch.device("cpu"))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards
    elsewhere = str(tmp_path / "elsewhere")
    shutil.copytree(tiny_path, elsewhere)  # a user's own checkpoint keeps its bar
    load_policy(elsewhere, torch.device("cpu"))
    assert "Loading weights" in capfd.readouterr().err
    assert tiny.is_cached_build(tiny_path) and not tiny.is_cached_build(elsewhere)
    assert not tiny.is_cached_build("Qwen/Qwen2.5-0.5B-Instruct")
