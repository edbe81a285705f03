"""Loading a policy, batched generation, per-token log-probs and evaluation. Algorithm-neutral.

The same code serves the offline tiny model ("tiny", or "tiny:SEED" for another warm start), the
Qwen2.5-0.5B-shaped test rig ("qwen2.5-0.5b-shape" or "qwen2.5-0.5b-shape:LAYERS", common/qwen_shape.py) and any
causal LM that `from_pretrained` can load by hub id or local path.
"""

import contextlib

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from common.qwen_shape import ensure_rig, shape_layers
from common.sampler import sample
from common.tasks import correctness_reward
from common.tiny import ensure_tiny, is_project_build, quiet_transformers


def load_policy(name_or_path: str, device: torch.device, gradient_checkpointing: bool = False):
    """(model, tokenizer). Weights stay float32 (master copy); bf16 is applied by autocast."""
    if name_or_path == "tiny" or name_or_path.startswith("tiny:"):
        name_or_path = ensure_tiny(seed=int(name_or_path.partition(":")[2] or 0))
    elif (layers := shape_layers(name_or_path)) is not None:  # the Qwen2.5-0.5B-shaped test rig
        name_or_path = ensure_rig(layers)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:  # offline hub id, missing files: transformers' messages run long
        raise SystemExit(f"error: cannot load the tokenizer of --model {name_or_path}: {_first_line(e)}")
    tok.padding_side = "left"  # generation appends on the right, so prompts are padded on the left
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # A model this project built (the tiny model, the shape rig) loads in a second: no loading bar.
    with quiet_transformers() if is_project_build(name_or_path) else contextlib.nullcontext():
        try:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
        except SafetensorError as e:  # a truncated or overwritten .safetensors file
            raise SystemExit(f"error: cannot load the weights of --model {name_or_path}: a .safetensors file is "
                             f"damaged ({_first_line(e)})")
        except (OSError, ValueError, RuntimeError) as e:
            why = _first_line(e)
            if "mismatched_sizes" in why or "size mismatch" in str(e):  # transformers logs the shapes above
                why = "its config.json does not match the weights (transformers' load report lists the shapes)"
            raise SystemExit(f"error: cannot load the weights of --model {name_or_path}: {why}")
    model = model.to(device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tok


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def eos_ids(model, tok) -> list[int]:
    """Every id that ends a completion (instruct models often list several, e.g. <|im_end|>)."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return sorted(set(ids + [tok.eos_token_id]))


def encode_prompts(tok, prompts: list, max_prompt_length: int, device):
    """Left-padded prompt ids and mask; chat messages go through the chat template when it exists."""
    if tok.chat_template is not None:
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    else:
        texts = [p if isinstance(p, str) else "\n".join(m["content"] for m in p) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"][:, -max_prompt_length:], enc["attention_mask"][:, -max_prompt_length:]
    return ids.to(device), mask.to(device)


def completion_mask(completion_ids: torch.Tensor, eos: list[int]):
    """Mask of the tokens up to and including the first EOS, and which rows never reached one."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos, device=completion_ids.device))
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.int().argmax(1), completion_ids.size(1))
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device)
    return (positions[None] <= first[:, None]).long(), ~has_eos


GENERATE_CALLS: list[int] = []  # completions per `generate` call in the current step (Run.steps clears it)


@torch.no_grad()
def generate(model, tok, prompt_ids, prompt_mask, num_generations: int, max_new_tokens: int,
             temperature: float = 1.0, do_sample: bool = True, bf16: bool = False, sampler: str = "lean"):
    """Complete all prompts in one batch, each repeated num_generations times (rows i*G .. i*G+G-1
    belong to prompt i). Returns completion ids, mask (up to and including the first EOS) and
    truncated flags (no EOS within max_new_tokens).

    sampler "lean" (default): common/sampler.py, which drops finished rows from the batch and the KV
    cache; "hf": HF `generate`, kept for comparison (same distribution, same greedy output)."""
    if sampler not in ("lean", "hf"):
        raise ValueError(f"unknown sampler {sampler!r} (lean, hf)")
    was_training = model.training
    model.eval()
    eos = eos_ids(model, tok)
    if sampler == "lean":
        completion_ids, _ = sample(model, prompt_ids, prompt_mask, num_generations, max_new_tokens, eos,
                                   tok.pad_token_id, temperature, do_sample, bf16)
    else:
        # A fresh config, so a hub model's own sampling defaults (top_p, top_k, repetition penalty)
        # never change the distribution the loss assumes.
        cfg = GenerationConfig(do_sample=do_sample, temperature=temperature if do_sample else None,
                               top_k=None, top_p=None, max_new_tokens=max_new_tokens,
                               num_return_sequences=num_generations, eos_token_id=eos,
                               pad_token_id=tok.pad_token_id, use_cache=True)
        with torch.autocast(prompt_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=cfg)
        completion_ids = out[:, prompt_ids.size(1):]
    model.train(was_training)
    mask, truncated = completion_mask(completion_ids, eos)
    GENERATE_CALLS.append(completion_ids.size(0))
    return completion_ids, mask, truncated


# Rows of the (positions x vocab) logits handled at once by the log-prob and entropy kernels: about
# 16M floats (64 MB in float32) per temporary, whatever the vocabulary (~110 rows at 151,936 tokens).
CHUNK_ELEMENTS = 1 << 24


class _ChosenLogProbs(torch.autograd.Function):
    """log softmax(logits / T)[target] for each position, without a full-vocabulary copy.

    `log_softmax(...).gather(...)` keeps a float32 (rows x vocab) tensor alive for the backward pass,
    on top of the logits. Here the forward pass keeps only one logsumexp per row, and the backward pass
    rebuilds the softmax a chunk of rows at a time, writing straight into the logits' gradient:
        d logp_t / d z_v = ([v == t] - softmax(z / T)_v) / T.
    Peak memory is the logits plus their gradient (the floor for any exact method) plus one chunk."""

    @staticmethod
    def forward(ctx, logits, targets, temperature):
        rows = logits.reshape(-1, logits.size(-1))  # a view: callers pass contiguous logits
        flat_targets = targets.reshape(-1)
        step = max(1, CHUNK_ELEMENTS // rows.size(1))
        out = torch.empty(rows.size(0), dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(out)
        for s in range(0, rows.size(0), step):
            z = rows[s:s + step].float() / temperature
            lse[s:s + step] = torch.logsumexp(z, -1)
            out[s:s + step] = z.gather(-1, flat_targets[s:s + step, None]).squeeze(-1) - lse[s:s + step]
        ctx.save_for_backward(logits, flat_targets, lse)
        ctx.temperature = temperature
        return out.view(targets.shape)

    @staticmethod
    def backward(ctx, grad_out):
        logits, flat_targets, lse = ctx.saved_tensors
        rows = logits.reshape(-1, logits.size(-1))
        g = grad_out.reshape(-1).float() / ctx.temperature
        grad = torch.empty_like(rows)
        step = max(1, CHUNK_ELEMENTS // rows.size(1))
        for s in range(0, rows.size(0), step):
            p = torch.exp(rows[s:s + step].float() / ctx.temperature - lse[s:s + step, None])
            chunk = p.mul_(-g[s:s + step, None])
            chunk.scatter_add_(-1, flat_targets[s:s + step, None], g[s:s + step, None])
            grad[s:s + step] = chunk
        return grad.view_as(logits), None, None


@torch.no_grad()
def _entropy(logits, temperature):
    """Entropy of softmax(logits / T) per position, a chunk of rows at a time (no graph, no
    full-vocabulary temporaries): H = logsumexp(z) - sum_v softmax(z)_v z_v."""
    rows = logits.reshape(-1, logits.size(-1))
    out = torch.empty(rows.size(0), dtype=torch.float32, device=logits.device)
    step = max(1, CHUNK_ELEMENTS // rows.size(1))
    for s in range(0, rows.size(0), step):
        z = rows[s:s + step].float() / temperature
        lse = torch.logsumexp(z, -1, keepdim=True)
        out[s:s + step] = (lse - (torch.exp(z - lse) * z).sum(-1, keepdim=True)).squeeze(-1)
    return out.view(logits.shape[:-1])


def per_token_logps(model, input_ids, attention_mask, num_completion_tokens: int,
                    temperature: float = 1.0, bf16: bool = False, with_entropy: bool = False):
    """Float32 log-probs of the last `num_completion_tokens` tokens (and their entropy, detached).

    Position ids follow the left padding, as in generation; only the positions that predict a
    completion token go through the lm_head (`logits_to_keep`), and neither the log-probs nor the
    entropy materialise a float32 copy of the (tokens x vocab) logits: with a 151,936-token
    vocabulary one such copy of an 8 x 512-token micro-batch is 2.5 GB."""
    first = int(attention_mask.any(0).int().argmax())  # drop the columns that are padding in every row
    input_ids, attention_mask = input_ids[:, first:], attention_mask[:, first:]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        # The last position predicts past the sequence: leaving it out of the forward pass gives
        # logits for exactly the n predicting positions, contiguous, with no slice to copy.
        logits = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                       position_ids=position_ids[:, :-1], logits_to_keep=num_completion_tokens,
                       use_cache=False).logits
    targets = input_ids[:, -num_completion_tokens:]
    token_logp = _ChosenLogProbs.apply(logits.contiguous(), targets, temperature)
    entropy = _entropy(logits.detach(), temperature) if with_entropy else None
    return token_logp, entropy


@torch.no_grad()
def evaluate(model, tok, rows: list[dict], max_prompt_length: int, max_completion_length: int,
             num_samples: int = 4, batch_size: int = 64, bf16: bool = False, seed: int = 1234,
             sampler: str = "lean") -> dict:
    """Held-out accuracy: greedy pass@1 and sampled pass@1 (mean over num_samples at temperature 1).

    Runs under its own fixed RNG, so evaluating never changes a training run's random stream."""
    device = next(model.parameters()).device
    greedy, sampled = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            ids, mask = encode_prompts(tok, [r["prompt"] for r in chunk], max_prompt_length, device)
            for k, do_sample, out in ((1, False, greedy), (num_samples, True, sampled)):
                if k == 0:
                    continue
                comp, cmask, _ = generate(model, tok, ids, mask, k, max_completion_length,
                                          do_sample=do_sample, bf16=bf16, sampler=sampler)
                texts = tok.batch_decode(comp.masked_fill(cmask == 0, tok.pad_token_id), skip_special_tokens=True)
                out += correctness_reward(texts, [r["answer"] for r in chunk for _ in range(k)])
    return {"eval/greedy_acc": sum(greedy) / len(greedy),
            "eval/sampled_acc": sum(sampled) / max(1, len(sampled))}
