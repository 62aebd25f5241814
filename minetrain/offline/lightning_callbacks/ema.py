"""Exponential moving average of the weights, on Lightning's WeightAveraging and torch's AveragedModel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.optim.swa_utils import get_ema_multi_avg_fn

from minetrain.errors import ConfigError
from minetrain.models.checkpoint import EMA_STATE_KEY

# Key of the shadow weights in a full Lightning checkpoint.
# The AveragedModel wraps the LightningModule under this attribute name.
_PREFIX = "module."


FIRST_UPDATES = ("blend", "copy")


class EMA(WeightAveraging):
    """Shadow weights ``ema = decay * ema + (1 - decay) * weights`` after every ``every_n_steps``-th
    optimizer step (the 1st, the (n+1)-th, ...).

    ``first_update="blend"`` (default, as the reference): the shadow starts from the weights training
    starts with, so early EMA weights stay close to them; ``"copy"``: the first update copies the
    trained weights, so the EMA tracks the trained model from the first step.

    Only parameters are averaged; buffers (normalisation statistics) follow the trained model.
    ``validate_original_weights=False`` runs validation on the EMA weights. ``cpu_offload`` keeps
    the shadow copy in host memory. The training module keeps its own weights when training ends;
    the shadow weights live in full checkpoints (restored on resume) and in the ``-EMA`` weights
    file ``SmartCheckpointCallback`` writes beside each of its files.
    """

    def __init__(
        self,
        decay: float = 0.999,
        validate_original_weights: bool = False,
        every_n_steps: int = 1,
        cpu_offload: bool = False,
        first_update: str = "blend",
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(f"EMA decay={decay!r}; expected a value in [0, 1]")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ConfigError(f"EMA every_n_steps={every_n_steps!r}; expected an integer >= 1")
        if first_update not in FIRST_UPDATES:
            raise ConfigError(
                f"EMA first_update={first_update!r}; expected one of {', '.join(FIRST_UPDATES)}"
            )
        super().__init__(
            device="cpu" if cpu_offload else None, use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(decay)
        )
        self.decay = decay
        self.validate_original_weights = validate_original_weights
        self.every_n_steps = every_n_steps
        self.cpu_offload = cpu_offload
        self.first_update = first_update
        # n_averaged of the shadow model, on the host.
        self._updates = 0

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # setup() built the shadow copy before the strategy moved the module to its device.
        if self._average_model is None:
            return
        if not self.cpu_offload:
            self._average_model.to(pl_module.device)
        if self.first_update == "blend" and int(self._average_model.n_averaged) == 0:
            # Start from the weights as training starts (restored from a checkpoint, broadcast by DDP);
            # a count of 1 makes the first update average with them instead of copying.
            with torch.no_grad():
                for shadow, weight in zip(
                    self._average_model.module.parameters(), pl_module.parameters(), strict=True
                ):
                    shadow.copy_(weight)
            self._average_model.n_averaged.fill_(1)
        self._updates = int(self._average_model.n_averaged)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """The update of ``WeightAveraging``, without ``AveragedModel.update_parameters``: that reads its
        device-held update count twice per update, and each read waits for the device to finish the step.
        The count is mirrored on the host here (read once, at the start of fit)."""
        step = trainer.global_step
        if step > self._latest_update_step and self.should_update(step_idx=step - 1):
            self._update(pl_module)
            self._latest_update_step = trainer.global_step

    @torch.no_grad()
    def _update(self, pl_module: pl.LightningModule) -> None:
        average = self._average_model
        groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
        for shadow, weight in zip(average.module.parameters(), pl_module.parameters(), strict=True):
            shadows, weights = groups.setdefault((shadow.device, shadow.dtype), ([], []))
            shadows.append(shadow.detach())
            weights.append(weight.detach().to(shadow.device))
        for shadows, weights in groups.values():
            if self._updates == 0:
                torch._foreach_copy_(shadows, weights)
            else:
                average.multi_avg_fn(shadows, weights, average.n_averaged)
        average.n_averaged += 1
        self._updates += 1

    @property
    def initialized(self) -> bool:
        """True once the shadow weights hold weights: from the start of fit with ``first_update="blend"``,
        after the first update with ``"copy"``."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow weights, keyed like the LightningModule's ``state_dict``."""
        if self._average_model is None:
            raise RuntimeError("EMA weights exist only while fitting")
        state = self._average_model.state_dict()
        return {key[len(_PREFIX) :]: value for key, value in state.items() if key.startswith(_PREFIX)}

    @contextlib.contextmanager
    def swapped(self, pl_module: pl.LightningModule) -> Iterator[None]:
        """Run the body with the EMA weights in ``pl_module`` (swapped back afterwards, bit for bit)."""
        self._swap_models(pl_module)
        try:
            yield
        finally:
            self._swap_models(pl_module)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.validate_original_weights:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.validate_original_weights:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the trained weights in the module (WeightAveraging would overwrite them with the average)."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is not None:
            checkpoint[EMA_STATE_KEY] = self._average_model.state_dict()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            return
        state = checkpoint.get(EMA_STATE_KEY)
        if state is None:
            rank_zero_info("the checkpoint has no EMA weights; the EMA restarts from the current weights")
            self._average_model.n_averaged.zero_()
            self._updates = 0
            return
        self._average_model.load_state_dict(state)
        self._updates = int(self._average_model.n_averaged)
