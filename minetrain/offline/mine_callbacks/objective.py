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
    transform batch entries; it sees the batch in the objective's ``layout``), then calls each
    objective with the policy outputs. The returned dict
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


_ACTION_KEYS = ("agent_action", "agent_prev_action")


def _map_actions(batch: Mapping[str, Any], fn: Any) -> dict[str, Any]:
    batch = dict(batch)
    for key in _ACTION_KEYS:
        if isinstance(batch.get(key), Mapping):
            batch[key] = {k: fn(v) for k, v in batch[key].items()}
    return batch


def reference_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A view of ``batch`` with the reference's agent actions: a trailing dim of 1."""
    return _map_actions(batch, lambda v: v[..., None])


def native_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`reference_batch`, for batches a reference-layout ``before_step`` returns."""
    return _map_actions(batch, lambda v: v[..., 0])


def reference_latents(latents: Mapping[str, Any]) -> dict[str, Any]:
    """A view of ``latents`` with the reference's action log-probabilities: (B,T,1,C)."""
    latents = dict(latents)
    if isinstance(latents.get("pi_logits"), Mapping):
        latents["pi_logits"] = {k: v[..., None, :] for k, v in latents["pi_logits"].items()}
    return latents
