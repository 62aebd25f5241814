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
