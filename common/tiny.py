"""The offline tiny model: a ~1M-parameter Qwen2 with a character-level tokenizer, warm-started by a
short SFT on the synthetic addition task, and loaded through `from_pretrained` exactly like a hub model.

The SFT data forgets each carry with probability RECIPE['forget_prob'] (see common/tasks.py), so the warm
start *samples* the right answer on easy problems and the wrong one on problems with many carries:
RL then has a real behaviour to fix.

The seed-0 warm start ("--model tiny", the default) ships with the repository in common/tiny_model/,
with the size and sha256 of every file, checked on every load: every clone trains from the same
weights, at once. The build is deterministic on one machine, but its 1400 optimizer steps amplify
floating-point differences between machines, so a rebuild elsewhere is a different warm start.
Other seeds ("--model tiny:SEED") are built on first use into a cache (RLVR_CACHE, default
~/.cache/rlvr-tiny) and rebuilt when missing, built by another recipe (RECIPE below is part of the
fingerprint) or changed since. A build shows a progress bar, writes into a temporary folder and
renames it into place, so a stopped build never leaves a half-written model behind.
"""

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import uuid

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
# complete, tiny_files.json records each file's size and sha256).
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja")
BUILD_SECONDS = 220  # a build on 2 idle CPU cores: 216 s measured on 2026-12-02 (1400 steps); shown before the progress bar starts
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_model")  # the default warm start
SHIPPED_SEED = 0


def cache_root() -> str:
    """Where the models this project builds are cached: RLVR_CACHE, default ~/.cache/rlvr-tiny."""
    return os.environ.get("RLVR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rlvr-tiny"))


def default_cache_dir(seed: int = 0) -> str:
    return os.path.join(cache_root(), f"tiny-add-v{RECIPE['version']}-seed{seed}")


def is_project_build(path: str) -> bool:
    """True for the shipped tiny model and for folders inside cache_root(): models this project built,
    which load in a moment, so their loading bars are noise."""
    if os.path.realpath(path) == os.path.realpath(SHIPPED):
        return True
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


def build_problem(path: str, seed: int = 0) -> str | None:
    """None when `path` holds a complete, unchanged build of this recipe and seed; otherwise what is wrong.

    Every build records each file's size and sha256 in tiny_files.json, then writes tiny_recipe.json
    last. Matching sizes and hashes mean the files are byte for byte the ones the build wrote: a
    missing, truncated or edited file, a torn download or a git-lfs pointer all fail here."""
    try:
        with open(os.path.join(path, "tiny_recipe.json")) as f:
            recipe = json.load(f)
    except FileNotFoundError:
        return "not built yet"
    except (OSError, ValueError):
        return "tiny_recipe.json is unreadable"
    if recipe != {**RECIPE, "seed": seed}:
        return "built by another recipe"
    try:
        with open(os.path.join(path, "tiny_files.json")) as f:
            manifest = {name: (int(want["bytes"]), str(want["sha256"])) for name, want in json.load(f).items()}
    except FileNotFoundError:
        return "tiny_files.json is missing"
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return "tiny_files.json is unreadable"
    for name in FILES:
        file = os.path.join(path, name)
        if name not in manifest:
            return f"tiny_files.json does not list {name}"
        if not os.path.isfile(file):
            return f"{name} is missing"
        size, (want_size, want_hash) = os.path.getsize(file), manifest[name]
        if size != want_size:
            return f"{name} has {size} bytes, not the {want_size} the build wrote"
        if _sha256(file) != want_hash:
            return f"{name} changed after the build (its sha256 differs)"
    return None


def shipped_tiny() -> str:
    """The seed-0 tiny model committed to the repository, after checking every file's sha256.

    A failed check stops the run: building a replacement would give a different warm start (the
    build's floating-point arithmetic depends on the machine), so results would silently change."""
    problem = build_problem(SHIPPED, SHIPPED_SEED)
    if problem is not None:
        raise SystemExit(f"error: the tiny model shipped in {SHIPPED} is damaged: {problem}; restore it from "
                         f"the repository (git checkout -- common/tiny_model, or git lfs pull if your clone "
                         f"stores it with Git LFS)")
    return SHIPPED


@contextlib.contextmanager
def _removed_on_sigterm(folder: str):
    """Inside the block, SIGTERM (`kill`, a job scheduler) first removes `folder`, then ends the process
    as it would have ended anyway. Ctrl-C needs no handler: its KeyboardInterrupt runs `finally` clauses."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signum, frame):
        shutil.rmtree(folder, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def ensure_tiny(path: str | None = None, seed: int = 0) -> str:
    """Path to the tiny model of `seed`: the shipped one for seed 0, otherwise a cached build, built
    first if it is missing, outdated or damaged.

    The build goes to a temporary folder beside `path`, created before any training starts, so an
    unwritable cache fails at once with one error line; the folder is renamed into place when
    complete, and removed if the build fails or is stopped (Ctrl-C, SIGTERM)."""
    if path is None and seed == SHIPPED_SEED:
        return shipped_tiny()
    path = os.path.abspath(path or default_cache_dir(seed))
    problem = build_problem(path, seed)
    if problem is None:
        return path
    parent = os.path.dirname(path)
    tmp = f"{path}.building-{uuid.uuid4().hex[:8]}"  # named before it exists, so a SIGTERM can never strand it
    with _removed_on_sigterm(tmp):
        try:
            os.makedirs(parent, exist_ok=True)
            os.mkdir(tmp)
        except OSError as e:
            raise SystemExit(f"error: cannot build the tiny model: the cache folder {parent} is not writable "
                             f"({e.strerror or e}); set RLVR_CACHE to a writable folder") from None
        why = "is not built yet" if problem == "not built yet" else f"must be rebuilt ({problem})"
        print(f"The offline tiny model for seed {seed} {why}: building it in {path}\n(first use only; about "
              f"{BUILD_SECONDS / 60:.1f} minutes on 2 CPU cores, less on more)", file=sys.stderr, flush=True)
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
        if build_problem(path, seed) is not None:
            raise
