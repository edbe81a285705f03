"""The tiny model: the shipped seed-0 warm start checked by sha256 and never rebuilt; other seeds
built into a cache, every change detected and rebuilt, an unwritable cache refused at once, a build
that shows progress and cleans up when stopped; quiet loading of the models this project builds."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import common.tiny as tiny
from common.rollout import load_policy
from tests.helpers import ROOT

SEED = 7  # a seed that is not shipped: its model lives in the cache


def as_seed(path, seed):
    """Relabel a copy of the shipped model as a build of `seed` (tiny_recipe.json is not in the manifest)."""
    with open(os.path.join(path, "tiny_recipe.json"), "w") as f:
        json.dump({**tiny.RECIPE, "seed": seed}, f)


@pytest.fixture
def cache(tiny_path, tmp_path, monkeypatch):
    """A private RLVR_CACHE holding an intact build for SEED (a relabelled copy); returns its path."""
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    path = tiny.default_cache_dir(SEED)
    shutil.copytree(tiny_path, path)
    as_seed(path, SEED)
    return path


@pytest.fixture
def fake_build(tiny_path, monkeypatch):
    """build_tiny replaced by a relabelled copy of the shipped model (a real build takes minutes); records calls."""
    calls = []

    def build(path, seed=0, progress=True):
        calls.append(path)
        shutil.copytree(tiny_path, path, dirs_exist_ok=True)
        as_seed(path, seed)

    monkeypatch.setattr(tiny, "build_tiny", build)
    return calls


@pytest.fixture
def shipped_copy(tiny_path, tmp_path, monkeypatch):
    """tiny.SHIPPED pointed at a copy, so a test may damage it."""
    path = str(tmp_path / "tiny_model")
    shutil.copytree(tiny_path, path)
    monkeypatch.setattr(tiny, "SHIPPED", path)
    return path


def truncate(path, keep):
    with open(path, "r+b") as f:
        f.truncate(keep)


def write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


def flip_a_weight_byte(path):
    with open(os.path.join(path, "model.safetensors"), "r+b") as f:
        f.seek(-3, os.SEEK_END)
        byte = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


def replace_text(path, name, old, new):
    with open(os.path.join(path, name)) as f:
        text = f.read()
    assert old in text
    with open(os.path.join(path, name), "w") as f:
        f.write(text.replace(old, new))


SIZE = 3263168  # bytes of the shipped model.safetensors
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 3263168\n"
DAMAGE = {
    "tokenizer.json is missing": lambda p: os.remove(os.path.join(p, "tokenizer.json")),
    "chat_template.jinja is missing": lambda p: os.remove(os.path.join(p, "chat_template.jinja")),
    "config.json has 0 bytes, not the 824": lambda p: truncate(os.path.join(p, "config.json"), 0),
    f"model.safetensors has 1000000 bytes, not the {SIZE}": lambda p: truncate(os.path.join(p, "model.safetensors"), 10**6),
    f"model.safetensors has {len(LFS_POINTER)} bytes, not the {SIZE}": lambda p: write(os.path.join(p, "model.safetensors"), LFS_POINTER),
    "model.safetensors changed after the build": flip_a_weight_byte,
    "config.json changed after the build": lambda p: replace_text(p, "config.json", '"vocab_size": 101', '"vocab_size": 102'),
    "tiny_files.json is unreadable": lambda p: write(os.path.join(p, "tiny_files.json"), b"\xff{"),
    "tiny_files.json is missing": lambda p: os.remove(os.path.join(p, "tiny_files.json")),
    "built by another recipe": lambda p: as_seed(p, 12345),
    "not built yet": lambda p: os.remove(os.path.join(p, "tiny_recipe.json")),
}


def test_the_shipped_model_is_the_default_and_intact(tiny_path):
    assert tiny_path == tiny.SHIPPED == tiny.ensure_tiny() == tiny.ensure_tiny(seed=0)
    assert tiny.build_problem(tiny_path) is None
    assert os.path.getsize(os.path.join(tiny_path, "model.safetensors")) == SIZE
    assert set(json.load(open(os.path.join(tiny_path, "tiny_files.json")))) == set(tiny.FILES)


def test_the_shipped_model_needs_no_cache(tmp_path, monkeypatch, fake_build):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "a_file" / "cache"))  # unwritable: any build would fail
    assert tiny.ensure_tiny() == tiny.SHIPPED and fake_build == []


@pytest.mark.parametrize("problem", list(DAMAGE))
def test_damage_is_named(cache, problem):
    DAMAGE[problem](cache)
    assert tiny.build_problem(cache, SEED).startswith(problem)


@pytest.mark.parametrize("problem", ["model.safetensors changed after the build",
                                     f"model.safetensors has {len(LFS_POINTER)} bytes, not the {SIZE}"])
def test_a_damaged_shipped_model_is_one_error_line_and_never_rebuilt(shipped_copy, fake_build, problem):
    DAMAGE[problem](shipped_copy)
    with pytest.raises(SystemExit) as e:
        tiny.ensure_tiny()
    message = str(e.value)
    assert message.startswith(f"error: the tiny model shipped in {shipped_copy} is damaged: {problem}"), message
    assert "git checkout" in message and "\n" not in message and fake_build == []


def test_a_damaged_cache_is_rebuilt_in_place(cache, fake_build, capfd):
    truncate(os.path.join(cache, "model.safetensors"), 1000)
    assert tiny.ensure_tiny(seed=SEED) == cache
    assert len(fake_build) == 1 and fake_build[0] != cache  # built beside it, then renamed into place
    assert tiny.build_problem(cache, SEED) is None
    assert not [n for n in os.listdir(os.path.dirname(cache)) if n != os.path.basename(cache)]  # no leftovers
    err = capfd.readouterr().err
    assert "must be rebuilt (model.safetensors has 1000 bytes" in err and "minutes" in err
    tiny.ensure_tiny(seed=SEED)  # intact now: no second build
    assert len(fake_build) == 1


def test_an_unwritable_cache_fails_before_any_build(tmp_path, monkeypatch, fake_build):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "a_file" / "cache"))
    with pytest.raises(SystemExit) as e:
        tiny.ensure_tiny(seed=SEED)
    assert str(e.value).startswith("error: cannot build the tiny model") and "RLVR_CACHE" in str(e.value)
    assert "\n" not in str(e.value) and fake_build == []


def test_an_unwritable_cache_is_one_error_line_from_the_cli(tmp_path):
    (tmp_path / "a_file").write_text("")
    env = {**os.environ, "RLVR_CACHE": str(tmp_path / "a_file")}
    proc = subprocess.run([sys.executable, "grpo.py", "--model", f"tiny:{SEED}", "--max_steps", "1",
                           "--output_dir", str(tmp_path / "runs")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot build the tiny model")


def test_a_short_build_shows_progress_writes_a_manifest_and_detects_changed_bytes(tmp_path, monkeypatch, capfd):
    monkeypatch.setitem(tiny.RECIPE, "sft_steps", 2)
    path = str(tmp_path / "built")
    tiny.build_tiny(path)
    err = capfd.readouterr().err
    assert "tiny model warm start" in err and "2/2" in err and "Writing model shards" not in err
    assert tiny.build_problem(path) is None
    assert set(json.load(open(os.path.join(path, "tiny_files.json")))) == set(tiny.FILES)
    model, tok = load_policy(path, torch.device("cpu"))  # loads like any saved model
    assert len(tok) == model.config.vocab_size == 101
    flip_a_weight_byte(path)
    assert tiny.build_problem(path) == "model.safetensors changed after the build (its sha256 differs)"


def test_a_build_stopped_by_sigterm_removes_its_folder(tmp_path):
    # A real build in a subprocess, stopped as `kill` or a job scheduler would stop it.
    cache = tmp_path / "cache"
    env = {**os.environ, "RLVR_CACHE": str(cache), "PYTHONPATH": ROOT}
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", f"import common.tiny as t; t.ensure_tiny(seed={SEED})"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 120
            while not (cache.is_dir() and any(".building-" in n for n in os.listdir(cache))):
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "stderr").read_text()[-2000:]
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == -signal.SIGTERM  # ended by the signal, as without the handler
        finally:
            proc.kill()
    assert os.listdir(cache) == []  # neither the temporary folder nor a half-written model


def test_loading_bars_are_silenced_only_for_our_own_models(tiny_path, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    load_policy(tiny_path, torch.device("cpu"))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards
    elsewhere = str(tmp_path / "elsewhere")
    shutil.copytree(tiny_path, elsewhere)  # a user's own checkpoint keeps its bar
    load_policy(elsewhere, torch.device("cpu"))
    assert "Loading weights" in capfd.readouterr().err
    assert tiny.is_project_build(tiny_path) and not tiny.is_project_build(elsewhere)
    assert tiny.is_project_build(os.path.join(tiny.cache_root(), "tiny-add-v3-seed7"))
    assert not tiny.is_project_build("Qwen/Qwen2.5-0.5B-Instruct")
