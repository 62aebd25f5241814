"""Batch shape rules: stacking per-window fields into a batch (the one rule both the dataset's batched
read and the loader's collate of single windows follow), moving a window's padding, unbatching one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def stack_windows(values: Sequence[Any]) -> Any:
    """Batch per-window fields: arrays and tensors are stacked into tensors (a new leading dim),
    dicts recursed into, anything else (strings, string lists) kept as one entry per window."""
    first = values[0]
    if isinstance(first, dict):
        return {key: stack_windows([value[key] for value in values]) for key in first}
    if isinstance(first, np.ndarray):
        return torch.from_numpy(np.stack(values))
    if isinstance(first, torch.Tensor):
        return torch.stack(list(values))
    return list(values)


def shift_right(value: Any, steps: int) -> Any:
    """Move the right padding of a window to its front, ``steps`` frames, on every per-frame field."""
    if isinstance(value, np.ndarray):
        return np.roll(value, steps, axis=0)
    if isinstance(value, dict):
        return {key: shift_right(v, steps) for key, v in value.items()}
    if isinstance(value, list):
        return value[-steps:] + value[:-steps]
    return value


def unbatch(batch: Any) -> Any:
    """One window of a batch of one: the batch axis dropped from every field."""
    if isinstance(batch, dict):
        return {key: unbatch(value) for key, value in batch.items()}
    return batch[0]
