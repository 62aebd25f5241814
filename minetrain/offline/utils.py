"""Helpers for feeding Hydra/OmegaConf configs to loggers and checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def convert_to_normal(obj: Any) -> Any:
    """Turn an OmegaConf/Hydra config (or nested mappings and sequences) into plain dicts and lists.

    Loggers and checkpoint pickles want plain Python types; interpolations are resolved on the way.
    Strings and bytes are kept as they are, tuples become lists.
    """
    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Mapping):
        return {key: convert_to_normal(value) for key, value in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return [convert_to_normal(item) for item in obj]
    return obj
