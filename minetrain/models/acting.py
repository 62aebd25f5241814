"""Acting in an environment: one step of a policy as a one-step window, the same for every policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from minetrain.models.heads import env_actions
from minetrain.models.inputs import step_batch


class StepActing:
    """``get_action`` for a policy whose ``forward(batch, memory)`` reads windows: a step is a window
    of one frame, so streaming and training run the same code. ``step_inputs`` adds what a policy
    reads besides ``image`` and ``first`` (ROCKET-1's segment)."""

    @torch.inference_mode()
    def get_action(
        self,
        obs: Mapping[str, Any],
        memory: Sequence[torch.Tensor] | None = None,
        deterministic: bool = False,
    ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """One step for one environment (image (H,W,3)) or many (image (N,H,W,3)).

        ``obs`` holds ``image``, optionally ``first`` (True at an episode start) and what
        ``step_inputs`` reads, without a time axis. Returns env-format actions (numpy arrays, leading
        axis N unless a single environment was given) and the new memory.
        """
        batch, single = step_batch(obs)
        batch.update(self.step_inputs(obs, single))
        outputs, memory = self(batch, memory)
        return env_actions(outputs["pi_logits"], deterministic, self.config["nucleus_prob"], single), memory

    def step_inputs(self, obs: Mapping[str, Any], single: bool) -> dict[str, Any]:
        """Batch entries of one step beyond ``image`` and ``first``, with the step axis added."""
        return {}
