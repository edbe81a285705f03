"""benchmarks/roofline.py's FLOP arithmetic on the tiny model's shape, by hand (the timing itself is not run here)."""

import pytest

from benchmarks import roofline

TINY = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 101}


def test_per_token_flops_of_the_tiny_model():
    s = roofline.shape(TINY)
    assert s["head_dim"] == 32 and s["kv_heads"] == 2
    linear, attention = roofline.per_token(s)
    # per layer: q 2*128*128, k and v 2*128*64 each, o 2*128*128, gate/up/down 3 * 2*128*384 = 393216; x4 layers,
    # plus the head 2*128*101 = 25856
    assert linear == 4 * (32768 + 2 * 16384 + 32768 + 294912) + 25856 == 1_598_720
    assert attention == 4 * 2 * 2 * 128  # q.k and the weighted sum of v, 128 wide, per position, per layer
    assert roofline.forward_flops(s, 10, 20) == 10 * (1_598_720 + 2048 * 20)


def test_generation_and_update_count_the_positions_each_token_attends_to():
    s = roofline.shape(TINY)
    lin, att = roofline.per_token(s)
    # 2 rows of a 3-token prompt and 2 completion tokens: prefill attends to 1 + 2 + 3 positions, decode to 4 and 5
    assert roofline.generation_flops(s, 2, 3, 2) == pytest.approx(2 * (5 * lin + att * (1 + 2 + 3 + 4 + 5)))
    # the update: forward and backward over the 5 tokens (causal: 1 + ... + 5 positions), twice with passes=2
    assert roofline.update_flops(s, 2, 3, 2, passes=2) == pytest.approx(3 * 2 * 2 * (5 * lin + att * 15))


def test_matmul_shapes_and_the_report_fractions():
    s = roofline.shape(TINY)
    assert roofline.matmul_shapes(s, 64) == [(64, 128, 128), (64, 128, 64), (64, 128, 384), (64, 384, 128), (64, 128, 101)]
    step = {"rows": 128, "completion": 4.0, "generate_s": 0.5, "update_s": 1.0, "passes": 1}
    gen = roofline.generation_flops(s, 128, 10.0, 4.0)
    lines = roofline.report(s, step, 10.0, peak_update=gen / 0.5 * 4, peak_decode=gen / 0.5 * 2)
    assert "| generation |" in lines[2] and lines[2].endswith("| 25.0% | 50.0% |")
