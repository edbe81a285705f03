"""Peak memory of the per-token log-probs (forward + backward) at Qwen2.5's vocabulary.

    python benchmarks/logps_memory.py                 # the Qwen2.5 vocabulary case, both implementations
    python benchmarks/logps_memory.py --completion 128 # a smaller case

One 1-layer Qwen2.5-0.5B-shaped model (hidden 896, vocab 151,936, tied embeddings, random weights),
8 sequences of 64 prompt + 512 completion tokens, float32 on the CPU. Each measurement runs in a fresh
child process and reports its peak RSS above the RSS just before the forward pass, in units of the
(tokens x vocab) float32 logits tensor: the logits and their gradient (2x) are the floor for any exact
method. "full log-softmax" is the computation common/rollout.py used before (kept here as the
reference); "chunked" is common.rollout.per_token_logps.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def full_log_softmax(model, input_ids, attention_mask, n, with_entropy):
    """The old per_token_logps: a float32 log-softmax over the whole vocabulary (and two more for the entropy)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   logits_to_keep=n + 1, use_cache=False).logits
    logp = logits[:, :-1].float().log_softmax(-1)
    token_logp = logp.gather(-1, input_ids[:, -n:].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1).detach() if with_entropy else None
    return token_logp, entropy


def child(impl, with_entropy, batch, prompt, completion):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, ROOT)
    from common.rollout import per_token_logps

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=1, num_attention_heads=14,
                      num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True, rope_theta=1e6)
    model = Qwen2ForCausalLM(cfg)
    ids = torch.randint(0, 151936, (batch, prompt + completion))
    mask = torch.ones_like(ids)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; the model is built, nothing else yet
    if impl == "chunked":
        logp, entropy = per_token_logps(model, ids, mask, completion, with_entropy=with_entropy)
    else:
        logp, entropy = full_log_softmax(model, ids, mask, completion, with_entropy)
    logp.sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    logits_gb = batch * completion * 151936 * 4 / 1e9
    print(json.dumps({"impl": impl, "entropy": with_entropy, "peak_above_base_gb": (peak - base) * 1024 / 1e9,
                      "logits_gb": logits_gb}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--completion", type=int, default=512)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child[0], a.child[1] == "1", a.batch, a.prompt, a.completion)
    rows = []
    for impl in ("full log-softmax", "chunked"):
        for ent in (False, True):
            out = subprocess.run([sys.executable, __file__, "--batch", str(a.batch), "--prompt", str(a.prompt),
                                  "--completion", str(a.completion), "--child",
                                  "full" if impl != "chunked" else "chunked", "1" if ent else "0"],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((impl, ent, r["peak_above_base_gb"], r["peak_above_base_gb"] / r["logits_gb"], r["logits_gb"]))
    print(f"{a.batch} sequences x ({a.prompt} + {a.completion}) tokens, vocab 151936, 1 layer, float32, CPU")
    print("| log-probs | entropy | peak RSS above baseline | in logits tensors |")
    print("|---|---|---|---|")
    for impl, ent, gb, x, lg in rows:
        print(f"| {impl} | {'yes' if ent else 'no'} | {gb:.2f} GB | {x:.2f}x (logits {lg:.2f} GB) |")


if __name__ == "__main__":
    main()
