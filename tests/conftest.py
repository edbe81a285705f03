import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_path():
    """The shipped warm-started tiny model (common/tiny_model, checked by sha256: nothing is built)."""
    from common.tiny import ensure_tiny

    return ensure_tiny()


@pytest.fixture(scope="session")
def qwen_shape_path():
    """The Qwen2.5-0.5B-shaped test rig at one layer (real vocab, tied, real tokenizer, ChatML; random
    weights), built once on first use (about 10 s) and cached next to the tiny model."""
    from common.qwen_shape import ensure_rig

    return ensure_rig(1)
