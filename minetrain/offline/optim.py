"""AdamW parameter groups and learning-rate schedules for MineLightning.

By default every parameter is decayed, as the reference does. With ``matrices_only`` weight decay
applies only to the weight matrices of linear, convolution and attention projection layers: biases,
normalisation scales, embeddings (e.g. the interaction embedding) and learned relative-position
tables are left undecayed, since shrinking them towards zero regularises nothing useful and hurts
the conditioning and the normalisation statistics.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from minetrain.errors import ConfigError

SCHEDULES = ("constant", "cosine")

# Packed projection matrices of nn.MultiheadAttention (not held in nn.Linear modules).
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def check_optim_settings(
    learning_rate: float, weight_decay: float, warmup_steps: int, lr_schedule: str, min_lr_ratio: float
) -> None:
    """ConfigError naming MineLightning's optimiser settings that are out of range."""
    if (
        not learning_rate > 0
        or not weight_decay >= 0
        or not isinstance(warmup_steps, int)
        or warmup_steps < 0
    ):
        raise ConfigError(
            f"MineLightning learning_rate={learning_rate!r}, weight_decay={weight_decay!r}, "
            f"warmup_steps={warmup_steps!r}; expected lr > 0, weight_decay >= 0, integer warmup >= 0"
        )
    if lr_schedule not in SCHEDULES:
        raise ConfigError(
            f"MineLightning lr_schedule={lr_schedule!r}; expected one of {', '.join(SCHEDULES)}"
        )
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"MineLightning min_lr_ratio={min_lr_ratio!r}; expected a value in [0, 1]")


def _is_decayed(module: nn.Module, name: str) -> bool:
    if isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
        return name == "weight"
    return isinstance(module, nn.MultiheadAttention) and name in _ATTENTION_WEIGHTS


def param_groups(model: nn.Module, weight_decay: float, matrices_only: bool = False) -> list[dict]:
    """AdamW groups: all trainable parameters decayed, or with ``matrices_only`` two groups, the
    decayed weight matrices and everything else (decay 0)."""
    if not matrices_only:
        params = [param for param in model.parameters() if param.requires_grad]
        return [{"params": params, "weight_decay": weight_decay, "name": "decay"}]
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (decay if _is_decayed(module, name) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def lr_factor(step: int, *, warmup_steps: int, schedule: str, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps.

    Linear warmup ``(step + 1) / warmup_steps`` (as the reference), then either constant or a cosine
    decay from 1 to ``min_ratio`` reached at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    schedule: str,
    total_steps: float,
    min_ratio: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` over :func:`lr_factor` (a partial, so its state pickles cleanly)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"lr_schedule={schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if schedule == "cosine" and (total_steps is None or total_steps <= 0 or math.isinf(total_steps)):
        raise ConfigError(
            "lr_schedule='cosine' needs a finite number of training steps; set Trainer(max_steps=...) "
            "or max_epochs"
        )
    total = int(total_steps) if schedule == "cosine" else 0
    factor = partial(
        lr_factor, warmup_steps=warmup_steps, schedule=schedule, total_steps=total, min_ratio=min_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
