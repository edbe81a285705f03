"""The offline tiny model: a ~1M-parameter Qwen2 with a character-level tokenizer, warm-started by a
short SFT on the synthetic addition task, cached on disk and loaded back through `from_pretrained`
exactly like a hub model.

The SFT data forgets each carry with probability RECIPE['forget_prob'] (see common/tasks.py), so the warm
start *samples* the right answer on easy problems and the wrong one on problems with many carries:
RL then has a real behaviour to fix. Everything is deterministic from the seed; the cache is rebuilt
when it is missing or was built by a different recipe (RECIPE below is part of its fingerprint).
"""

import json
import logging
import os
import random
import time

import torch

import common.tasks as tasks

log = logging.getLogger(__name__)

SPECIALS = ["<|pad|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|unk|>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
RECIPE = dict(version=2, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=384, sft_steps=700, sft_batch_size=64, sft_lr=3e-3, forget_prob=0.5)


def default_cache_dir(seed: int = 0) -> str:
    root = os.environ.get("RLVR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rlvr-tiny"))
    return os.path.join(root, f"tiny-add-v{RECIPE['version']}-seed{seed}")


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


def build_tiny(path: str, seed: int = 0) -> None:
    """Build, warm-start and save the tiny model and tokenizer to `path` (deterministic from seed)."""
    t0 = time.time()
    tok = build_tokenizer()
    model = build_model(tok, seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["sft_lr"], weight_decay=0.0)
    steps = RECIPE["sft_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    model.train()
    for step in range(steps):
        input_ids, attention_mask, labels = sft_batch(tok, rng, RECIPE["sft_batch_size"])
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            log.info("tiny SFT step %d/%d loss %.4f (%.0fs)", step, steps, loss.item(), time.time() - t0)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    with open(os.path.join(path, "tiny_recipe.json"), "w") as f:
        json.dump({**RECIPE, "seed": seed}, f)  # written last: its presence marks a complete build
    log.info("tiny model built in %.0fs -> %s", time.time() - t0, path)


def ensure_tiny(path: str | None = None, seed: int = 0) -> str:
    """Path to the cached tiny model, building it first if missing or built by another recipe."""
    path = path or default_cache_dir(seed)
    try:
        with open(os.path.join(path, "tiny_recipe.json")) as f:
            if json.load(f) == {**RECIPE, "seed": seed}:
                return path
    except (OSError, ValueError):
        pass
    log.info("building the tiny model (first run only, 2-3 minutes on 2 CPU cores)")
    build_tiny(path, seed)
    return path
