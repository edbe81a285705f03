"""A local model folder whose weights cannot load is one `error:` line, never a traceback."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from common.rollout import load_policy
from tests.helpers import ROOT


@pytest.fixture
def model_dir(tiny_path, tmp_path):
    """A copy of the tiny model outside this project's folders, as a user's own checkpoint would be."""
    path = str(tmp_path / "my_model")
    shutil.copytree(tiny_path, path)
    return path


def truncate_weights(path):
    with open(os.path.join(path, "model.safetensors"), "r+b") as f:
        f.truncate(10**6)


def shrink_config(path):  # config.json of a smaller model than the weights hold
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**cfg, "hidden_size": 64, "intermediate_size": 100}, f)


BROKEN = {"a .safetensors file is damaged": truncate_weights,
          "its config.json does not match the weights": shrink_config}


@pytest.mark.parametrize("reason", list(BROKEN))
def test_weights_that_cannot_load_are_one_error_line(model_dir, reason):
    BROKEN[reason](model_dir)
    with pytest.raises(SystemExit) as e:
        load_policy(model_dir, torch.device("cpu"))
    message = str(e.value)
    assert message.startswith(f"error: cannot load the weights of --model {model_dir}: {reason}"), message
    assert "\n" not in message


def test_a_truncated_checkpoint_is_one_error_line_from_the_cli(model_dir, tmp_path):
    truncate_weights(model_dir)
    proc = subprocess.run([sys.executable, "grpo.py", "--model", model_dir, "--max_steps", "1", "--eval_every", "0",
                           "--output_dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: cannot load the weights of --model {model_dir}")
