"""Saving and loading any policy's weights: ``model.safetensors`` + ``config.json`` directories and the
weights of Lightning ``.ckpt`` files (``mine_policy.`` keys), checked strictly against the model.

Nothing here knows a particular policy: the class to build is passed in, and a class may translate
what a checkpoint recorded into its constructor arguments (``checkpoint_kwargs``, see
``minetrain.models.policy``).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from minetrain.errors import CheckpointError, ConfigError
from minetrain.files import atomic_write_bytes, atomic_write_text

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
LIGHTNING_PREFIX = "mine_policy."
# The key of config.json (and of a config's ``model`` section) naming the policy in the registry.
NAME_KEY = "name"
# What a weights-do-not-fit error advises unless the caller knows better.
REMEDY = "check the architecture and sizes the checkpoint was trained with"
# What training writes besides the policy's weights (offline.lightning_callbacks), named here so that
# loading reads them without importing the training side: the EMA weights inside a full checkpoint, and
# the reference's name of the EMA weights file beside each checkpoint.
EMA_STATE_KEY = "ema_state_dict"
EMA_SUFFIX = "-EMA"
CKPT_SUFFIX = ".ckpt"


def full_checkpoints(paths: Iterable[Path]) -> list[Path]:
    """The full checkpoint files among ``paths``: not the EMA weights beside them, nor hidden files."""
    return [
        path
        for path in paths
        if path.is_file() and not path.name.startswith(".") and not path.stem.endswith(EMA_SUFFIX)
    ]


def ema_path(filepath: str, extension: str = CKPT_SUFFIX) -> str:
    """``name.ckpt`` -> ``name-EMA.ckpt`` (the reference library's naming)."""
    if filepath.endswith(extension):
        return filepath[: -len(extension)] + EMA_SUFFIX + extension
    return filepath + EMA_SUFFIX


def save_pretrained(model: torch.nn.Module, directory: str | Path) -> None:
    """Write the weights (safetensors) and the policy's name and constructor config (JSON) into
    ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    # Serialised here and written by Python: safetensors' own file writer creates files 0600.
    payload = save(tensors, metadata={"format": "pt"})
    atomic_write_bytes(directory / WEIGHTS_NAME, payload)
    config = {NAME_KEY: model.policy_name, **model.config}
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_text(directory / CONFIG_NAME, text)


def checkpoint_kwargs(
    cls: type, state_dict: Mapping[str, torch.Tensor], recorded: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """The constructor arguments of ``cls`` for a checkpoint that recorded ``recorded``."""
    translate = getattr(cls, "checkpoint_kwargs", None)
    if translate is not None:
        return dict(translate(state_dict, recorded, source))
    return {key: value for key, value in recorded.items() if key != NAME_KEY}


def build_and_load(
    cls: type,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    source: str,
    overrides: Mapping[str, Any],
    remedy: str = REMEDY,
) -> Any:
    """Construct ``cls`` from the recorded config (and ``overrides``) and load the weights strictly
    (``remedy``: what the error advises when they do not fit)."""
    kwargs = {**checkpoint_kwargs(cls, state_dict, config, source), **overrides}
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build {cls.__name__} for {source}: {exc}") from None
    load_strict(model, state_dict, source, remedy)
    return model


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def check_fits(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, remedy: str = REMEDY
) -> None:
    """CheckpointError unless ``state_dict`` has exactly ``model``'s keys and shapes, naming what differs
    (the first few keys of each kind), the model's sizes and ``remedy``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{key} {tuple(state_dict[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    problems = [
        f"{len(items)} {label}: {_names(items)}"
        for items, label in (
            (missing, "missing keys"),
            (unexpected, "unexpected keys"),
            (wrong, "shape mismatches"),
        )
        if items
    ]
    if problems:
        # Scalar sizes only: list- and dict-valued options would make the line unreadable.
        config = {k: v for k, v in getattr(model, "config", {}).items() if not isinstance(v, list | dict)}
        sizes = f"({', '.join(f'{k}={v!r}' for k, v in config.items())})" if config else ""
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}{sizes}: " + "; ".join(problems) + f"; {remedy}"
        )


def load_strict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, remedy: str = REMEDY
) -> None:
    """Load ``state_dict`` only if keys and shapes match exactly (``check_fits``)."""
    check_fits(model, state_dict, source, remedy)
    model.load_state_dict(state_dict, strict=True)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU."""
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from None


def read_config(directory: Path) -> dict[str, Any]:
    """``directory``'s config.json ({} when absent)."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a {type(config).__name__}; expected a JSON object")
    return config


def check_name(cls: type, recorded: Mapping[str, Any], source: str) -> None:
    """CheckpointError when ``source`` names another policy than ``cls``."""
    name, own = recorded.get(NAME_KEY), getattr(cls, "policy_name", None)
    if name is not None and name != own:
        raise CheckpointError(
            f"{source} holds a {name!r} policy, not {cls.__name__} ({own!r}); "
            "open it with minetrain.models.load_policy"
        )


def load_pretrained_dir(cls: type, directory: str | Path, **overrides: Any) -> Any:
    """Load a ``model.safetensors`` + ``config.json`` directory (ours or the reference's Hub layout)."""
    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(
            f"{directory} has no {WEIGHTS_NAME}; expected a directory written by save_pretrained"
        )
    config = read_config(directory)
    check_name(cls, config, str(directory / CONFIG_NAME))
    return build_and_load(cls, read_weights(weights), config, str(directory), overrides)


def read_lightning(path: Path, weights_only: bool = True) -> dict[str, Any]:
    """A Lightning (or plain torch) checkpoint's top-level dict, read on the CPU."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{path} holds objects a weights-only load refuses ({first}); "
            "pass weights_only=False if you trust this file"
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}; expected a checkpoint dict")
    return dict(ckpt)


def lightning_state_dict(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The policy's weights in a checkpoint dict: ``state_dict`` entries under ``mine_policy.`` with the
    prefix removed (a bare state dict is taken as is)."""
    state_dict = ckpt.get("state_dict", ckpt)
    if any(key.startswith(LIGHTNING_PREFIX) for key in state_dict):
        return {
            key.removeprefix(LIGHTNING_PREFIX): value
            for key, value in state_dict.items()
            if key.startswith(LIGHTNING_PREFIX)
        }
    return dict(state_dict)
