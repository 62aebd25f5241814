"""The objective interface: each training objective is a callback returning its weighted loss."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ObjectiveCallback(ABC):
    """One term of the training loss.

    ``MineLightning`` calls ``before_step`` on every objective before the policy runs (to add or
    transform batch entries), then calls each objective with the policy outputs. The returned dict
    must hold ``"loss"`` (already weighted); the other entries are logged as metrics under the
    objective's ``name``. The losses of all objectives are summed.
    """

    name: str = "objective"

    def before_step(self, batch: dict[str, Any], batch_idx: int, step_name: str) -> dict[str, Any]:
        return batch

    @abstractmethod
    def __call__(
        self,
        batch: Mapping[str, Any],
        batch_idx: int,
        step_name: str,
        latents: Mapping[str, Any],
        mine_policy: nn.Module,
    ) -> dict[str, torch.Tensor]: ...
