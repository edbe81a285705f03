"""benchmarks/trl_compat.py without running TRL's tests: the neutral configs it swaps in, and its report."""

import math
import os
import pickle
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
pytest.importorskip("trl")

import trl_compat  # noqa: E402


@pytest.mark.parametrize("method", ["pods", "cppo", "d3s", "dppo", "dgg"])
def test_neutral_config_is_grpo_and_pickles(method, tmp_path):
    """The swapped-in config: the method's fields at their neutral values, GRPOConfig's defaults where the
    method's config has others, and an instance that pickles (dataloader workers and deep copies need it)."""
    from trl import GRPOConfig

    trainer, cls = trl_compat.neutral_classes(method)
    config = cls(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    plain = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert (config.num_generations, config.loss_type, config.num_iterations) == \
        (plain.num_generations, plain.loss_type, plain.num_iterations)
    for name, value in trl_compat.NEUTRAL[method].items():
        if value is not None:
            assert getattr(config, name) == value
    if method == "pods":
        assert config.num_keep == config.num_generations  # m = n
    if method == "dgg":
        assert math.isinf(config.gate_tau)
    copy = pickle.loads(pickle.dumps(config))
    assert type(copy) is cls and copy.to_dict() == config.to_dict()
    assert trainer.method == method


def test_report_cells_and_counts():
    results = {"grpo": {"a::t1": {"status": "pass"}, "a::t2": {"status": "fail", "message": "x | y\nz"}},
               "pods": {"a::t1": {"status": "refused", "message": "pods: tools is not supported"},
                        "a::t2": {"status": "fail", "message": "x | y\nz"}}}
    assert trl_compat.table(results, ["grpo", "pods"]).splitlines() == [
        "| case | plain | pods |", "|---|---|---|",
        "| t1 | pass | refused: pods: tools is not supported |",
        "| t2 | fail: x \\| y z | fail: x \\| y z |"]
    assert trl_compat.counts(results, ["grpo", "pods"]).splitlines()[2:] == [
        "| pass | 1 | 0 |", "| fail | 1 | 1 |", "| refused | 0 | 1 |"]
