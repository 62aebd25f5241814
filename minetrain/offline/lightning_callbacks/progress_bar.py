"""Lightning's rich progress bar, reading the logged training metrics only every few steps."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar

from minetrain.errors import ConfigError


class SparseMetricsProgressBar(RichProgressBar):
    """``RichProgressBar`` whose metrics (the loss) are read from the device every ``metrics_every``
    training steps and shown unchanged in between.

    Lightning's bar reads them after every step, one device-to-host copy each, which on a GPU waits
    for the step's backward and optimizer to finish before the next batch can be queued.
    """

    def __init__(self, metrics_every: int = 10) -> None:
        if not isinstance(metrics_every, int) or metrics_every < 1:
            raise ConfigError(f"progress bar metrics_every={metrics_every!r}; expected an integer >= 1")
        super().__init__()
        self.metrics_every = metrics_every
        self._shown: dict[str, Any] | None = None

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if trainer.training and self._shown is not None and trainer.global_step % self.metrics_every:
            return self._shown
        self._shown = super().get_metrics(trainer, pl_module)
        return self._shown
