"""RocketPolicy in the files the reference library reads and writes: the constructor arguments of a
checkpoint that records few or none (read off the weights), and the exports its loaders take strictly
(a Lightning ``.ckpt`` with ``mine_policy.`` keys, or a Hub-style directory).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from minetrain.errors import CheckpointError
from minetrain.files import atomic_path, atomic_write_bytes, atomic_write_text
from minetrain.models.checkpoint import CONFIG_NAME, LIGHTNING_PREFIX, WEIGHTS_NAME
from minetrain.models.heads import ValueHead
from minetrain.models.memory import N_BASIS

# The backbone the seed uses, assumed when a checkpoint does not record one.
DEFAULT_BACKBONE = "efficientnet_b0.ra_in1k"
# The architecture sizes both libraries record under the same names.
_ARCHITECTURE_KEYS = ("backbone", "hiddim", "num_heads", "num_layers", "timesteps", "mem_len")
# Constructor arguments a config file may carry (``action_space`` is the reference's, always null).
_CONFIG_KEYS = (*_ARCHITECTURE_KEYS, "value_head", "nucleus_prob", "pooling_dropout")
# The reference RocketPolicy's constructor arguments: its loaders pass the recorded config as keyword
# arguments, so a key outside this list makes them fail.
REFERENCE_CONFIG_KEYS = (*_ARCHITECTURE_KEYS, "action_space", "nucleus_prob")


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


def checkpoint_kwargs(
    state_dict: Mapping[str, torch.Tensor], recorded: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """RocketPolicy's arguments for a checkpoint: what it recorded (ours or the reference's names), the
    sizes its weights show, and the seed's backbone when it names none."""
    if recorded.get("action_space") is not None:
        raise CheckpointError(
            f"{source} uses a custom action_space; only the VPT buttons/camera space is supported"
        )
    config = {key: recorded[key] for key in _CONFIG_KEYS if key in recorded}
    return {"backbone": DEFAULT_BACKBONE, **infer_config(state_dict, source), **config}


def reference_config(model: Any) -> dict[str, Any]:
    """The constructor arguments the reference's ``RocketPolicy`` needs to rebuild ``model``."""
    return {key: model.config.get(key) for key in REFERENCE_CONFIG_KEYS}


def reference_state_dict(model: Any) -> dict[str, torch.Tensor]:
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


def save_reference_checkpoint(model: Any, path: str | Path) -> None:
    """Write a ``.ckpt`` the reference's ``load_rocket_policy(path)`` loads with ``strict=True`` (atomically).

    The file holds only tensors, strings, numbers and None, so a weights-only ``torch.load`` reads it.
    """
    path = Path(path)
    ckpt = {
        "state_dict": {LIGHTNING_PREFIX + key: value for key, value in reference_state_dict(model).items()},
        "hyper_parameters": {"model": reference_config(model)},
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def save_reference_pretrained(model: Any, directory: str | Path) -> None:
    """Write the reference's Hub layout (``model.safetensors`` + ``config.json`` of its constructor
    arguments) into ``directory``, which its ``RocketPolicy.from_pretrained`` loads strictly."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = save(reference_state_dict(model), metadata={"format": "pt"})
    atomic_write_bytes(directory / WEIGHTS_NAME, payload)
    text = json.dumps(reference_config(model), indent=2, sort_keys=True) + "\n"
    atomic_write_text(directory / CONFIG_NAME, text)
