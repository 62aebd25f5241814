"""Policies by name: ``model.name`` in the Hydra configs and ``"name"`` in checkpoints resolve here.

Classes are named by import path and imported on first use, so a policy's dependencies load only
when it is chosen and a name can be listed before its package exists.
"""

from __future__ import annotations

import importlib
from typing import Any

from minetrain.errors import ConfigError
from minetrain.models.policy import Policy

# name -> "module:Class"
POLICIES: dict[str, str] = {
    "rocket": "minetrain.models.rocket:RocketPolicy",
    "vpt": "minetrain.models.vpt:VPTPolicy",
}
# The policy of configs and checkpoints that name none (older minetrain, the reference's ROCKET-1 files).
DEFAULT_POLICY = "rocket"


def policy_class(name: str) -> type[Policy]:
    """The class registered as ``name``; ConfigError for an unknown name or one that cannot be imported."""
    target = POLICIES.get(name) if isinstance(name, str) else None
    if target is None:
        raise ConfigError(f"unknown policy name {name!r}; known policies: {', '.join(POLICIES)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"policy {name!r} is not available in this install: importing {module_name} fails ({exc})"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"policy {name!r}: {module_name} has no {class_name}")
    return cls


def build_policy(name: str, **kwargs: Any) -> Policy:
    """The ``name`` policy a config's ``model.*`` (without ``name``) describe: ``cls.from_config(**kwargs)``
    when the class has that hook (e.g. VPT loading published files), else ``cls(**kwargs)``."""
    cls = policy_class(name)
    build = getattr(cls, "from_config", cls)
    try:
        return build(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build {cls.__name__} (policy {name!r}): {exc}") from None
