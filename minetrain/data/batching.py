"""Stacking per-window fields into a batch, the one rule both the dataset's batched read and the
loader's collate of single windows follow."""

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
