"""dppo.py: the pools and weights on hand vectors; the expected pruned fraction is the rate; the
estimator is unbiased (Monte Carlo) at the completion level, at the prompt level and for both together,
where a deterministic rule and the refill-until-B designs are not; packing respects its budget and beats
unpacked density; the neutral setting is grpo.py; argument checks; a smoke run; zero-advantage prompts
are skipped and reweighted on revisit; the prompt history survives a kill and --resume exactly."""

import math

import numpy as np
import pytest
import torch

import dppo
from tests.helpers import cli_error, SMALL, assert_same_as_grpo, params, records


@pytest.fixture
def untrained_gsm8k(tmp_path):
    """An untrained tiny Qwen2 saved to disk and a 8-row GSM8K-format file (6 train + 2 held out)."""
    import json

    from common.tiny import build_model, build_tokenizer
    tok = build_tokenizer()
    build_model(tok, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / "model"), str(tmp_path / "data.jsonl")


# ---------------------------------------------------------------- completion level

def test_completion_pool_is_judged_within_each_group():
    # two groups of 4; pool = ceil(0.75 * 4) = 3 smallest |A| per group; q = 0.6 * 4 / 3 = 0.8, weight 5
    adv = torch.tensor([2.0, -0.1, 0.0, 1.5, -3.0, 0.2, 0.05, -1.0])
    torch.manual_seed(0)
    for _ in range(50):
        w = dppo.completion_weights(adv, 0.6, 4, 0.75)
        assert w[[0, 4]].tolist() == [1.0, 1.0]  # the largest |A| of each group: never pruned
        assert all(x == 0 or abs(x - 5) < 1e-9 for x in w[[1, 2, 3, 5, 6, 7]].tolist())  # pruned or 1 / (1 - q)
    # over the whole step instead: pool = the 6 smallest |A| of all 8 (indices 2, 6, 1, 5, 7, 3)
    for _ in range(50):
        w = dppo.completion_weights(adv, 0.6, 8, 0.75)
        assert w[[0, 4]].tolist() == [1.0, 1.0]
    assert dppo.completion_weights(adv, 0.0, 4, 0.75).tolist() == [1.0] * 8
    # ties (all |A| equal, a zero-variance group) go to the lower index: pool = first 3 of 4
    w = torch.stack([dppo.completion_weights(torch.zeros(4), 0.6, 4, 0.75) for _ in range(200)])
    assert (w[:, 3] == 1).all() and (w[:, :3] == 0).any()


@pytest.mark.parametrize("rate, group, pool", [(0.5, 8, 0.75), (0.5, 5, 0.75), (0.3, 8, 1.0), (0.7, 4, 0.8)])
def test_expected_pruned_fraction_is_the_rate(rate, group, pool):
    gen = torch.Generator().manual_seed(0)
    adv = torch.randn(16 * group, generator=gen)
    draws = 4000
    frac = torch.tensor([(dppo.completion_weights(adv, rate, group, pool, gen) == 0).float().mean().item()
                         for _ in range(draws)])
    assert abs(frac.mean().item() - rate) <= 5 * frac.std().item() / draws ** 0.5 + 1e-9


def per_sequence_gradients(num_seq=12, max_len=5, group_size=4, seed=0):
    """A linear softmax policy: the gradient of the loss (through dppo's own loss functions, grpo
    normaliser over num_seq) that each completion contributes. The loss is linear in the weights, so any
    weighted gradient is weights @ these rows."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, 4, generator=g, requires_grad=True)
    feats = torch.randn(num_seq, max_len, 4, generator=g)
    targets = torch.randint(0, 6, (num_seq, max_len), generator=g)
    lengths = torch.randint(1, max_len + 1, (num_seq,), generator=g)
    mask = (torch.arange(max_len) < lengths.unsqueeze(1)).long()
    adv = dppo.group_advantages(torch.randint(0, 2, (num_seq,), generator=g).float(), group_size)
    rows = []
    for i in range(num_seq):
        logp = (feats @ theta.T).log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        token_loss, _, _ = dppo.clipped_token_loss(logp, logp.detach(), adv, 0.2, 0.2)
        onehot = torch.zeros(num_seq)
        onehot[i] = 1.0
        loss = dppo.aggregate_loss(token_loss * onehot.unsqueeze(1), mask, "grpo", num_seq, int(mask.sum()), max_len)
        rows.append(torch.autograd.grad(loss, theta)[0].flatten())
    return adv, torch.stack(rows).double()


def assert_unbiased(estimates, target):
    """The Monte-Carlo mean within 5 standard errors of `target`, in every coordinate."""
    stderr = estimates.std(0) / estimates.size(0) ** 0.5
    assert torch.all((estimates.mean(0) - target).abs() <= 5 * stderr + 1e-9), (estimates.mean(0) - target) / stderr
    return stderr


def test_random_completion_pruning_is_unbiased_and_deterministic_pruning_is_not():
    adv, grads = per_sequence_gradients()
    full = grads.sum(0)
    gen = torch.Generator().manual_seed(1)
    weights = torch.stack([dppo.completion_weights(adv, 0.5, 4, 0.75, gen) for _ in range(20000)]).double()
    stderr = assert_unbiased(weights @ grads, full)
    assert weights.mean().item() == pytest.approx(1.0, abs=0.01)
    # The biased alternative (the paper's Algorithm 1): always prune the floor(r n) smallest |A| of each group.
    det = torch.ones(12, dtype=torch.float64)
    order = torch.sort(adv.abs().view(3, 4), dim=1, stable=True).indices + torch.arange(3).unsqueeze(1) * 4
    det[order[:, :2].flatten()] = 0.0
    det[order[:, 2:].flatten()] = 2.0  # even reweighted by 1 / (1 - r)
    assert (det @ grads - full).abs().max() > 20 * stderr.max(), "the deterministic rule should be visibly biased"


# ---------------------------------------------------------------- prompt level

def test_prompt_pool_hand_example():
    history = {5: 0.0, 2: 0.9, 7: 0.0, 1: 0.3}  # prompt -> last-visit mean |A|
    assert dppo.prompt_pool(history, 0.5) == {5, 7}  # the two zeros; ties by prompt index
    assert dppo.prompt_pool(history, 0.75) == {5, 7, 1}
    assert dppo.prompt_pool(history, 0.0) == set() and dppo.prompt_pool({}, 0.5) == set()
    assert dppo.prompt_pool(history, 1.0) == {1, 2, 5, 7}


def test_draw_prompts_hand_example():
    stream = [3, 5, 8, 5, 9, 4, 6].__getitem__
    # pool {5}, r_q = 0.5: expected survivors 1, 1.5, 2.5, 3.0 -> 4 prompts drawn for B = 3
    for seed in range(20):
        drawn, picked, w = dppo.draw_prompts(stream, 0, {5}, 0.5, 3, torch.Generator().manual_seed(seed))
        assert drawn == [3, 5, 8, 5]
        assert [i for i in picked if i != 5] == [3, 8] and w == [2.0 if i == 5 else 1.0 for i in picked]
    assert dppo.draw_prompts(stream, 2, {5}, 0.0, 3)[1:] == ([8, 5, 9], [1.0, 1.0, 1.0])  # r_q = 0: the stream
    # all pooled, r_q = 0.9: 10 drawn for one expected survivor; if all are skipped, one is generated at weight 0
    outcomes = [dppo.draw_prompts(lambda k: k, 0, set(range(10)), 0.9, 1, torch.Generator().manual_seed(s))
                for s in range(40)]
    assert all(len(d) == 10 for d, _, _ in outcomes)
    assert ([9], [0.0]) in [(p, w) for _, p, w in outcomes]
    assert all(w == [pytest.approx(10.0)] * len(p) for _, p, w in outcomes if w != [0.0])


def simulate(grads, pool, rate, B, G, generator, completion_rate=0.0):
    """One step of dppo's estimator on a stream 0, 1, 2, ... whose prompt j owns rows jG .. jG+G-1 of
    `grads` (per-completion gradients under normaliser `grads.size(0)`); the normaliser is N G."""
    drawn, picked, w_q = dppo.draw_prompts(lambda k: k, 0, pool, rate, B, generator)
    rows = torch.tensor([j * G + i for j in picked for i in range(G)])
    w = torch.tensor(w_q, dtype=torch.float64).repeat_interleave(G)
    w = w * dppo.completion_weights(torch.randn(len(rows), generator=generator), completion_rate, G, 0.75, generator)
    est = w @ grads[rows]
    return est * grads.size(0) / (len(drawn) * G), len(drawn)


def test_prompt_level_is_unbiased_for_the_prompts_drawn():
    G = 4
    _, grads = per_sequence_gradients(num_seq=10 * G, group_size=G)
    pool, B = {0, 2, 3, 5, 6}, 5
    gen = torch.Generator().manual_seed(2)
    runs = [simulate(grads, pool, 0.5, B, G, gen) for _ in range(6000)]
    N = runs[0][1]
    assert {n for _, n in runs} == {N} and N == 8  # .5 + 1 + .5 + .5 + 1 + .5 + .5 = 4.5, + 1 = 5.5 >= 5
    target = grads[:N * G].sum(0) * grads.size(0) / (N * G)  # GRPO's gradient on the N prompts drawn
    assert_unbiased(torch.stack([e for e, _ in runs]), target)
    # both levels together: weights multiply and stay unbiased
    gen = torch.Generator().manual_seed(3)
    assert_unbiased(torch.stack([simulate(grads, pool, 0.5, B, G, gen, 0.5)[0] for _ in range(6000)]), target)


def test_refill_until_B_survive_is_biased():
    """Why dppo fixes the drawn set before flipping coins. Stream of identical pooled prompts (gradient 1),
    r_q = 0.5, B = 1; the target, the gradient of the prompts drawn, is 1. Drawing until one survives visits
    V ~ Geometric(1/2) prompts and keeps one at weight 2: normalised by B (the old code) that is 2 every
    time; normalised by V, E = 2 E[1/V] = 2 ln 2 = 1.386. dppo draws N = 2 and normalises by N: E = 1."""
    gen, draws = torch.Generator().manual_seed(4), 20000
    by_b, by_v, ours = [], [], []
    for _ in range(draws):
        v = 1
        while torch.rand((), generator=gen).item() < 0.5:
            v += 1
        by_b.append(2.0 / 1), by_v.append(2.0 / v)  # one survivor, weight 2, gradient 1
        drawn, picked, w = dppo.draw_prompts(lambda k: 0, 0, {0}, 0.5, 1, gen)
        ours.append(sum(w) / len(drawn))
    assert np.mean(by_v) == pytest.approx(2 * math.log(2), abs=0.02)
    assert np.mean(ours) == pytest.approx(1.0, abs=5 * np.std(ours) / draws ** 0.5)
    assert np.mean(by_b) == 2.0


# ---------------------------------------------------------------- packing

def test_packing_hand_example():
    lengths = [10, 50, 12, 48, 11, 49]  # completions only (prompts of length 0): the 1-D case
    batches = dppo.pack_microbatches([0] * 6, lengths, max_tokens=100, window=6)
    assert batches == [[1, 5], [2, 3], [0, 4]]  # 50+49 | 48+12 | 11+10: first fit, longest first
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    assert padded(batches) == 218 and padded([[0, 1], [2, 3], [4, 5]]) == 294  # density 0.83 vs 0.61


def test_packing_invariants_on_skewed_lengths():
    rng = np.random.default_rng(0)
    for trial in range(50):
        lengths = np.where(rng.random(100) < 0.8, rng.integers(5, 20, 100), rng.integers(60, 90, 100)).tolist()
        budget, window = int(rng.integers(200, 1000)), int(rng.integers(1, 101))
        batches = dppo.pack_microbatches([0] * 100, lengths, budget, window)
        assert sorted(i for b in batches for i in b) == list(range(100))  # every sequence exactly once
        assert all(len(b) * max(lengths[i] for i in b) <= budget for b in batches)
        if window == 100:  # one window: never more padding than fixed, in-order micro-batches
            rows = max(1, budget // max(lengths))
            fixed = [list(range(i, min(i + rows, 100))) for i in range(0, 100, rows)]
            pad = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
            assert pad(batches) <= pad(fixed)
    assert dppo.pack_microbatches([0, 0], [500, 10], max_tokens=100, window=2) == [[0], [1]]  # an over-long one alone


def test_packing_budget_is_the_padded_width_of_prompt_and_completion():
    """Prompts are left-padded and completions right-padded, so a micro-batch's rows are as wide as its longest
    prompt plus its longest completion, not its longest prompt + completion. Four rows of 12 tokens each (10 + 2,
    2 + 10, ...) fit a 50-token budget by total length (4 x 12 = 48), but their padded width is 20 (80 tokens)."""
    p, c = [10, 2, 10, 2], [2, 10, 2, 10]
    batches = dppo.pack_microbatches(p, c, max_tokens=50, window=4)
    assert batches == [[0, 1], [2, 3]]  # 2 x (10 + 10) = 40 each; a third row would make 60
    assert all(len(b) * (max(p[i] for i in b) + max(c[i] for i in b)) <= 50 for b in batches)
    assert dppo.pack_density(batches, torch.tensor(p), torch.tensor(c)) == pytest.approx(48 / 80)
    rng = np.random.default_rng(1)
    for _ in range(30):
        p, c = rng.integers(5, 60, 64).tolist(), rng.integers(1, 60, 64).tolist()
        budget = int(rng.integers(150, 1200))
        for b in dppo.pack_microbatches(p, c, budget, 64):
            assert len(b) == 1 or len(b) * (max(p[i] for i in b) + max(c[i] for i in b)) <= budget


# ---------------------------------------------------------------- the script

@pytest.mark.parametrize("flags, message", [
    (["--prompt_prune_rate", "1"], "error: the prune rates must be in [0, 1)"),
    (["--completion_prune_rate", "-0.5"], "error: the prune rates must be in [0, 1)"),
    (["--completion_pool", "2"], "error: the pools must be in [0, 1]"),
    (["--prompt_pool", "-1"], "error: the pools must be in [0, 1]"),
    (["--prompt_prune_rate", "0.5"], "error: each prune rate must be below its pool (else a pooled prompt or completion is always pruned)"),
    (["--completion_prune_rate", "0.8"], "error: each prune rate must be below its pool (else a pooled prompt or completion is always pruned)"),
    (["--completion_scope", "batch"], "error: unknown --completion_scope 'batch' (group, step)"),
    (["--max_train_samples", "-1"], "error: --max_train_samples must be >= 0"),
    (["--pack_window", "0"], "error: --pack_max_tokens must be >= 0, --pack_window >= 1"),
])
def test_cli_rejects_bad_arguments_before_loading_anything(flags, message):
    assert cli_error("dppo.py", flags) == message


def test_no_pruning_no_packing_is_exactly_grpo(tiny_path, tmp_path):
    neutral = dict(prompt_prune_rate=0.0, completion_prune_rate=0.0, pack_max_tokens=0, max_train_samples=0)
    assert_same_as_grpo(dppo, tiny_path, tmp_path, neutral, grpo_kwargs=dict(loss_type="grpo"), steps=2)


def test_smoke_run_prunes_and_packs(tiny_path, tmp_path):
    out = dppo.main(dppo.Args(model=tiny_path, output_dir=str(tmp_path), pack_max_tokens=600, max_train_samples=8,
                              **dict(SMALL, max_steps=4, prompts_per_step=4)))
    recs = records(out["run_dir"])
    generated = 0
    for r in recs:
        assert 0.0 <= r["dppo/completions_pruned"] <= 0.75  # never more than the pool
        assert r["pack/density"] >= r["pack/density_unpacked"] - 0.05 and 0 < r["pack/density"] <= 1
        assert r["dppo/prompts_drawn"] >= 4 and 1 <= r["dppo/prompts_generated"] <= r["dppo/prompts_drawn"]
        generated += r["dppo/prompts_generated"] * 4
        assert r["rollouts/generated_total"] == generated
    assert [r["dppo/prompts_drawn"] for r in recs[:2]] == [4, 4]  # 8 prompts: no history before step 2
    assert any(r["dppo/prompts_pooled"] > 0 for r in recs[2:])  # revisits: half the history is pooled
    assert recs[-1]["dppo/prompts_visited_total"] == sum(r["dppo/prompts_drawn"] for r in recs)


def test_zero_advantage_prompts_are_skipped_and_reweighted(untrained_gsm8k, tmp_path, monkeypatch):
    """A 6-prompt train set is revisited every 3 steps; with every reward 0 every group has mean |A| = 0,
    and with the whole history pooled every revisit is skipped with probability r_q or weighted 1/(1-r_q),
    and 4 prompts are drawn for 2 expected survivors."""
    monkeypatch.setattr(dppo, "score_completions", lambda task, rows, texts, G: (torch.zeros(len(texts)), {}))
    model_dir, data = untrained_gsm8k
    out = dppo.main(dppo.Args(model=model_dir, task="gsm8k", dataset_path=data, eval_size=2, eval_num_samples=0,
                              max_steps=9, prompts_per_step=2, num_generations=2, max_completion_length=4,
                              prompt_pool=1.0, prompt_prune_rate=0.5, eval_every=0, save_every=0, log_samples_every=0,
                              output_dir=str(tmp_path / "runs")))
    recs = records(out["run_dir"])
    assert all(r["frac_reward_zero_std"] == 1.0 for r in recs)
    assert [r["dppo/prompt_weight_mean"] for r in recs[:3]] == [1.0, 1.0, 1.0]  # first epoch: no history yet
    assert [r["dppo/prompts_drawn"] for r in recs] == [2, 2, 2] + [4] * 6
    assert {r["dppo/prompt_weight_mean"] for r in recs[3:]} <= {2.0, 0.0}  # weight 1/(1 - 0.5), or 0 if all skipped
    assert 0 < np.mean([r["dppo/prompts_pruned"] for r in recs[3:]]) < 1
    assert recs[-1]["dppo/prompts_visited_total"] == 3 * 2 + 6 * 4
    assert recs[-1]["rollouts/generated_total"] == 2 * sum(r["dppo/prompts_generated"] for r in recs)
    assert recs[-1]["skipped/degenerate_total"] == 9 and recs[-1]["updates_total"] == 0  # A = 0 everywhere


def test_kill_and_resume_is_exact_with_the_prompt_history(tiny_path, tmp_path, monkeypatch):
    """Killed during step 2 (checkpoint at step 2), then resumed: the same weights as an uninterrupted run,
    because the prompt history is in the checkpoint (from step 2 on, half of it is pooled)."""
    kw = dict(SMALL, model=tiny_path, output_dir=str(tmp_path), max_steps=4, prompts_per_step=4, save_every=2,
              max_train_samples=8, learning_rate=1e-3)
    ref = dppo.main(dppo.Args(run_name="straight", **kw))
    calls, generate = [0], dppo.generate

    def dies_at_step_2(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt("killed")
        return generate(*a, **k)
    monkeypatch.setattr(dppo, "generate", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        dppo.main(dppo.Args(run_name="killed", **kw))
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["state"]["dppo_history"]
    monkeypatch.setattr(dppo, "generate", generate)
    out = dppo.main(dppo.Args(run_name="killed", resume=True, **kw))
    a, b = params(tmp_path / "straight" / "final"), params(tmp_path / "killed" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = records(ref["run_dir"]), records(out["run_dir"])
    assert [r["dppo/prompts_pooled"] for r in ra] == [r["dppo/prompts_pooled"] for r in rb]
    assert any(r["dppo/prompts_pooled"] > 0 for r in rb[2:])


def test_the_script_normalises_by_every_prompt_drawn(tiny_path, tmp_path, monkeypatch):
    """The loss's normaliser in dppo.main is the drawn count N G (pruned prompts included), fixed before the
    coins: normalising by the B G kept would rescale the expectation (the Monte Carlo tests above use the
    functions, so only this test catches that regression in the script itself)."""
    seen, aggregate = [], dppo.aggregate_loss
    monkeypatch.setattr(dppo, "aggregate_loss", lambda *a, **k: seen.append(a[3]) or aggregate(*a, **k))
    out = dppo.main(dppo.Args(model=tiny_path, output_dir=str(tmp_path), max_train_samples=8, pack_max_tokens=0,
                              **dict(SMALL, max_steps=5, prompts_per_step=4, micro_batch_size=1000)))
    recs = records(out["run_dir"])  # one micro-batch per step; a step with A = 0 everywhere trains nothing
    trained = [r for i, r in enumerate(recs) if r["updates_total"] > (recs[i - 1]["updates_total"] if i else 0)]
    assert len(seen) == len(trained) > 0
    assert seen == [r["dppo/prompts_drawn"] * SMALL["num_generations"] for r in trained]
    assert any(r["dppo/prompts_drawn"] > r["dppo/prompts_generated"] for r in trained)  # some prompt was skipped


def test_prompt_rate_is_the_expected_fraction_of_drawn_prompts_skipped():
    """Once every prompt has a history, a drawn prompt is pooled with probability p = prompt_pool and skipped
    with probability r_q / p, so r_q of the drawn prompts are skipped, as r_o of the completions are."""
    gen = torch.Generator().manual_seed(5)
    history = {i: float(torch.rand((), generator=gen)) for i in range(200)}
    for r_q, p in [(0.25, 0.5), (0.3, 0.75), (0.1, 0.2)]:
        pool = dppo.prompt_pool(history, p)
        stream = lambda k: int(torch.randint(0, 200, (), generator=gen))  # noqa: E731
        skipped = drawn = 0
        for _ in range(2000):
            d, picked, _ = dppo.draw_prompts(stream, 0, pool, r_q / p, 8, gen)
            skipped, drawn = skipped + len(d) - len(picked), drawn + len(d)
        assert skipped / drawn == pytest.approx(r_q, abs=0.02)
