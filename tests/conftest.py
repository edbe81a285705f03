import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_path():
    """The cached warm-started tiny model (built once, on first use, about two minutes)."""
    from common.tiny import ensure_tiny

    return ensure_tiny()
