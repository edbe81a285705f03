"""Helpers for methods that generate more than once per step (a pilot round, refills, several rounds):
join completion batches of different widths, and read the prompt stream from a resumable position.
Algorithm-neutral: grpo.py generates once and needs neither.
"""

import torch
import torch.nn.functional as F

from common.tasks import prompt_indices


def concat_completions(batches, pad_id: int, trim: bool = False):
    """Stack (completion_ids, completion_mask, truncated) batches, as common.rollout.generate returns
    them, row after row: shorter ones are padded on the right (ids with pad_id, masks with 0). With
    trim, columns that are padding in every row are dropped."""
    batches = [b for b in batches if b is not None]
    width = max(b[0].size(1) for b in batches)
    ids = torch.cat([F.pad(b[0], (0, width - b[0].size(1)), value=pad_id) for b in batches])
    mask = torch.cat([F.pad(b[1], (0, width - b[1].size(1)), value=0) for b in batches])
    truncated = torch.cat([b[2] for b in batches])
    if trim:
        keep = max(int(mask.sum(1).max()), 1) if mask.numel() else 1
        ids, mask = ids[:, :keep], mask[:, :keep]
    return ids, mask, truncated


class PromptStream:
    """The training prompts in the order of common.tasks.prompt_indices (each epoch a fresh shuffle),
    read any number at a time. `position` counts the prompts read so far: keep it in run.totals and
    pass it back after --resume, and the stream continues where it stopped."""

    def __init__(self, num_rows: int, seed: int, position: int = 0):
        self.num_rows, self.seed, self.position = num_rows, seed, position

    def read(self, count: int) -> list[int]:
        out = [prompt_indices(self.num_rows, 1, self.position + k, self.seed)[0] for k in range(count)]
        self.position += count
        return out
