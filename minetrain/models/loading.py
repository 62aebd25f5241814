"""Opening any checkpoint minetrain or the reference library wrote, as the policy it holds.

A path may be a full Lightning checkpoint (``checkpoints/ckpt-*.ckpt``, which carries the EMA weights
under ``ema_state_dict``), a weights-only file (``weights/weight-*.ckpt``, with its ``-EMA`` sibling),
the reference's ``.ckpt`` exports, a bare ``.safetensors`` file, a ``from_pretrained`` directory (ours
or the reference's Hub layout), or the directory of a run's checkpoints (its newest full checkpoint).

Which policy a file holds is what it records (``"name"`` in config.json, the policy MineLightning or
the config's ``model.name`` recorded in a checkpoint's hyperparameters); files that record none
(older minetrain, the reference's) hold a VPT policy when they look like the reference's VPT (its
``policy_kwargs`` config, ``net.`` weights) and a RocketPolicy otherwise.
"""

from __future__ import annotations

import copy
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from minetrain.errors import CheckpointError
from minetrain.models.checkpoint import (
    CKPT_SUFFIX,
    EMA_STATE_KEY,
    EMA_SUFFIX,
    LIGHTNING_PREFIX,
    NAME_KEY,
    WEIGHTS_NAME,
    build_and_load,
    check_name,
    ema_path,
    full_checkpoints,
    lightning_state_dict,
    load_strict,
    read_config,
    read_lightning,
    read_weights,
)
from minetrain.models.policy import Policy
from minetrain.models.registry import DEFAULT_POLICY, policy_class

# Where MineLightning records its policy in a checkpoint's hyperparameters.
POLICY_RECORD = ("mine_lightning", "policy")
# The EMA shadow copy wraps the whole LightningModule under this attribute.
_AVERAGED_PREFIX = "module."
# How torch's legacy (non-zip) format begins: its magic number pickled with protocol 2, without STOP.
_LEGACY_TORCH_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]


@dataclass
class LoadedCheckpoint:
    """The policy (``original``), its EMA weights when the checkpoint has them, and what training recorded."""

    source: Path
    original: Policy
    ema: Policy | None = None
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def policy_name(self) -> str:
        """The registry name of the policy the checkpoint holds (``rocket``, ``vpt``, ...)."""
        return self.original.policy_name

    def weights(self) -> dict[str, Policy]:
        """``{"original": ..., "ema": ...}`` (EMA only when present)."""
        named = {"original": self.original}
        if self.ema is not None:
            named["ema"] = self.ema
        return named


def _newest_checkpoint(directory: Path) -> Path | None:
    found = full_checkpoints(directory.glob(f"*{CKPT_SUFFIX}"))
    return max(found, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def _check_checkpoint_file(path: Path) -> None:
    """CheckpointError unless ``path`` is a torch checkpoint (zip or legacy) or a safetensors file.

    Otherwise torch's loader fails on e.g. a PNG with advice about ``weights_only`` that does not help.
    """
    if path.suffix == ".safetensors" or zipfile.is_zipfile(path):
        return
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_TORCH_HEAD))
    if head != _LEGACY_TORCH_HEAD:
        raise CheckpointError(
            f"{path} is not a checkpoint (neither a torch .ckpt nor safetensors); give a .ckpt file, a "
            "from_pretrained directory or a run's checkpoints directory"
        )


def resolve_checkpoint(path: str | Path) -> Path:
    """The file or ``from_pretrained`` directory ``path`` designates (newest ``.ckpt`` of a directory)."""
    path = Path(path)
    if path.is_file():
        _check_checkpoint_file(path)
        return path
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} does not exist; give a .ckpt file, a from_pretrained directory or a "
            "run's checkpoints directory"
        )
    if (path / WEIGHTS_NAME).is_file():
        return path
    for directory in (path, path / "checkpoints", path / "weights"):
        newest = _newest_checkpoint(directory) if directory.is_dir() else None
        if newest is not None:
            return newest
    raise CheckpointError(
        f"{path} holds no *{CKPT_SUFFIX} file and no {WEIGHTS_NAME}; point at a checkpoint file or a "
        "run's checkpoints directory"
    )


def _looks_like_reference_vpt(config: Mapping[str, Any], state_dict: Mapping[str, Any]) -> bool:
    return "policy_kwargs" in config or any(key.startswith("net.") for key in state_dict)


def recorded_policy(hyper_parameters: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The policy name and constructor config a Lightning checkpoint's hyperparameters record (each None
    when absent): MineLightning's record first, else the config's ``model`` section."""
    record: Any = hyper_parameters
    for key in POLICY_RECORD:
        record = record.get(key) if isinstance(record, Mapping) else None
    if isinstance(record, Mapping) and isinstance(record.get("config"), Mapping):
        return record.get(NAME_KEY), dict(record["config"])
    model = hyper_parameters.get("model")
    if isinstance(model, Mapping):
        return model.get(NAME_KEY), dict(model)
    return None, None


def _open(path: Path, weights_only: bool, overrides: Mapping[str, Any], expected: str | None) -> Any:
    """The policy in the file or directory ``path``; ``expected`` (a registry name) refuses others."""
    if path.is_dir():
        config = read_config(path)
        name = config.get(NAME_KEY) or ("vpt" if _looks_like_reference_vpt(config, {}) else DEFAULT_POLICY)
        if expected is not None:
            check_name(policy_class(expected), {NAME_KEY: name}, str(path))
        return policy_class(name).from_pretrained(path, **overrides)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        state_dict, name, config = read_weights(path), None, {}
    else:
        ckpt = read_lightning(path, weights_only)
        state_dict = lightning_state_dict(ckpt)
        hyper = ckpt.get("hyper_parameters")
        name, config = recorded_policy(hyper) if isinstance(hyper, Mapping) else (None, None)
        config = config or {}
    if expected is not None:
        check_name(policy_class(expected), {NAME_KEY: name}, str(path))
        name = expected
    if name is None:
        name = "vpt" if _looks_like_reference_vpt(config, state_dict) else DEFAULT_POLICY
    return build_and_load(policy_class(name), state_dict, config, str(path), overrides)


def load_policy(path: str | Path, *, weights_only: bool = True, **overrides: Any) -> Policy:
    """The policy any minetrain or reference checkpoint at ``path`` holds (see the module docstring); its
    ``policy_name`` says which. ``overrides`` (constructor arguments) win over what the checkpoint
    records. ``weights_only=False`` lets torch unpickle arbitrary objects: only for files you trust."""
    return _open(resolve_checkpoint(path), weights_only, overrides, None)


def load_reference_checkpoint(path: str | Path, *, weights_only: bool = True, **overrides: Any) -> Any:
    """Import RocketPolicy weights the reference library (or minetrain) wrote into a ``RocketPolicy``.

    Accepts a Lightning ``.ckpt`` (weights under ``state_dict`` with a ``mine_policy.`` prefix; sizes
    from ``hyper_parameters['model']`` when present, else read off the weights), a Hub-style
    directory (``model.safetensors`` + ``config.json``) or a bare ``.safetensors`` file. The value
    head is kept when the checkpoint has one. ``overrides`` (e.g. ``backbone=...``) win over what
    the checkpoint records. A file that records another policy is refused.
    """
    return _open(Path(path), weights_only, overrides, "rocket")


def read_checkpoint_dict(path: Path) -> Mapping[str, Any]:
    """The checkpoint's top-level dict; memory-mapped when the file allows, as the loader read it already."""
    if path.suffix == ".safetensors":
        return {}
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch files cannot be memory-mapped
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt if isinstance(ckpt, Mapping) else {}


def _ema_from_state(original: Policy, state: Mapping[str, torch.Tensor], source: str) -> Policy:
    """A copy of ``original`` with the weights of an ``ema_state_dict`` (AveragedModel layout)."""
    prefix = _AVERAGED_PREFIX + LIGHTNING_PREFIX
    weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    ema = copy.deepcopy(original)
    load_strict(ema, weights, f"{source} ({EMA_STATE_KEY})")
    return ema.eval()


def load_checkpoint(path: str | Path, *, weights_only: bool = True) -> LoadedCheckpoint:
    """The policy at ``path`` (see ``resolve_checkpoint``) in eval mode, its EMA weights if it has any,
    and its hyperparameters.

    EMA weights come from a full checkpoint's ``ema_state_dict`` or, failing that, from the
    ``<name>-EMA.ckpt`` file written beside it. A file that is itself an ``-EMA`` file is loaded as
    plain weights.
    """
    source = resolve_checkpoint(path)
    original = _open(source, weights_only, {}, None).eval()
    loaded = LoadedCheckpoint(source=source, original=original)
    if source.is_dir():
        config = read_config(source)
        loaded.hyper_parameters = {"model": dict(original.config)} if config else {}
        return loaded
    ckpt = read_checkpoint_dict(source)
    hyper = ckpt.get("hyper_parameters")
    loaded.hyper_parameters = dict(hyper) if isinstance(hyper, Mapping) else {}
    ema_state = ckpt.get(EMA_STATE_KEY)
    sibling = Path(ema_path(str(source), CKPT_SUFFIX))
    if isinstance(ema_state, Mapping):
        loaded.ema = _ema_from_state(original, ema_state, str(source))
    elif not source.stem.endswith(EMA_SUFFIX) and sibling.is_file():
        ema = _open(sibling, weights_only, {}, original.policy_name).eval()
        if ema.config != original.config:
            raise CheckpointError(
                f"{sibling} is not the EMA of {source}: their model configs differ; remove the stray file"
            )
        loaded.ema = ema
    return loaded
