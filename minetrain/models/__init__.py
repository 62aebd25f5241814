"""Policies (ROCKET-1, and any registered by name), their interface, and checkpoint loading."""

from minetrain.models.loading import LoadedCheckpoint, load_checkpoint, load_policy, load_reference_checkpoint
from minetrain.models.policy import Policy
from minetrain.models.registry import build_policy, policy_class
from minetrain.models.rocket import RocketPolicy

__all__ = [
    "LoadedCheckpoint",
    "Policy",
    "RocketPolicy",
    "build_policy",
    "load_checkpoint",
    "load_policy",
    "load_reference_checkpoint",
    "policy_class",
]
