"""The timm image backbone: built offline, optionally initialised from a local weights file."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from minetrain.errors import CheckpointError, ConfigError

# RGB plus the interaction mask.
IN_CHANS = 4


def build_backbone(name: str, weights: str | Path | None = None) -> tuple[nn.Module, tuple, tuple]:
    """Create ``name`` as a 4-channel feature extractor; returns (model, mean, std).

    Never touches the network: without ``weights`` the backbone is randomly initialised; with a
    local timm state-dict file (``.safetensors``/``.pth``/``.bin``) timm loads it and adapts the
    3-channel stem to 4 channels.
    """
    if not timm.is_model(name):
        hint = f"; use the bare name {name.rsplit('/', 1)[-1]!r}" if "/" in name else ""
        raise ConfigError(
            f"backbone {name!r} is not a timm model name (see timm.list_models()){hint}; "
            "weights come only from a local file (backbone_weights=)"
        )
    kwargs: dict = {"features_only": True, "in_chans": IN_CHANS}
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(
                f"backbone weights file {path} does not exist; pass a local timm state dict"
            )
        # 'file' with an empty source makes timm read this file instead of the hub.
        kwargs["pretrained_cfg_overlay"] = {"file": str(path), "source": ""}
    try:
        model = timm.create_model(name, pretrained=weights is not None, **kwargs)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"backbone weights {weights} do not fit timm model {name!r}: {first}") from exc
    if weights is not None:
        _check_covered(model, Path(weights), name)
    config = timm.data.resolve_model_data_config(model)
    return model, tuple(config["mean"]), tuple(config["std"])


def _check_covered(model: nn.Module, path: Path, name: str) -> None:
    """timm loads feature extractors leniently; refuse a file that leaves backbone weights unset."""
    provided = set(timm.models.load_state_dict(str(path)))
    missing = [
        key for key in model.state_dict() if key not in provided and not key.endswith("num_batches_tracked")
    ]
    if missing:
        raise CheckpointError(
            f"backbone weights {path} lack {len(missing)} weights of timm {name!r} (e.g. {missing[0]}); "
            "pass the timm state dict of that exact model"
        )
