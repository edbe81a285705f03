"""Helpers shared by the end-to-end tests of every script (not by the scripts themselves)."""

import importlib
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

import grpo
from common import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A run small enough for a test: 2 steps of 8 prompts x 4 completions, a tiny held-out set.
SMALL = dict(max_steps=2, prompts_per_step=8, num_generations=4, eval_size=8, eval_num_samples=1,
             eval_every=0, save_every=0, log_samples_every=1)


def params(path):
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_same_as_grpo(module, tiny_path, tmp_path, method_kwargs, grpo_kwargs=None, steps=1):
    """The neutral-setting contract: `module` at `method_kwargs` is grpo.py, same loss, same weights."""
    common = dict(SMALL, max_steps=steps, model=tiny_path, learning_rate=1e-3, output_dir=str(tmp_path))
    ref = grpo.main(grpo.Args(run_name="grpo", **{**common, **(grpo_kwargs or {})}))
    out = module.main(module.Args(run_name="method", **{**common, **method_kwargs}))
    a, b = params(os.path.join(ref["run_dir"], "final")), params(os.path.join(out["run_dir"], "final"))
    assert not all(torch.equal(a[k], p) for k, p in params(tiny_path).items())  # the step did train
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ra, rb = records(ref["run_dir"]), records(out["run_dir"])
    for key in ("loss", "reward", "grad_norm", "tokens/trained"):
        assert [r[key] for r in ra] == [r[key] for r in rb], key
    return ra, rb


def cli_error(script, flags):
    """`script` given these command-line flags and a model path that does not exist: the bad flags must fail
    first, with one clear line. Parsed and run in this process (a subprocess per case costs seconds of
    imports); tests/test_faults.py and tests/test_reliability.py run the real command line."""
    module = importlib.import_module(script.removesuffix(".py"))
    with pytest.raises(SystemExit) as e:
        module.main(runs.parse_args(module.Args, ["--model", "/nonexistent", *flags]))
    assert isinstance(e.value.code, str), e.value.code  # an error line, not an exit status
    assert "\n" not in e.value.code
    return e.value.code
