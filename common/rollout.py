"""Loading a policy, batched generation, per-token log-probs and evaluation. Algorithm-neutral.

The same code serves the offline tiny model ("tiny", or "tiny:SEED" for another warm start) and any
causal LM that `from_pretrained` can load by hub id or local path.
"""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from common.tasks import correctness_reward
from common.tiny import ensure_tiny


def load_policy(name_or_path: str, device: torch.device, gradient_checkpointing: bool = False):
    """(model, tokenizer). Weights stay float32 (master copy); bf16 is applied by autocast."""
    if name_or_path == "tiny" or name_or_path.startswith("tiny:"):
        name_or_path = ensure_tiny(seed=int(name_or_path.partition(":")[2] or 0))
    tok = AutoTokenizer.from_pretrained(name_or_path)
    tok.padding_side = "left"  # generation appends on the right, so prompts are padded on the left
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32).to(device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tok


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


@torch.no_grad()
def generate(model, tok, prompt_ids, prompt_mask, num_generations: int, max_new_tokens: int,
             temperature: float = 1.0, do_sample: bool = True, bf16: bool = False):
    """One batched, KV-cached `generate` for all prompts; each prompt repeated num_generations times
    (rows i*G .. i*G+G-1 belong to prompt i). Returns completion ids, mask and truncated flags."""
    was_training = model.training
    model.eval()
    eos = eos_ids(model, tok)
    # A fresh config, so a hub model's own sampling defaults (top_p, top_k, repetition penalty)
    # never change the distribution the loss assumes.
    cfg = GenerationConfig(do_sample=do_sample, temperature=temperature if do_sample else None,
                           top_k=None, top_p=None, max_new_tokens=max_new_tokens,
                           num_return_sequences=num_generations, eos_token_id=eos,
                           pad_token_id=tok.pad_token_id, use_cache=True)
    with torch.autocast(prompt_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=cfg)
    model.train(was_training)
    completion_ids = out[:, prompt_ids.size(1):]
    mask, truncated = completion_mask(completion_ids, eos)
    return completion_ids, mask, truncated


def per_token_logps(model, input_ids, attention_mask, num_completion_tokens: int,
                    temperature: float = 1.0, bf16: bool = False, with_entropy: bool = False):
    """Float32 log-probs of the last `num_completion_tokens` tokens (and their entropy, detached).

    Position ids follow the left padding, as in generation; only the completion positions go
    through the lm_head (`logits_to_keep`), which matters for 150k-token vocabularies."""
    first = int(attention_mask.any(0).int().argmax())  # drop the columns that are padding in every row
    input_ids, attention_mask = input_ids[:, first:], attention_mask[:, first:]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       logits_to_keep=num_completion_tokens + 1, use_cache=False).logits
    logp = (logits[:, :-1].float() / temperature).log_softmax(-1)
    targets = input_ids[:, -num_completion_tokens:]
    token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1).detach() if with_entropy else None
    return token_logp, entropy


@torch.no_grad()
def evaluate(model, tok, rows: list[dict], max_prompt_length: int, max_completion_length: int,
             num_samples: int = 4, batch_size: int = 64, bf16: bool = False, seed: int = 1234) -> dict:
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
                                          do_sample=do_sample, bf16=bf16)
                texts = tok.batch_decode(comp.masked_fill(cmask == 0, tok.pad_token_id), skip_special_tokens=True)
                out += correctness_reward(texts, [r["answer"] for r in chunk for _ in range(k)])
    return {"eval/greedy_acc": sum(greedy) / len(greedy),
            "eval/sampled_acc": sum(sampled) / max(1, len(sampled))}
