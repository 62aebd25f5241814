"""Finding and loading the policy the ``evaluate``, ``export`` and ``rollout-preview`` commands run.

A user may point at any of the files training or the reference library leaves behind: a full
Lightning checkpoint (``checkpoints/ckpt-*.ckpt``, which carries the EMA weights under
``ema_state_dict``), a weights-only file (``weights/weight-*.ckpt``, with its ``-EMA`` sibling), a
``from_pretrained`` directory, or the directory of a run's checkpoints (the newest file is taken).
The data settings the policy was trained with (frame size, window length, split) are read from the
checkpoint's hyperparameters when it has them, so evaluation sees the frames training saw.
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
from minetrain.models import RocketPolicy, load_reference_checkpoint
from minetrain.models.checkpoint import CONFIG_NAME, LIGHTNING_PREFIX, WEIGHTS_NAME, load_strict
from minetrain.offline.lightning_callbacks.ema import EMA_STATE_KEY
from minetrain.offline.lightning_callbacks.smart_checkpoint import EMA_SUFFIX, ema_path, full_checkpoints

CKPT_SUFFIX = ".ckpt"
# The EMA shadow copy wraps the whole LightningModule under this attribute.
_AVERAGED_PREFIX = "module."


@dataclass
class LoadedCheckpoint:
    """The policy (``original``), its EMA weights when the checkpoint has them, and what training recorded."""

    source: Path
    original: RocketPolicy
    ema: RocketPolicy | None = None
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    def weights(self) -> dict[str, RocketPolicy]:
        """``{"original": ..., "ema": ...}`` (EMA only when present)."""
        named = {"original": self.original}
        if self.ema is not None:
            named["ema"] = self.ema
        return named


def _newest_checkpoint(directory: Path) -> Path | None:
    found = full_checkpoints(directory.glob(f"*{CKPT_SUFFIX}"))
    return max(found, key=lambda p: (p.stat().st_mtime, p.name), default=None)


# How torch's legacy (non-zip) format begins: its magic number pickled with protocol 2, without STOP.
_LEGACY_TORCH_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]


def _check_checkpoint_file(path: Path) -> None:
    """CheckpointError unless ``path`` is a torch checkpoint (zip or legacy) or a safetensors file.

    Otherwise torch's loader fails on e.g. a PNG with advice about ``weights_only`` that the
    command line has no option for.
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


def _read_checkpoint_dict(path: Path) -> Mapping[str, Any]:
    """The checkpoint's top-level dict; memory-mapped when the file allows, as the loader read it already."""
    if path.suffix == ".safetensors":
        return {}
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch files cannot be memory-mapped
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt if isinstance(ckpt, Mapping) else {}


def _ema_from_state(original: RocketPolicy, state: Mapping[str, torch.Tensor], source: str) -> RocketPolicy:
    """A copy of ``original`` with the weights of an ``ema_state_dict`` (AveragedModel layout)."""
    prefix = _AVERAGED_PREFIX + LIGHTNING_PREFIX
    weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    ema = copy.deepcopy(original)
    load_strict(ema, weights, f"{source} ({EMA_STATE_KEY})")
    return ema.eval()


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load the policy at ``path`` (see ``resolve_checkpoint``) and its EMA weights if it has any.

    EMA weights come from a full checkpoint's ``ema_state_dict`` or, failing that, from the
    ``<name>-EMA.ckpt`` file written beside it. A file that is itself an ``-EMA`` file is loaded as
    plain weights.
    """
    source = resolve_checkpoint(path)
    try:
        original = load_reference_checkpoint(source).eval()
    except CheckpointError as exc:
        # The library's advice names a Python argument; give the way to use it from here instead.
        if "weights_only=False" not in str(exc):
            raise
        raise CheckpointError(
            f"{source} holds objects a weights-only load refuses; if you trust the file, convert it in "
            f"Python: load_reference_checkpoint({str(source)!r}, weights_only=False).save_pretrained(DIR) "
            "(from minetrain.models), then pass DIR"
        ) from None
    loaded = LoadedCheckpoint(source=source, original=original)
    if source.is_dir():
        config = source / CONFIG_NAME
        loaded.hyper_parameters = {"model": dict(original.config)} if config.is_file() else {}
        return loaded
    ckpt = _read_checkpoint_dict(source)
    hyper = ckpt.get("hyper_parameters")
    loaded.hyper_parameters = dict(hyper) if isinstance(hyper, Mapping) else {}
    ema_state = ckpt.get(EMA_STATE_KEY)
    sibling = Path(ema_path(str(source), CKPT_SUFFIX))
    if isinstance(ema_state, Mapping):
        loaded.ema = _ema_from_state(original, ema_state, str(source))
    elif not source.stem.endswith(EMA_SUFFIX) and sibling.is_file():
        ema = load_reference_checkpoint(sibling).eval()
        if ema.config != original.config:
            raise CheckpointError(
                f"{sibling} is not the EMA of {source}: their model configs differ; remove the stray file"
            )
        loaded.ema = ema
    return loaded


def data_settings(
    loaded: LoadedCheckpoint, overrides: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """RawDataset arguments: ``overrides`` (non-None), else the checkpoint's ``data`` hyperparameters,
    else ``defaults``; ``win_len`` falls back to the policy's ``timesteps``."""
    recorded = loaded.hyper_parameters.get("data")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    settings = {"win_len": loaded.original.config["timesteps"], **defaults}
    settings.update({key: recorded[key] for key in settings if recorded.get(key) is not None})
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings
