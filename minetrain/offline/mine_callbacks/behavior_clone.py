"""Behaviour cloning: negative log-likelihood of the recorded agent actions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minetrain.actions import CAMERA_NULL_CLASS
from minetrain.errors import ConfigError
from minetrain.offline.mine_callbacks.objective import ObjectiveCallback

# "sum": each window's frame NLLs summed, averaged over the windows (the reference's scale, which the
# seed's weight 0.01 and gradient clipping were tuned for); "mean": the mean over real frames.
REDUCTIONS = ("sum", "mean")


def _nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,T) negative log-likelihood of ``target`` under (B,T,C) logits or log-probabilities."""
    return F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none").view(
        target.shape
    )


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    log_probs = log_probs.float()
    return -(log_probs.exp() * log_probs).sum(-1)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return numerator / denominator.clamp(min=1.0)


def bc_terms(
    pi_logits: Mapping[str, torch.Tensor],
    agent_action: Mapping[str, torch.Tensor],
    mask: torch.Tensor | None,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """The BC loss of SPEC.md and its diagnostics.

    Per frame: ``-log p(buttons) - log p(camera) * [camera class != null]``, padding masked. The loss
    is the mean over real frames (``reduction="mean"``) or, as the reference, each window's sum
    averaged over the windows (``"sum"``). ``buttons_nll``, ``camera_nll`` and the accuracies are
    means over the frames where they apply (camera: frames whose recorded camera moved);
    camera-move precision is the share of frames predicted to move the camera that really did.
    ``button_loss``, ``camera_loss`` and ``entropy`` are the reference's metrics under its
    definitions (window sums averaged over windows), whatever the reduction.
    """
    buttons, camera = agent_action["buttons"].long(), agent_action["camera"].long()
    if buttons.ndim == 3:
        buttons, camera = buttons[..., 0], camera[..., 0]
    real = torch.ones_like(buttons, dtype=torch.float32) if mask is None else mask.float()
    moved = (camera != CAMERA_NULL_CLASS).float() * real
    nll_buttons = _nll(pi_logits["buttons"], buttons) * real
    nll_camera = _nll(pi_logits["camera"], camera) * moved
    n_real, n_moved = real.sum(), moved.sum()
    if reduction == "sum":
        loss = (nll_buttons + nll_camera).sum(-1).mean()
    else:
        loss = _ratio((nll_buttons + nll_camera).sum(), n_real)
    with torch.no_grad():
        pred_buttons = pi_logits["buttons"].argmax(-1)
        pred_camera = pi_logits["camera"].argmax(-1)
        pred_moved = (pred_camera != CAMERA_NULL_CLASS).float() * real
        entropy = _entropy(pi_logits["buttons"]) * real + _entropy(pi_logits["camera"]) * moved
        metrics = {
            "buttons_nll": _ratio(nll_buttons.sum(), n_real),
            "camera_nll": _ratio(nll_camera.sum(), n_moved),
            "buttons_acc": _ratio(((pred_buttons == buttons).float() * real).sum(), n_real),
            "camera_acc": _ratio(((pred_camera == camera).float() * moved).sum(), n_moved),
            "camera_move_precision": _ratio((pred_moved * moved).sum(), pred_moved.sum()),
            "button_loss": nll_buttons.sum(-1).mean(),
            "camera_loss": nll_camera.sum(-1).mean(),
            "entropy": entropy.sum(-1).mean(),
        }
    return {"loss": loss, **metrics}


class BehaviorCloneCallback(ObjectiveCallback):
    """Behaviour-cloning objective: ``weight`` times the masked NLL of the recorded agent action.

    ``reduction="sum"`` (default) scales the loss as the reference does (sum over each window's
    frames, mean over windows); ``"mean"`` averages over real frames, so the loss and the meaning of
    ``weight`` do not depend on the window length or on padding.
    """

    name = "bc"
    layout = "native"

    def __init__(self, weight: float = 1.0, reduction: str = "sum") -> None:
        if not weight >= 0:
            raise ConfigError(f"BehaviorCloneCallback weight={weight!r}; expected a number >= 0")
        if reduction not in REDUCTIONS:
            raise ConfigError(
                f"BehaviorCloneCallback reduction={reduction!r}; expected one of {', '.join(REDUCTIONS)}"
            )
        self.weight = float(weight)
        self.reduction = reduction

    def __call__(
        self,
        batch: Mapping[str, Any],
        batch_idx: int,
        step_name: str,
        latents: Mapping[str, Any],
        mine_policy: nn.Module,
    ) -> dict[str, torch.Tensor]:
        if "agent_action" not in batch:
            raise ConfigError(
                f"behaviour cloning needs batch['agent_action'] (batch keys: {sorted(batch)}); "
                "load the dataset with its action modality"
            )
        terms = bc_terms(latents["pi_logits"], batch["agent_action"], batch.get("mask"), self.reduction)
        terms["loss"] = terms["loss"] * self.weight
        # Filled on the device: a tensor copied from the host would wait for the device.
        terms["bc_weight"] = torch.full((), self.weight, device=terms["loss"].device)
        return terms
