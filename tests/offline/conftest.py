"""Shared fixture: a tiny generated dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minetrain.data.synth import write_synthetic_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 episodes of ~40 frames at 32x32 (about 5 windows of 8 frames each)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", episodes=8, frames=40, size=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
