"""Policies (ROCKET-1, VPT, and any registered by name), their interface, and checkpoint loading."""

from typing import Any

from minetrain.models.loading import LoadedCheckpoint, load_checkpoint, load_policy, load_reference_checkpoint
from minetrain.models.policy import Policy
from minetrain.models.registry import build_policy, policy_class
from minetrain.models.rocket import RocketPolicy

# Imported on first use: the VPT package (and the data-only unpickler its loader reads .model files
# with) adds ~0.2 s to every command that imports minetrain.models.
_VPT_EXPORTS = ("VPTPolicy", "load_vpt_policy")

__all__ = [
    "LoadedCheckpoint",
    "Policy",
    "RocketPolicy",
    "VPTPolicy",
    "build_policy",
    "load_checkpoint",
    "load_policy",
    "load_reference_checkpoint",
    "load_vpt_policy",
    "policy_class",
]


def __getattr__(name: str) -> Any:
    if name in _VPT_EXPORTS:
        from minetrain.models import vpt

        return getattr(vpt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
