"""The timm image backbone: built offline, optionally initialised from a local weights file."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from minetrain.errors import CheckpointError, ConfigError
from minetrain.models.fused import fuse_batchnorm_silu

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
    fuse_batchnorm_silu(model)
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


def checkpoint_stages(model: nn.Module, name: str) -> None:
    """Run every stage of ``model.blocks`` under activation checkpointing while training.

    timm's own ``set_grad_checkpointing`` would recompute BatchNorm layers in training mode and
    so move their running statistics twice per step; here the recomputation leaves them as they
    are. The stages keep their parameter names (checkpoints load unchanged).
    """
    stages = getattr(model, "blocks", None)
    if not isinstance(stages, nn.Sequential):
        raise ConfigError(
            f"checkpoint_backbone is supported for backbones with stages in '.blocks' (EfficientNet, "
            f"MobileNet families), not {name!r}; set checkpoint_backbone=False"
        )
    for stage in stages:
        stage.forward = functools.partial(_checkpointed_forward, stage, type(stage).forward)


def _checkpointed_forward(stage: nn.Module, forward: Callable, x: torch.Tensor) -> torch.Tensor:
    if not (stage.training and torch.is_grad_enabled()):
        return forward(stage, x)
    return checkpoint(
        forward,
        stage,
        x,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _batchnorm_stats_frozen(stage)),
    )


@contextlib.contextmanager
def _batchnorm_stats_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics left as they are while the stage's forward is recomputed."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
