"""Training throughput and how much of it is spent waiting for data."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch

from minetrain.errors import ConfigError


class SpeedMonitorCallback(pl.Callback):
    """Every ``interval`` training steps, log to the loggers (rank 0):

    - ``speed/step_time``: mean seconds from batch start to batch end (forward, backward, optimizer);
    - ``speed/steps_per_sec``, ``speed/samples_per_sec``, ``speed/frames_per_sec``: over the wall
      time of the interval, for all ranks together (this rank's count times the world size: DDP
      ranks step in lockstep on equal batches); frames are the real (unpadded) ones;
    - ``speed/data_wait``: share of the wall time spent between batches, i.e. waiting for the loader.
    """

    def __init__(self, interval: int = 16) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"SpeedMonitorCallback interval={interval!r}; expected an integer >= 1")
        self.interval = interval
        self._reset(None)

    def _reset(self, now: float | None) -> None:
        self._window_start = now
        self._batch_start: float | None = None
        self._last_end = now
        self._steps = 0
        self._samples = 0
        # Summed where the batch is (a device tensor on a GPU) and read once per interval.
        self._frames: int | torch.Tensor = 0
        self._busy = 0.0
        self._wait = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Epoch boundaries include validation and loader start-up: not part of a measurement window.
        self._reset(None)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._window_start is None:
            self._reset(now)
        elif self._last_end is not None:
            self._wait += now - self._last_end
        self._batch_start = now

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._batch_start is None:
            return
        now = time.perf_counter()
        self._busy += now - self._batch_start
        self._last_end = now
        self._steps += 1
        image = batch["image"]
        self._samples += int(image.shape[0])
        mask = batch.get("mask")
        self._frames = self._frames + (mask.sum() if mask is not None else image.shape[0] * image.shape[1])
        if self._steps >= self.interval:
            self._flush(trainer, now)

    def _flush(self, trainer: pl.Trainer, now: float) -> None:
        wall = max(now - self._window_start, 1e-9)
        world = trainer.world_size
        metrics = {
            "speed/step_time": self._busy / self._steps,
            "speed/steps_per_sec": self._steps / wall,
            "speed/samples_per_sec": self._samples * world / wall,
            "speed/frames_per_sec": float(self._frames) * world / wall,
            "speed/data_wait": self._wait / wall,
        }
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        self._reset(now)
