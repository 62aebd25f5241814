"""The checkpoint the ``evaluate``, ``export`` and ``rollout-preview`` commands run, and the data
settings to run it on.

Loading is the library's (``minetrain.models.load_checkpoint``: any file training or the reference
library leaves behind, or a run's checkpoints directory). The data settings the policy was trained
with (frame size, window length, split) are read from the checkpoint's hyperparameters when it has
them, so evaluation sees the frames training saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minetrain.errors import CheckpointError
from minetrain.models import LoadedCheckpoint, load_checkpoint
from minetrain.models.loading import resolve_checkpoint

# Frames and windows of policies whose checkpoints do not record their data settings, beyond the
# seed's defaults every command starts from (VPT saw 128x128 frames, no segmentation).
POLICY_DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "vpt": {"frame_width": 128, "frame_height": 128, "win_len": 128, "enable_segment": False},
}


def open_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """``load_checkpoint(path)``, with advice a command-line user can follow for untrusted pickles."""
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        # The library's advice names a Python argument; give the way to use it from here instead.
        if "weights_only=False" not in str(exc):
            raise
        source = resolve_checkpoint(path)
        raise CheckpointError(
            f"{source} holds objects a weights-only load refuses; if you trust the file, convert it in "
            f"Python: load_policy({str(source)!r}, weights_only=False).save_pretrained(DIR) "
            "(from minetrain.models), then pass DIR"
        ) from None


def data_settings(
    loaded: LoadedCheckpoint, overrides: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """RawDataset arguments: ``overrides`` (non-None), else the checkpoint's ``data`` hyperparameters,
    else the policy's ``timesteps`` for ``win_len``, else ``defaults`` and the policy kind's own."""
    recorded = loaded.hyper_parameters.get("data")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    settings = {**defaults, **POLICY_DATA_DEFAULTS.get(loaded.policy_name, {})}
    if loaded.original.config.get("timesteps") is not None:
        settings["win_len"] = loaded.original.config["timesteps"]
    settings.update({key: recorded[key] for key in settings if recorded.get(key) is not None})
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings
