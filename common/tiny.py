"""The offline tiny model: a ~1M-parameter Qwen2 with a character-level tokenizer, warm-started by a
short SFT on the synthetic addition task, cached on disk and loaded back through `from_pretrained`
exactly like a hub model.

The SFT data forgets each carry with probability RECIPE['forget_prob'] (see common/tasks.py), so the warm
start *samples* the right answer on easy problems and the wrong one on problems with many carries:
RL then has a real behaviour to fix. Everything is deterministic from the seed; the cache is rebuilt
when it is missing, was built by a different recipe (RECIPE below is part of its fingerprint) or is
damaged (a missing, unreadable or truncated file). A build shows a progress bar, writes into a
temporary folder and renames it into place, so a killed build never leaves a half-written cache.
"""

import contextlib
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

import torch

import common.tasks as tasks

SPECIALS = ["<|pad|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|unk|>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
# Version 3 (2026-12-02): 1400 SFT steps instead of 700. At 700 steps the warm start had not converged:
# builds on two machines differed (sampled pass@1 58% on one, 41% on another, with 20% of samples making
# errors other than a forgotten carry), and GRPO learned slowly from the weaker one. At 1400 steps
# the build forgets carries as designed (33% of samples) and makes few other errors (6%).
RECIPE = dict(version=3, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=384, sft_steps=1400, sft_batch_size=64, sft_lr=3e-3, forget_prob=0.5)


# Every file from_pretrained needs for the model and the tokenizer (tiny_recipe.json marks a build as
# complete, tiny_files.json records each file's size and hash).
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja")
BUILD_SECONDS = 220  # a build on 2 idle CPU cores: 216 s measured on 2026-12-02 (1400 steps); shown before the progress bar starts


def cache_root() -> str:
    """Where the models this project builds are cached: RLVR_CACHE, default ~/.cache/rlvr-tiny."""
    return os.environ.get("RLVR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rlvr-tiny"))


def default_cache_dir(seed: int = 0) -> str:
    return os.path.join(cache_root(), f"tiny-add-v{RECIPE['version']}-seed{seed}")


def is_cached_build(path: str) -> bool:
    """True for a folder inside cache_root(): a model this project built, whose loading bars are noise."""
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(cache_root())]) == \
            os.path.realpath(cache_root())
    except ValueError:  # different drives (Windows)
        return False


@contextlib.contextmanager
def quiet_transformers():
    """No "Loading weights" / "Writing model shards" bars inside the block (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def build_tokenizer():
    """Character-level tokenizer: printable ASCII plus newline, chat special tokens, a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                  unk_token="<|unk|>", padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(tok, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=RECIPE["hidden_size"],
                      num_hidden_layers=RECIPE["num_hidden_layers"],
                      num_attention_heads=RECIPE["num_attention_heads"],
                      num_key_value_heads=RECIPE["num_key_value_heads"],
                      intermediate_size=RECIPE["intermediate_size"], max_position_embeddings=256,
                      tie_word_embeddings=False, bos_token_id=None, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return Qwen2ForCausalLM(cfg)


def sft_batch(tok, rng: random.Random, batch_size: int):
    """A batch of chat-formatted (prompt, forgetful trace) pairs; loss only on the completion."""
    ids, labels = [], []
    for _ in range(batch_size):
        a, b = tasks.addition_problem(rng)
        prompt = tok.apply_chat_template([{"role": "user", "content": tasks.addition_prompt(a, b)}], tokenize=False,
                                         add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(tasks.addition_trace(a, b, RECIPE["forget_prob"], rng), add_special_tokens=False)["input_ids"]
        c = c + [tok.eos_token_id]
        ids.append(p + c)
        labels.append([-100] * len(p) + c)
    width = max(map(len, ids))
    pad = lambda xs, v: [x + [v] * (width - len(x)) for x in xs]  # noqa: E731 (right padding for SFT)
    input_ids = torch.tensor(pad(ids, tok.pad_token_id))
    return input_ids, (input_ids != tok.pad_token_id).long(), torch.tensor(pad(labels, -100))


def build_tiny(path: str, seed: int = 0, progress: bool = True) -> None:
    """Build, warm-start and save the tiny model and tokenizer to `path` (deterministic from seed)."""
    from tqdm import tqdm

    tok = build_tokenizer()
    model = build_model(tok, seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["sft_lr"], weight_decay=0.0)
    steps = RECIPE["sft_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    model.train()
    bar = tqdm(range(steps), desc="tiny model warm start (SFT)", unit="step", file=sys.stderr, disable=not progress)
    for step in bar:
        input_ids, attention_mask, labels = sft_batch(tok, rng, RECIPE["sft_batch_size"])
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    os.makedirs(path, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(path)
        tok.save_pretrained(path)
    manifest = {name: {"bytes": os.path.getsize(os.path.join(path, name)), "sha256": _sha256(os.path.join(path, name))}
                for name in FILES}
    with open(os.path.join(path, "tiny_files.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(path, "tiny_recipe.json"), "w") as f:
        json.dump({**RECIPE, "seed": seed}, f)  # written last: its presence marks a complete build


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_problem(path: str) -> str | None:
    """What is wrong with a .safetensors file, read from its header alone, or None.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
    shape and byte range, then the data: a truncated or padded file does not end where the header says."""
    name, size = os.path.basename(path), os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                return f"{name} is truncated ({size} bytes)"
            header = json.loads(f.read(n))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = 0
        for v in tensors.values():
            start, stop = v["data_offsets"]
            numel = 1
            for d in v["shape"]:
                numel *= d
            if v["dtype"] in DTYPE_BYTES and stop - start != numel * DTYPE_BYTES[v["dtype"]]:
                return f"{name} has a corrupt header"
            end = max(end, stop)
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{name} has a corrupt header"
    if 8 + n + end != size:
        return f"{name} is truncated ({size} of {8 + n + end} bytes)" if size < 8 + n + end else \
            f"{name} has {size - 8 - n - end} unexpected trailing bytes"
    return None


def cache_problem(path: str, seed: int = 0) -> str | None:
    """None when `path` holds a complete, intact build of this recipe and seed; otherwise what is wrong.

    Checks every file the model and the tokenizer need: present and non-empty, the JSON files parse,
    model.safetensors is as long as its header says and its embedding matches config.json and
    tokenizer.json; for builds that wrote tiny_files.json, every file's size and sha256 too."""
    try:
        with open(os.path.join(path, "tiny_recipe.json")) as f:
            recipe = json.load(f)
    except FileNotFoundError:
        return "not built yet"
    except (OSError, ValueError):
        return "tiny_recipe.json is unreadable"
    if recipe != {**RECIPE, "seed": seed}:
        return "built by another recipe"
    for name in FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{name} is missing"
        if os.path.getsize(file) == 0:
            return f"{name} is empty"
    parsed = {}
    for name in FILES:
        if name.endswith(".json"):
            try:
                with open(os.path.join(path, name), encoding="utf-8") as f:
                    parsed[name] = json.load(f)
            except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
                return f"{name} is not valid JSON"
    problem = safetensors_problem(os.path.join(path, "model.safetensors"))
    if problem:
        return problem
    try:
        vocab, hidden = parsed["config.json"]["vocab_size"], parsed["config.json"]["hidden_size"]
        tokens = len(parsed["tokenizer.json"]["model"]["vocab"])
        with open(os.path.join(path, "model.safetensors"), "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        embedding = header["model.embed_tokens.weight"]["shape"]
    except (KeyError, TypeError, ValueError):
        return "config.json, tokenizer.json or model.safetensors lacks an expected entry"
    if not vocab == tokens == embedding[0] or embedding[1] != hidden:
        return f"the vocabulary sizes disagree (config {vocab}, tokenizer {tokens}, embedding {embedding})"
    try:
        with open(os.path.join(path, "tiny_files.json")) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None  # built before the manifest existed: the checks above are all there is
    except (OSError, ValueError):
        return "tiny_files.json is not valid JSON"
    for name, want in manifest.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file) or os.path.getsize(file) != want["bytes"] or _sha256(file) != want["sha256"]:
            return f"{name} changed after the build"
    return None


def ensure_tiny(path: str | None = None, seed: int = 0) -> str:
    """Path to the cached tiny model, building it first if it is missing, outdated or damaged.

    The build goes to a temporary folder beside `path`, created before any training starts, so an
    unwritable cache fails at once with one error line; the folder is renamed into place when
    complete."""
    path = os.path.abspath(path or default_cache_dir(seed))
    problem = cache_problem(path, seed)
    if problem is None:
        return path
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".building-", dir=parent)
    except OSError as e:
        raise SystemExit(f"error: cannot build the tiny model: the cache folder {parent} is not writable "
                         f"({e.strerror or e}); set RLVR_CACHE to a writable folder") from None
    why = "is not built yet" if problem == "not built yet" else f"must be rebuilt ({problem})"
    print(f"The offline tiny model {why}: building it in {path}\n(first run only; about {BUILD_SECONDS / 60:.1f} "
          f"minutes on 2 CPU cores, less on more)", file=sys.stderr, flush=True)
    t0 = time.time()
    try:
        build_tiny(tmp, seed)
        _install(tmp, path, seed)
    except OSError as e:  # e.g. the disk filled up while saving
        raise SystemExit(f"error: cannot write the tiny model to {parent}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"tiny model ready in {time.time() - t0:.0f}s: {path}", file=sys.stderr, flush=True)
    return path


def _install(tmp: str, path: str, seed: int) -> None:
    """Rename the finished build into place, replacing a damaged or outdated one."""
    if os.path.lexists(path):
        old = f"{path}.old-{os.getpid()}"
        os.replace(path, old)
        shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)
    try:
        os.replace(tmp, path)
    except OSError:  # another process installed the same build a moment earlier: keep its copy
        if cache_problem(path, seed) is not None:
            raise
