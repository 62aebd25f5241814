"""Fixtures for the model tests."""

from __future__ import annotations

import pytest
import torch
from model_helpers import TINY

from minetrain.models import RocketPolicy


@pytest.fixture
def tiny_policy() -> RocketPolicy:
    torch.manual_seed(0)
    return RocketPolicy(**TINY).eval()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
