"""Saving and loading RocketPolicy weights: our safetensors + JSON directories, and the reference
library's checkpoints (Lightning ``.ckpt`` with ``mine_policy.`` keys, or a Hub-style directory), both
ways.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from minetrain.errors import CheckpointError, ConfigError
from minetrain.models.heads import ValueHead
from minetrain.models.memory import N_BASIS

if TYPE_CHECKING:
    from minetrain.models.rocket import RocketPolicy

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
LIGHTNING_PREFIX = "mine_policy."
# The backbone the seed uses, assumed when a checkpoint does not record one.
DEFAULT_BACKBONE = "efficientnet_b0.ra_in1k"
# The architecture sizes both libraries record under the same names.
_ARCHITECTURE_KEYS = ("backbone", "hiddim", "num_heads", "num_layers", "timesteps", "mem_len")
# Constructor arguments a config file may carry (``action_space`` is the reference's, always null).
_CONFIG_KEYS = (*_ARCHITECTURE_KEYS, "value_head", "nucleus_prob", "pooling_dropout")
# The reference RocketPolicy's constructor arguments: its loaders pass the recorded config as keyword
# arguments, so a key outside this list makes them fail.
REFERENCE_CONFIG_KEYS = (*_ARCHITECTURE_KEYS, "action_space", "nucleus_prob")


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see a partial file.

    ``write`` creates the temp file itself, so it gets the umask's mode like any new file (mkstemp's
    would be 0600)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model: RocketPolicy, directory: str | Path) -> None:
    """Write the weights (safetensors) and the constructor config (JSON) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    # Serialised here and written by Python: safetensors' own file writer creates files 0600.
    payload = save(tensors, metadata={"format": "pt"})
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: Path(tmp).write_bytes(payload))
    text = json.dumps(model.config, indent=2, sort_keys=True) + "\n"
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))


def reference_config(model: RocketPolicy) -> dict[str, Any]:
    """The constructor arguments the reference's ``RocketPolicy`` needs to rebuild ``model``."""
    return {key: model.config.get(key) for key in REFERENCE_CONFIG_KEYS}


def reference_state_dict(model: RocketPolicy) -> dict[str, torch.Tensor]:
    """``model``'s weights with the value head the reference always builds and loads strictly.

    A policy trained without one gets a value head that predicts 0 (zero weights and bias) and an
    empty normaliser (zero statistics, as the reference's normaliser starts): behaviour cloning never
    reads it, and zeros keep the export the same bytes every time.
    """
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    if model.value_head is None:
        empty = ValueHead(model.config["hiddim"]).state_dict()
        tensors.update({f"value_head.{key}": torch.zeros_like(value) for key, value in empty.items()})
    return tensors


def save_reference_checkpoint(model: RocketPolicy, path: str | Path) -> None:
    """Write a ``.ckpt`` the reference's ``load_rocket_policy(path)`` loads with ``strict=True`` (atomically).

    The file holds only tensors, strings, numbers and None, so a weights-only ``torch.load`` reads it.
    """
    path = Path(path)
    ckpt = {
        "state_dict": {LIGHTNING_PREFIX + key: value for key, value in reference_state_dict(model).items()},
        "hyper_parameters": {"model": reference_config(model)},
    }
    _atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def save_reference_pretrained(model: RocketPolicy, directory: str | Path) -> None:
    """Write the reference's Hub layout (``model.safetensors`` + ``config.json`` of its constructor
    arguments) into ``directory``, which its ``RocketPolicy.from_pretrained`` loads strictly."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = save(reference_state_dict(model), metadata={"format": "pt"})
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: Path(tmp).write_bytes(payload))
    text = json.dumps(reference_config(model), indent=2, sort_keys=True) + "\n"
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))


def infer_config(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Recover the architecture sizes from the weights themselves."""
    try:
        hiddim = state_dict["interaction.weight"].shape[1]
        rel = state_dict["recurrent.blocks.0.r.orc_block.r_layer.weight"]
        mem_len = state_dict["recurrent.blocks.0.r.orc_block.b_nd"].shape[1]
    except KeyError as exc:
        raise CheckpointError(
            f"{source} is not a RocketPolicy checkpoint: it has no {exc.args[0]!r} weight"
        ) from None
    blocks = {key.split(".")[2] for key in state_dict if key.startswith("recurrent.blocks.")}
    return {
        "hiddim": int(hiddim),
        "num_heads": int(rel.shape[0]) // N_BASIS,
        "num_layers": len(blocks),
        "mem_len": int(mem_len),
        "value_head": any(key.startswith("value_head.") for key in state_dict),
    }


def _config_from_file(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    if config.get("action_space") is not None:
        raise CheckpointError(
            f"{source} uses a custom action_space; only the VPT buttons/camera space is supported"
        )
    return {key: config[key] for key in _CONFIG_KEYS if key in config}


def build_and_load(
    cls: type[RocketPolicy],
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    source: str,
    overrides: Mapping[str, Any],
) -> RocketPolicy:
    """Construct the policy from the recorded/inferred config and load the weights strictly."""
    kwargs = {"backbone": DEFAULT_BACKBONE, **infer_config(state_dict, source), **config, **overrides}
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build RocketPolicy for {source}: {exc}") from None
    load_strict(model, state_dict, source)
    return model


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` only if keys and shapes match exactly; otherwise say what differs."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{key} {tuple(state_dict[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    problems = [
        f"{len(items)} {label} (e.g. {items[0]})"
        for items, label in (
            (missing, "missing keys"),
            (unexpected, "unexpected keys"),
            (wrong, "shape mismatches"),
        )
        if items
    ]
    if problems:
        config = getattr(model, "config", {})
        raise CheckpointError(
            f"{source} does not fit RocketPolicy({', '.join(f'{k}={v!r}' for k, v in config.items())}): "
            + "; ".join(problems)
            + "; check the backbone name and sizes the checkpoint was trained with"
        )
    model.load_state_dict(state_dict, strict=True)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from None


def load_pretrained_dir(cls: type[RocketPolicy], directory: str | Path, **overrides: Any) -> RocketPolicy:
    """Load a ``model.safetensors`` + ``config.json`` directory (ours or the reference's Hub layout)."""
    directory = Path(directory)
    weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    if not weights.is_file():
        raise CheckpointError(
            f"{directory} has no {WEIGHTS_NAME}; expected a directory written by save_pretrained"
        )
    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = _config_from_file(json.loads(config_path.read_text()), str(config_path))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_path} is not valid JSON ({exc})") from None
    return build_and_load(cls, _read_weights(weights), config, str(directory), overrides)


def _read_lightning(path: Path, weights_only: bool) -> dict[str, Any]:
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


def load_reference_checkpoint(
    path: str | Path, *, weights_only: bool = True, **overrides: Any
) -> RocketPolicy:
    """Import reference-library RocketPolicy weights into a ``minetrain`` RocketPolicy.

    Accepts a Lightning ``.ckpt`` (weights under ``state_dict`` with a ``mine_policy.`` prefix; sizes
    from ``hyper_parameters['model']`` when present, else read off the weights), a Hub-style
    directory (``model.safetensors`` + ``config.json``) or a bare ``.safetensors`` file. The value
    head is kept when the checkpoint has one. ``overrides`` (e.g. ``backbone=...``) win over what
    the checkpoint records.
    """
    from minetrain.models.rocket import RocketPolicy

    path = Path(path)
    if path.is_dir():
        return load_pretrained_dir(RocketPolicy, path, **overrides)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return build_and_load(RocketPolicy, _read_weights(path), {}, str(path), overrides)
    ckpt = _read_lightning(path, weights_only)
    state_dict = ckpt.get("state_dict", ckpt)
    if any(key.startswith(LIGHTNING_PREFIX) for key in state_dict):
        state_dict = {
            key.removeprefix(LIGHTNING_PREFIX): value
            for key, value in state_dict.items()
            if key.startswith(LIGHTNING_PREFIX)
        }
    hyper = ckpt.get("hyper_parameters") or {}
    model_cfg = hyper.get("model") if isinstance(hyper, Mapping) else None
    config = _config_from_file(model_cfg, str(path)) if isinstance(model_cfg, Mapping) else {}
    return build_and_load(RocketPolicy, state_dict, config, str(path), overrides)
