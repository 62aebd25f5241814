"""The objective interface: each training objective is a callback returning its weighted loss."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

LAYOUTS = ("reference", "native")


class ObjectiveCallback(ABC):
    """One term of the training loss.

    ``MineLightning`` calls ``before_step`` on every objective before the policy runs (to add or
    transform batch entries), then calls each objective with the policy outputs. The returned dict
    must hold ``"loss"`` (already weighted); every entry is logged as ``<stage>/<key>`` summed over
    the objectives (the reference's names) and as ``<stage>/<name>/<key>``. The losses of all
    objectives are summed.

    ``layout`` is how the objective sees the agent action and its log-probabilities.
    ``"reference"`` (default, so objectives written for MineStudio run unchanged): as MineStudio's
    objectives see them, ``batch["agent_action"][k]`` (B,T,1) and ``latents["pi_logits"][k]``
    (B,T,1,C), for ``mine_policy.pi_head.logprob`` / ``.entropy``. ``"native"``: minetrain's (B,T)
    and (B,T,C).
    """

    name: str = "objective"
    layout: str = "reference"

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


def reference_layout(batch: Mapping[str, Any], latents: Mapping[str, Any]) -> tuple[dict, dict]:
    """Views of ``batch`` and ``latents`` in the reference's layout (a trailing action dim of 1)."""
    batch = dict(batch)
    for key in ("agent_action", "agent_prev_action"):
        if isinstance(batch.get(key), Mapping):
            batch[key] = {k: v[..., None] for k, v in batch[key].items()}
    latents = dict(latents)
    if isinstance(latents.get("pi_logits"), Mapping):
        latents["pi_logits"] = {k: v[..., None, :] for k, v in latents["pi_logits"].items()}
    return batch, latents
