"""Trajectory data: the LMDB store, windows for training and the Lightning data module.

``MineDataModule`` and ``RawDataset`` are imported on first use, so that tools which only need the
store (the ``minetrain data`` commands) do not pay for importing Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "MineDataModule": "minetrain.data.datamodule",
    "RawDataset": "minetrain.data.dataset",
    "EpisodeContinuousBatchSampler": "minetrain.data.sampler",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
