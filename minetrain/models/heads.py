"""Output heads: categorical action heads (buttons 8641, camera 121) and the optional value head.

Names follow the reference checkpoints (``pi_head.buttons.linear_layer``, ``value_head.linear``,
``value_head.normalizer.running_mean`` ...) so their state dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minetrain.actions import agent_to_env
from minetrain.models.memory import fan_in_

N_BUTTONS = 8641
N_CAMERA = 121


class CategoricalHead(nn.Module):
    """Linear layer to log-probabilities over ``n`` classes (normalised, so ``logsumexp == 0``).

    ``temperature`` divides the logits before normalising (VPT's published models use 2).
    """

    def __init__(self, dim: int, n: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.linear_layer = nn.Linear(dim, n)
        self.temperature = temperature
        # Small initial logits: a fresh policy starts close to uniform.
        fan_in_(self.linear_layer, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear_layer(x)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return F.log_softmax(logits.float(), dim=-1)


class ActionHeads(nn.ModuleDict):
    """One categorical head per agent-action key."""

    def __init__(self, dim: int, temperature: float = 1.0) -> None:
        super().__init__(
            {
                "buttons": CategoricalHead(dim, N_BUTTONS, temperature),
                "camera": CategoricalHead(dim, N_CAMERA, temperature),
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(x) for name, head in self.items()}

    # MineStudio's pi_head interface, so objectives written for it run unchanged. Its layout: actions
    # (..., 1) and log-probabilities (..., 1, C); results (...), summed over the heads unless return_dict.
    def logprob(
        self,
        actions: Mapping[str, torch.Tensor],
        log_probs: Mapping[str, torch.Tensor],
        return_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Log-probability of ``actions`` under ``log_probs``."""
        per_head = {
            name: log_probs[name].gather(-1, actions[name].long()[..., None])[..., 0].sum(-1) for name in self
        }
        return per_head if return_dict else sum(per_head.values())

    def entropy(
        self, log_probs: Mapping[str, torch.Tensor], return_dict: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Entropy of each head's distribution."""
        per_head = {name: -(log_probs[name].exp() * log_probs[name]).sum(-1).sum(-1) for name in self}
        return per_head if return_dict else sum(per_head.values())

    def kl_divergence(
        self, log_q: Mapping[str, torch.Tensor], log_p: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """KL(q || p), summed over the heads, shape (..., 1) as the reference's."""
        return sum(
            (log_q[name].exp() * (log_q[name] - log_p[name])).sum(-1).sum(-1, keepdim=True) for name in self
        )


def sample(log_probs: torch.Tensor, deterministic: bool, top_p: float | None) -> torch.Tensor:
    """Draw one class per row of ``log_probs`` (..., n): argmax, nucleus (top-p) or plain sampling."""
    if deterministic:
        return log_probs.argmax(dim=-1)
    probs = log_probs.exp().flatten(0, -2)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the best class is always kept).
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return torch.multinomial(probs, 1).view(log_probs.shape[:-1])


def env_actions(
    pi_logits: Mapping[str, torch.Tensor], deterministic: bool, top_p: float | None, single: bool
) -> dict[str, Any]:
    """Env-format actions (numpy) sampled from one step's log-probabilities {key: (N, 1, C)}; without
    the leading N axis when ``single`` (one environment)."""
    agent = {key: sample(lp[:, 0], deterministic, top_p).cpu().numpy() for key, lp in pi_logits.items()}
    env = agent_to_env(agent)
    return {key: value[0] for key, value in env.items()} if single else env


class EwmaNormalizer(nn.Module):
    """Running (debiased, exponentially weighted) mean and variance of value targets."""

    def __init__(self, size: int, beta: float = 0.99999, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.beta = beta
        self.epsilon = epsilon
        # Parameters without gradient (not buffers): reference checkpoints and parameter counts have them.
        self.running_mean = nn.Parameter(torch.zeros(size), requires_grad=False)
        self.running_mean_sq = nn.Parameter(torch.zeros(size), requires_grad=False)
        self.debiasing_term = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        debias = self.debiasing_term.clamp(min=self.epsilon)
        mean = self.running_mean / debias
        var = (self.running_mean_sq / debias - mean**2).clamp(min=1e-2)
        return mean, var.sqrt()

    @torch.no_grad()
    def update(self, target: torch.Tensor) -> None:
        """Fold a (B, T, size) batch of targets into the running statistics."""
        target = target.float()
        for stat, value in (
            (self.running_mean, target.mean(dim=(0, 1))),
            (self.running_mean_sq, (target**2).mean(dim=(0, 1))),
            (self.debiasing_term, torch.ones_like(self.debiasing_term)),
        ):
            stat.mul_(self.beta).add_(value * (1.0 - self.beta))


class ValueHead(nn.Module):
    """Linear value prediction; targets are compared in normalised units (scaled MSE)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        fan_in_(self.linear, 1.0)
        self.normalizer = EwmaNormalizer(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE between the prediction and the normalised target (statistics updated in training)."""
        if self.training:
            self.normalizer.update(target)
        mean, std = self.normalizer.mean_std()
        return F.mse_loss(prediction.float(), (target.float() - mean) / std)

    def denormalize(self, prediction: torch.Tensor) -> torch.Tensor:
        """Map a prediction back to return units."""
        mean, std = self.normalizer.mean_std()
        return prediction * std + mean
