"""Opening VPT weights as published: OpenAI's ``.model`` (pickled constructor kwargs) + ``.weights``
(state dict) pairs, MineStudio's Lightning ``.ckpt`` files (``mine_policy.`` keys) and Hub-layout
directories, and minetrain's own ``save_pretrained`` directories. Everything is read from local disk;
no file runs code when read (``.model`` pickles go through the data-only unpickler). The class to build
is passed in (``VPTPolicy``, whose module holds ``load_vpt_policy``), so that this module does not import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import CheckpointError, ConfigError
from minetrain.models.checkpoint import LIGHTNING_PREFIX, build_and_load, read_weights
from minetrain.models.checkpoint import read_lightning as read_torch_checkpoint
from minetrain.models.vpt.formats import config_from_policy_kwargs


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The ``VPTPolicy`` arguments recorded in an OpenAI ``.model`` file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read VPT model file {path}: {exc.strerror or exc}") from None
    content = load_pickle(data, str(path), remedy="expected an OpenAI VPT .model file (pickled kwargs)")
    try:
        args = content["model"]["args"]
        policy_kwargs = args["net"]["args"]
    except (KeyError, TypeError):
        raise CheckpointError(
            f"{path} is not a VPT .model file: it has no ['model']['args']['net']['args'] policy kwargs"
        ) from None
    head = args.get("pi_head_opts") or {}
    return config_from_policy_kwargs(policy_kwargs, head if isinstance(head, Mapping) else {}, str(path))


def read_weights_file(path: str | Path, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """A state dict from an OpenAI ``.weights`` file or a Lightning ``.ckpt`` (``mine_policy.`` keys).

    ``weights_only=False`` also reads checkpoints whose other entries hold arbitrary objects (e.g.
    hyperparameters as OmegaConf containers); only for files you trust, as unpickling runs code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"VPT weights {path} do not exist")
    if path.suffix == ".safetensors":
        return read_weights(path)
    content = read_torch_checkpoint(path, weights_only)
    state_dict = content.get("state_dict", content)
    if any(str(key).startswith(LIGHTNING_PREFIX) for key in state_dict):
        state_dict = {
            key.removeprefix(LIGHTNING_PREFIX): value
            for key, value in state_dict.items()
            if key.startswith(LIGHTNING_PREFIX)
        }
    bad = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path} is not a state dict: {bad[0]!r} holds a {type(state_dict[bad[0]]).__name__}"
        )
    return dict(state_dict)


def build_policy(cls: type, kwargs: Mapping[str, Any], source: str) -> Any:
    """``cls(**kwargs)``; an argument it does not take is a ``ConfigError`` naming ``source``."""
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build {cls.__name__} for {source}: {exc}") from None


def load_vpt_files(
    cls: type,
    model_path: str | Path,
    weights_path: str | Path | None = None,
    *,
    weights_only: bool = True,
    **overrides: Any,
) -> Any:
    """A ``cls`` (``VPTPolicy``) from OpenAI's or MineStudio's files, or from a ``save_pretrained`` directory.

    ``model_path`` is an OpenAI ``.model`` file (the architecture) and ``weights_path`` its
    ``.weights`` file or a MineStudio Lightning ``.ckpt`` fine-tuned from it; without
    ``weights_path`` the policy is freshly initialised, as the reference's loader does. A directory
    ``model_path`` (minetrain's or MineStudio's Hub layout) holds both. ``overrides`` (e.g.
    ``nucleus_prob``, ``checkpoint_cnn``) win over the recorded arguments. Weights load strictly:
    missing or unknown keys are a ``CheckpointError`` naming them. ``weights_only``: see
    ``read_weights_file``.
    """
    model_path = Path(model_path)
    if model_path.is_dir():
        if weights_path is not None:
            raise CheckpointError(
                f"{model_path} is a directory with its own weights; pass weights_path only with a .model file"
            )
        return cls.from_pretrained(model_path, **overrides)
    if not model_path.is_file():
        raise CheckpointError(f"VPT model file {model_path} does not exist")
    if model_path.suffix in (".ckpt", ".weights", ".safetensors"):
        raise CheckpointError(
            f"{model_path} holds weights, not the architecture; pass the .model file as model_path and "
            f"{model_path.name} as weights_path"
        )
    architecture = read_model_file(model_path)
    if weights_path is None:
        return build_policy(cls, {**architecture, **overrides}, str(model_path))
    state_dict = read_weights_file(weights_path, weights_only)
    return build_and_load(
        cls,
        state_dict,
        architecture,
        str(weights_path),
        overrides,
        remedy="pass the .model file these weights were trained with",
    )
