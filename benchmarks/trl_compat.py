"""TRL's own GRPOTrainer tests, offline, against plain GRPOTrainer and each plug-in at its neutral setting.
A benchmark script (minutes of CPU per trainer), not part of the pytest suite.

    python benchmarks/trl_compat.py --json r.json --out docs/results/trl_compat.md    # every trainer
    python benchmarks/trl_compat.py --methods grpo pods -k beta                      # a subset, to stdout
    python benchmarks/trl_compat.py --methods dgg -k "not tools" --merge r.json --json r.json --out ...
    python benchmarks/trl_compat.py --list                                           # the cases, nothing run

TRL's test file is not in the repository nor in TRL's sdist: it is read at run time from a git mirror of
TRL (--mirror, default $TRL_MIRROR or /work/.mirror/huggingface+trl/repo; `git show <rev>:tests/...`) into a
temporary folder, with the mirror's tests/conftest.py, testing_utils.py and scripts/generate_zen_dataset.py.
Nothing of it is copied into this repository. The class run is `TestGRPOTrainer` (the trainer's
behaviour); the VLM and the GPU ("slow") classes are not run.

Offline stand-ins (the hub is not reachable), redirected by id in every `from_pretrained` and in
`datasets.load_dataset` (this module is the pytest plug-in that does it, `pytest -p trl_compat`, with
HF_HUB_OFFLINE=1):
  models     "trl-internal-testing/tiny-<Arch>" (STANDINS) -> a local model by TRL's recipe for it
             (scripts/generate_tiny_models: hidden 8, 2 layers, ...; the reward models hidden 16, one
             label), random weights (TRL's init), Qwen2's byte-level BPE cut to its first 8192 ranks plus
             Qwen2's added tokens (Qwen3's four more for the Qwen3 models), and the hub model's chat template
             as TRL ships it (trl/chat_templates: qwen2_5, qwen3). Cases that hard-code Qwen token ids
             (FULL_VOCAB) get the full 151665-token vocabulary instead. Cached under
             $RLVR_CACHE/trl-compat-v<STANDIN_VERSION>. An id without a stand-in (other architectures,
             remote code, vision) skips its case, saying so.
  datasets   "trl-internal-testing/zen" <- TRL's own scripts/generate_zen_dataset.py, run in memory (its
             push_to_hub captured): every config with the hub's rows and splits.

Each trainer runs in its own pytest process. For a plug-in, the test module's `GRPOTrainer` and
`GRPOConfig` are replaced by the plug-in's trainer and a config at its neutral setting (NEUTRAL): the
method's config, its defaults that differ from GRPOConfig's put back to GRPOConfig's (PODS' n = 16 and
batch 16, DPPO's loss_type "grpo", DGG's K = 4), so a test's GRPOConfig(...) means the same run. To keep
the run short, every trainer (plain GRPOTrainer too) stops after STEP_CAP optimizer steps, by a callback
(max_steps is untouched: a test that checks it sees its own value), except the cases in UNCAPPED, which
count steps. A case's status: pass, fail (the first line of the error), refused (a plug-in's one-line
ValueError, "<method>: ..."), skip (the reason), xfail/xpass (TRL's own marks).
"""

import argparse
import dataclasses
import datetime
import functools
import importlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = os.environ.get("TRL_MIRROR", "/work/.mirror/huggingface+trl/repo")
TEST_FILES = ("__init__.py", "conftest.py", "testing_utils.py", "testing_constants.py", "test_grpo_trainer.py")
TEST_CLASS = "TestGRPOTrainer"
METHODS = ("grpo", "pods", "cppo", "d3s", "dppo", "dgg")
STEP_CAP = 4
UNCAPPED = ("test_prepare_input_called_with_correct_data",)  # asserts the number of training steps of a full run
STANDIN_VERSION = 3
# The neutral setting of each plug-in (the scripts' docstrings: "Neutral setting"); PODS' num_keep follows
# the test's num_generations (m = n).
NEUTRAL = {
    "pods": {"num_keep": None, "rule": "max_variance"},
    "cppo": {"prune_rate": 0.0},
    "d3s": {"schedule": "none", "sample_ratio_start": 1.0, "sample_ratio_end": 1.0, "token_ratio_start": 1.0,
            "token_ratio_end": 1.0},
    "dppo": {"completion_prune_rate": 0.0},
    "dgg": {"gate_tau": math.inf},
}

# TRL's recipes (scripts/generate_tiny_models/*): architecture, config class, config fields.
SMALL = dict(hidden_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2, intermediate_size=32)
REWARD = dict(SMALL, hidden_size=16, num_labels=1)
STANDINS = {
    "tiny-Qwen2ForCausalLM-2.5": ("Qwen2ForCausalLM", "Qwen2Config", SMALL),
    "tiny-Qwen2ForSequenceClassification-2.5": ("Qwen2ForSequenceClassification", "Qwen2Config", REWARD),
    "tiny-Qwen3ForCausalLM": ("Qwen3ForCausalLM", "Qwen3Config", SMALL),
    "tiny-Qwen3ForSequenceClassification": ("Qwen3ForSequenceClassification", "Qwen3Config", REWARD),
    "tiny-Qwen3MoeForCausalLM": ("Qwen3MoeForCausalLM", "Qwen3MoeConfig",
                                 dict(SMALL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                      norm_topk_prob=True)),
    "tiny-LlamaForSequenceClassification-3.2": ("LlamaForSequenceClassification", "LlamaConfig", REWARD),
    "tiny-Gemma2ForCausalLM": ("Gemma2ForCausalLM", "Gemma2Config", dict(SMALL, head_dim=2)),
}
# Tokens the hub tokenizer has beyond Qwen2.5's: Llama's pad (the test sets it), Qwen3's four added tokens.
QWEN3_TOKENS = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
EXTRA_TOKENS = {"tiny-LlamaForSequenceClassification-3.2": ["<|finetune_right_pad_id|>"],
                "tiny-Qwen3ForCausalLM": QWEN3_TOKENS, "tiny-Qwen3ForSequenceClassification": QWEN3_TOKENS,
                "tiny-Qwen3MoeForCausalLM": QWEN3_TOKENS}
# The hub models' chat templates, as TRL ships them (trl/chat_templates/): TRL recognises them (tool calling's
# response schema, the training templates). Qwen2.5's for the others.
CHAT_TEMPLATES = {"tiny-Qwen3ForCausalLM": "qwen3", "tiny-Qwen3ForSequenceClassification": "qwen3",
                  "tiny-Qwen3MoeForCausalLM": "qwen3"}
# The stand-ins' tokenizer is Qwen2's BPE cut to its first COMPACT_RANKS ranks (the 256 bytes come first, so
# any text encodes), then Qwen2's 22 added tokens and ChatML: the logits are 18x narrower than Qwen2's 151665.
# A case that hard-codes Qwen2's token ids gets the full-vocabulary stand-in of the same model instead.
COMPACT_RANKS = 8192
FULL_VOCAB = {  # a case whose name contains the key: these models at full vocabulary
    "mask_truncated_completions": ("tiny-Qwen2ForCausalLM-2.5",),  # fake completions with ids 151643, 151645
    "tool": ("tiny-Qwen3MoeForCausalLM", "tiny-Qwen3ForCausalLM"),  # fake tool calls in Qwen3's ids
    "environment": ("tiny-Qwen3MoeForCausalLM", "tiny-Qwen3ForCausalLM"),
}


def full_vocab(case: str | None) -> set:
    return {name for key, names in FULL_VOCAB.items() if key in (case or "") for name in names}


# ---------------------------------------------------------------------------------------------
# Stand-ins and TRL's files
# ---------------------------------------------------------------------------------------------
def standin_root() -> str:
    sys.path.insert(0, ROOT)
    from common.tiny import cache_root

    return os.path.join(cache_root(), f"trl-compat-v{STANDIN_VERSION}")


def qwen2_tokenizer(num_ranks: int | None):
    """Qwen2's tokenizer (common/qwen_shape.py), or its first num_ranks BPE ranks with the added tokens after them."""
    sys.path.insert(0, ROOT)
    from common import qwen_shape

    if num_ranks is None:
        return qwen_shape.build_tokenizer()
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class FirstRanks(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path):
            import base64

            with open(path, "rb") as f:
                ranks = ((base64.b64decode(tok), int(rank)) for tok, rank in (line.split() for line in f if line.strip()))
                return {tok: rank for tok, rank in ranks if rank < num_ranks}

    tk = FirstRanks(vocab_file=qwen_shape.ranks_path(), pattern=qwen_shape.PATTERN).converted()
    tk.normalizer = normalizers.NFC()
    tk.add_tokens([AddedToken(t, special=i < qwen_shape.NUM_SPECIAL, normalized=False)
                   for i, t in enumerate(qwen_shape.ADDED_TOKENS)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  model_max_length=131072, padding_side="left", clean_up_tokenization_spaces=False)
    tok.chat_template = qwen_shape.CHAT_TEMPLATE
    return tok


def build_standins(root: str) -> None:
    """Each stand-in once (half a minute in all); a folder appears only when complete."""
    wanted = [(name, False) for name in STANDINS] + [(name, True) for name in sorted(full_vocab("".join(FULL_VOCAB)))]
    missing = [(name, full) for name, full in wanted
               if not os.path.exists(os.path.join(root, name + ("-full" if full else ""), "standin.json"))]
    if not missing:
        return
    sys.path.insert(0, ROOT)
    import torch
    import transformers
    from torch import nn
    from transformers import GenerationConfig

    from common.qwen_shape import GENERATION

    templates = os.path.join(os.path.dirname(importlib.import_module("trl").__file__), "chat_templates")
    for name, full in missing:
        arch, config_name, fields = STANDINS[name]
        tok = qwen2_tokenizer(None if full else COMPACT_RANKS)
        tok.add_tokens(EXTRA_TOKENS.get(name, []), special_tokens=name.startswith("tiny-Llama"))
        with open(os.path.join(templates, CHAT_TEMPLATES.get(name, "qwen2_5") + ".jinja")) as f:
            tok.chat_template = f.read()
        config = getattr(transformers, config_name)(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                   bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                                   **fields)
        torch.manual_seed(0)
        model = getattr(transformers, arch)(config)
        for module in model.modules():  # TRL's init_weights_tiny_model
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        folder = name + ("-full" if full else "")
        path, tmp = os.path.join(root, folder), os.path.join(root, f"{folder}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # Qwen2.5's sampling defaults, with this tokenizer's ids (eos: <|im_end|> and <|endoftext|>)
        GenerationConfig(**dict(GENERATION, bos_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                                eos_token_id=[tok.eos_token_id, tok.pad_token_id])).save_pretrained(tmp)
        with open(os.path.join(tmp, "standin.json"), "w") as f:
            json.dump({"version": STANDIN_VERSION, "arch": arch, "config": fields, "vocab": len(tok)}, f)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)


def export_trl_tests(mirror: str, rev: str, dest: str) -> str:
    """TRL's test files from the mirror into dest/trl_tests (a package, so its relative imports work)."""
    pkg = os.path.join(dest, "trl_tests")
    os.makedirs(pkg, exist_ok=True)
    show = lambda path: subprocess.run(["git", "-C", mirror, "show", f"{rev}:{path}"], check=True,  # noqa: E731
                                       capture_output=True, text=True).stdout
    for name in TEST_FILES:
        with open(os.path.join(pkg, name), "w") as f:
            f.write(show(f"tests/{name}"))
    with open(os.path.join(dest, "generate_zen_dataset.py"), "w") as f:
        f.write(show("scripts/generate_zen_dataset.py"))
    return pkg


def mirror_description(mirror: str, rev: str) -> str:
    git = lambda *a: subprocess.run(["git", "-C", mirror, *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "--short", rev)
    version = git("show", f"{rev}:VERSION") or "?"
    date = git("log", "-1", "--format=%cs", rev)
    return f"TRL git {commit} ({date}, VERSION {version})"


# ---------------------------------------------------------------------------------------------
# The pytest plug-in (loaded in each method's pytest process: -p trl_compat)
# ---------------------------------------------------------------------------------------------
_STATE = {"results": {}, "cap": STEP_CAP}


def _redirect(owner, standins):
    import pytest

    func = owner.__dict__["from_pretrained"].__func__

    @functools.wraps(func)
    def from_pretrained(cls, name, *args, **kwargs):
        if isinstance(name, str) and name.startswith("trl-internal-testing/"):
            tail = name.split("/", 1)[1]
            if tail not in standins:
                pytest.skip(f"no offline stand-in for {name}")
            name = standins[tail] + ("-full" if tail in full_vocab(_STATE.get("case")) else "")
        return func(cls, name, *args, **kwargs)

    owner.from_pretrained = classmethod(from_pretrained)


def _zen_datasets(script: str) -> dict:
    """Every config of trl-internal-testing/zen, from TRL's own generator script, run in memory."""
    import datasets

    captured = {}
    original = datasets.DatasetDict.push_to_hub
    datasets.DatasetDict.push_to_hub = lambda self, repo_id, config_name="default", **kw: captured.__setitem__(
        config_name, self)
    try:
        namespace = {"__name__": "generate_zen_dataset"}
        with open(script) as f:
            exec(compile(f.read(), script, "exec"), namespace)
        namespace["main"](test_size=0.1, push_to_hub=True, repo_id="trl-internal-testing/zen")
    finally:
        datasets.DatasetDict.push_to_hub = original
    return captured


def neutral_classes(method: str):
    """(trainer, config) for the method at its neutral setting; ("grpo": TRL's own)."""
    from trl import GRPOConfig, GRPOTrainer

    if method == "grpo":
        return GRPOTrainer, GRPOConfig
    sys.path.insert(0, ROOT)
    from scale import trainers as T

    config, trainer = T.CONFIGS[method], T.TRAINERS[method]
    grpo_fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    own = {f.name: f for f in dataclasses.fields(config)}
    # The method config's defaults that differ from GRPOConfig's go back to GRPOConfig's; then the neutral values.
    reset = [(name, own[name].type, dataclasses.field(default=grpo_fields[name].default))
             for name in own if name in grpo_fields and own[name].default != grpo_fields[name].default]
    neutral = [(name, own[name].type, dataclasses.field(default=value)) for name, value in NEUTRAL[method].items()]

    def __post_init__(self):
        if method == "pods" and self.num_keep is None:
            self.num_keep = self.num_generations  # m = n
        config.__post_init__(self)

    cls = dataclasses.make_dataclass(f"Neutral{config.__name__}", reset + neutral, bases=(config,),
                                     namespace={"__post_init__": __post_init__})
    # A module attribute, so that pickle finds the class by name (dataloader workers and deep copies pickle args)
    cls.__module__ = __name__
    globals()[cls.__name__] = cls
    return trainer, cls


def pytest_configure(config):
    import importlib
    import importlib.util

    import datasets
    import torch
    import transformers

    import_utils = importlib.import_module("trl.import_utils")
    # The mirror's testing_utils.py may import availability checks this TRL does not have: the package's presence.
    for name, package in (("is_joblib_available", "joblib"),):
        if not hasattr(import_utils, name):
            setattr(import_utils, name, functools.partial(lambda p: importlib.util.find_spec(p) is not None, package))
    from transformers import TrainerCallback
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    torch.set_num_threads(1)
    root = os.environ["TRL_COMPAT_STANDINS"]
    standins = {name: os.path.join(root, name) for name in STANDINS}
    for owner in (transformers.PreTrainedModel, _BaseAutoModelClass, transformers.AutoConfig,
                  transformers.PretrainedConfig, transformers.AutoTokenizer, transformers.PreTrainedTokenizerBase,
                  transformers.AutoProcessor, transformers.ProcessorMixin, transformers.GenerationConfig):
        if "from_pretrained" in owner.__dict__:
            _redirect(owner, standins)

    zen = _zen_datasets(os.environ["TRL_COMPAT_ZEN"])
    original_load = datasets.load_dataset

    def load_dataset(path, name=None, *args, split=None, streaming=False, **kwargs):
        if isinstance(path, str) and path.startswith("trl-internal-testing/"):
            import pytest

            if path != "trl-internal-testing/zen" or name not in zen:
                pytest.skip(f"no offline stand-in for the dataset {path} {name}")
            data = zen[name]
            if streaming:
                data = datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in data.items()})
            return data[split] if split else data
        return original_load(path, name, *args, split=split, streaming=streaming, **kwargs)

    datasets.load_dataset = load_dataset  # the test module's `from datasets import load_dataset` binds this

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if _STATE["cap"] is not None and state.global_step >= _STATE["cap"]:
                control.should_training_stop = True

    transformers.trainer.DEFAULT_CALLBACKS.append(StopAfter)


def pytest_collection_modifyitems(session, config, items):
    trainer, cfg = neutral_classes(os.environ["TRL_COMPAT_METHOD"])
    for module in {id(item.module): item.module for item in items if getattr(item, "module", None)}.values():
        module.GRPOTrainer, module.GRPOConfig = trainer, cfg


def pytest_runtest_setup(item):
    _STATE["cap"] = None if item.originalname in UNCAPPED else STEP_CAP
    _STATE["case"] = item.originalname
    _STATE["start"] = time.time()


def _first_line(exc) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _refusal(exc, method: str) -> str | None:
    """The plug-in's one-line refusal, if that is what stopped the case (also inside a pytest.raises)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        message = str(exc)
        if isinstance(exc, ValueError) and message.startswith(f"{method}:"):
            return message.splitlines()[0]
        found = re.search(rf"'({method}: [^'\n]*)", message)  # pytest.raises(match=...) quoting the refusal
        if found:
            return found.group(1)
        exc = exc.__context__ or exc.__cause__
    return None


def pytest_runtest_makereport(item, call):
    import pytest

    if call.when == "teardown" and call.excinfo is None:
        return
    method = os.environ["TRL_COMPAT_METHOD"]
    key = item.nodeid.split("::", 2)[-1]
    entry = _STATE["results"].get(key)
    if call.excinfo is None:
        if call.when == "call":
            xfail = any(m.kwargs.get("condition", True) for m in item.iter_markers("xfail"))
            _STATE["results"][key] = {"status": "xpass" if xfail else "pass", "message": "",
                                      "seconds": round(time.time() - _STATE["start"], 1)}
        return
    exc = call.excinfo.value
    if isinstance(exc, pytest.skip.Exception):
        _STATE["results"][key] = {"status": "skip", "message": str(exc.msg if hasattr(exc, "msg") else exc)}
        return
    if entry and entry["status"] in ("fail", "refused"):
        return
    xfail = [m for m in item.iter_markers("xfail") if m.kwargs.get("condition", True)]
    refusal = None if method == "grpo" else _refusal(exc, method)
    status = "refused" if refusal else ("xfail" if xfail else "fail")
    _STATE["results"][key] = {"status": status, "message": refusal or _first_line(exc), "when": call.when,
                              "seconds": round(time.time() - _STATE.get("start", time.time()), 1)}


def pytest_collectreport(report):
    if report.failed:
        _STATE["results"][f"collect:{report.nodeid}"] = {"status": "fail", "message": str(report.longrepr)[-300:]}


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["TRL_COMPAT_OUT"], "w") as f:
        json.dump(_STATE["results"], f, indent=1)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------
def run_method(method, pkg, zen, standins, out_json, select, verbose, extra=()) -> float:
    env = dict(os.environ, TRL_COMPAT_METHOD=method, TRL_COMPAT_STANDINS=standins, TRL_COMPAT_ZEN=zen,
               TRL_COMPAT_OUT=out_json, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false", WANDB_DISABLED="true",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), ROOT,
                                           os.environ.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "pytest", "-p", "trl_compat", "-p", "no:cacheprovider", "-q", "-rN",
           "--rootdir", os.path.dirname(pkg), "-o", "addopts=", "-W", "ignore",
           f"{os.path.join(pkg, 'test_grpo_trainer.py')}::{TEST_CLASS}"]
    cmd += (["-k", select] if select else []) + list(extra)
    start = time.time()
    proc = subprocess.run(cmd, env=env, cwd=os.path.dirname(pkg), capture_output=not verbose, text=True)
    if not os.path.exists(out_json):
        sys.stderr.write((proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:])
        raise SystemExit(f"error: the pytest run for {method} wrote no results (exit {proc.returncode})")
    return time.time() - start


def cell(entry) -> str:
    if entry is None:
        return "-"
    status, message = entry["status"], entry.get("message", "")
    if status in ("pass", "xpass"):
        return status
    message = message.replace("|", "\\|").replace("\n", " ")
    return f"{status}: {message}" if message else status


def table(results: dict, methods) -> str:
    cases = sorted({case for m in methods for case in results.get(m, {})},
                   key=lambda c: (c.split("[")[0], c))
    lines = ["| case | " + " | ".join("plain" if m == "grpo" else m for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for case in cases:
        lines.append(f"| {case.split('::')[-1]} | " + " | ".join(cell(results.get(m, {}).get(case)) for m in methods) + " |")
    return "\n".join(lines)


def counts(results: dict, methods) -> str:
    rows = ["| | " + " | ".join("plain" if m == "grpo" else m for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for status in ("pass", "fail", "refused", "skip", "xfail", "xpass"):
        values = [sum(e["status"] == status for e in results.get(m, {}).values()) for m in methods]
        if any(values):
            rows.append(f"| {status} | " + " | ".join(map(str, values)) + " |")
    return "\n".join(rows)


INTRO = """# TRL's GRPOTrainer tests against the plug-ins

TRL's own `TestGRPOTrainer` cases (tests/test_grpo_trainer.py of a TRL git snapshot, read at run time, not
copied), run offline on plain `GRPOTrainer` and on each plug-in of scale/trainers.py at its neutral setting
(PODS m = n, CPPO P = 0, D3S every ratio 1 with schedule none, DPPO r_o = 0, DGG tau = inf), by
benchmarks/trl_compat.py: the test module's `GRPOTrainer` and `GRPOConfig` are replaced by the plug-in's
trainer and config. Hub models and datasets are local stand-ins (TRL's tiny-model recipes with random
weights, Qwen2's BPE cut to 8192 ranks; the zen dataset from TRL's own generator script; the cases that
hard-code Qwen token ids get full-vocabulary stand-ins). Every trainer stops after the runner's step cap.
A cell: pass; fail with the first error line; refused with the plug-in's one-line refusal; skip with the
reason (an extra that is not installed, or no stand-in for that hub id). The snapshot's tests need not
match the installed TRL: a case that fails on plain `GRPOTrainer` too tests behaviour that differs
between the two, not a plug-in; what measures a plug-in is its column against the plain one.
"""


def report(data: dict) -> str:
    import trl

    methods = [m for m in METHODS if m in data["results"]]
    runs = ["| command | date | methods | seconds |", "|---|---|---|---|"]
    for run in data["runs"]:
        runs.append(f"| `{run['command']}` | {run['date']} | {' '.join(run['methods'])} | "
                    + ", ".join(f"{m} {s:.0f}" for m, s in run["seconds"].items()) + " |")
    return "\n".join([
        INTRO,
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU, one thread per process, shared with "
        f"other jobs (the seconds are wall time, not a benchmark). TRL {trl.__version__} installed; tests from "
        f"{data['runs'][-1]['tests']}, class {TEST_CLASS}; step cap {STEP_CAP} (none for {', '.join(UNCAPPED)}); "
        f"stand-ins v{STANDIN_VERSION}.", "", "Runs (a later run's cases replace an earlier run's):", "", *runs, "",
        counts(data["results"], methods), "", table(data["results"], methods), ""])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS, help="the trainers to run")
    p.add_argument("-k", dest="select", default=None, help="pytest -k expression over TRL's test names")
    p.add_argument("--mirror", default=MIRROR)
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--merge", nargs="+", default=[], help="earlier --json files to start from")
    p.add_argument("--json", default=None, help="keep the runs and results here (for --merge)")
    p.add_argument("--out", default=None, help="write the report here (e.g. docs/results/trl_compat.md); "
                                                "default: stdout")
    p.add_argument("--list", action="store_true", help="list the cases and stop")
    p.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    args = p.parse_args(argv)
    data = {"runs": [], "results": {}}
    for path in args.merge:
        with open(path) as f:
            earlier = json.load(f)
        data["runs"] += earlier["runs"]
        for method, cases in earlier["results"].items():
            data["results"].setdefault(method, {}).update(cases)
    if args.methods or args.list:
        if not os.path.isdir(args.mirror):
            raise SystemExit(f"error: no TRL git mirror at {args.mirror} (--mirror or TRL_MIRROR)")
        standins = standin_root()
        build_standins(standins)
        command = "python benchmarks/trl_compat.py " + " ".join(
            f"'{a}'" if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))
        run = {"command": command.strip(), "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
               "methods": args.methods, "select": args.select, "seconds": {},
               "tests": mirror_description(args.mirror, args.rev)}
        with tempfile.TemporaryDirectory(prefix="trl_compat_") as tmp:
            pkg = export_trl_tests(args.mirror, args.rev, tmp)
            zen = os.path.join(tmp, "generate_zen_dataset.py")
            if args.list:
                run_method("grpo", pkg, zen, standins, os.path.join(tmp, "list.json"), args.select, True,
                           ["--collect-only"])
                return
            for method in args.methods:
                out_json = os.path.join(tmp, f"{method}.json")
                run["seconds"][method] = run_method(method, pkg, zen, standins, out_json, args.select, args.verbose)
                with open(out_json) as f:
                    new = json.load(f)
                data["results"].setdefault(method, {}).update(new)
                print(f"{method}: {run['seconds'][method]:.0f} s, " + ", ".join(
                    f"{s} {sum(e['status'] == s for e in new.values())}"
                    for s in ("pass", "fail", "refused", "skip", "xfail", "xpass")), flush=True)
        data["runs"].append(run)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    if not data["runs"]:
        raise SystemExit("error: nothing to report (no --methods run and no --merge)")
    text = report(data)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
