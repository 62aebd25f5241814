"""What minetrain needs of a policy: the one interface training, objectives, evaluation, export and
rollout-preview call, so that any policy (ROCKET-1, VPT, ...) plugs into the same stack.

A policy is a ``torch.nn.Module`` that also has what ``Policy`` lists. ``policy_name`` is its name in
the registry (``minetrain.models.registry``), written into every checkpoint so that ``load_policy``
knows what to build; ``config`` holds its constructor arguments (JSON values), enough to rebuild it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch


class ActionHead(Protocol):
    """The action head's interface MineStudio's objectives call (``minetrain.models.heads.ActionHeads``):
    actions (..., 1) and log-probabilities (..., 1, C)."""

    def logprob(
        self,
        actions: Mapping[str, torch.Tensor],
        log_probs: Mapping[str, torch.Tensor],
        return_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]: ...

    def entropy(
        self, log_probs: Mapping[str, torch.Tensor], return_dict: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]: ...

    def kl_divergence(
        self, log_q: Mapping[str, torch.Tensor], log_p: Mapping[str, torch.Tensor]
    ) -> torch.Tensor: ...


@runtime_checkable
class Policy(Protocol):
    """A trainable Minecraft policy (besides being an ``nn.Module``).

    - ``forward(batch, memory)`` takes the loader's batch (``image`` (B,T,H,W,3) uint8, ``first``
      (B,T) bool where memory resets, plus whatever conditioning the policy reads) and returns
      ``outputs`` with ``"pi_logits"`` ``{"buttons": (B,T,8641), "camera": (B,T,121)}`` log-probabilities
      (and ``"vpred"`` (B,T,1) when it has a value head) and the new memory: a list of batch-first
      tensors, detached, so ``MineLightning`` can carry it per batch slot.
    - ``initial_state(batch_size)``: the empty memory.
    - ``get_action(obs, memory, deterministic)``: one step per environment, env-format actions.
    - ``save_pretrained(dir)`` / ``from_pretrained(dir, **overrides)``: ``model.safetensors`` +
      ``config.json`` (with ``"name": policy_name``).

    A class may also define ``checkpoint_kwargs(state_dict, recorded, source) -> dict`` (a static or
    class method) to turn what a checkpoint recorded (its config, possibly partial or in another
    library's terms) plus its weights into constructor arguments; without it the recorded config is
    passed as is.

    A class may also define a classmethod ``from_config(**model_kwargs) -> Policy``: what a config's
    ``model.*`` build (``registry.build_policy``), e.g. VPT's ``model_path`` / ``weights_path`` naming
    published files to fine-tune. Its named parameters are config keys besides the constructor's
    (``minetrain pretrain`` checks both). The built policy's ``config`` must still be constructor
    arguments only (the architecture, no file paths): it is what checkpoints record, so resuming,
    evaluating and exporting never need those files again.
    """

    policy_name: ClassVar[str]
    config: dict[str, Any]
    pi_head: ActionHead

    def __call__(
        self, batch: Mapping[str, Any], memory: Sequence[torch.Tensor] | None = None
    ) -> tuple[dict[str, Any], list[torch.Tensor]]: ...

    def initial_state(self, batch_size: int) -> list[torch.Tensor]: ...

    def get_action(
        self,
        obs: Mapping[str, Any],
        memory: Sequence[torch.Tensor] | None = None,
        deterministic: bool = False,
    ) -> tuple[dict[str, Any], list[torch.Tensor]]: ...

    def save_pretrained(self, directory: str | Path) -> None: ...

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> Policy: ...
