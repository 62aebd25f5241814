"""ROCKET-1 policy model and checkpoint import."""

from minetrain.models.checkpoint import load_reference_checkpoint
from minetrain.models.rocket import RocketPolicy

__all__ = ["RocketPolicy", "load_reference_checkpoint"]
