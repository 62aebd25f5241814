"""ModelCheckpoint that also writes the EMA weights, with every file written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from minetrain.errors import MinetrainError
from minetrain.files import remove_stale_temps
from minetrain.models.checkpoint import ema_path
from minetrain.offline.checkpoint_io import install_checkpoint_io
from minetrain.offline.lightning_callbacks.ema import EMA


class SmartCheckpointCallback(ModelCheckpoint):
    """Lightning ``ModelCheckpoint`` (filename templates, ``save_top_k``, ``every_n_train_steps``,
    ``save_weights_only``, ...) plus, when an ``EMA`` callback is present, a weights-only file of
    the EMA weights beside every saved file (``<name>-EMA.ckpt``, removed together with it).

    Files go through ``MineCheckpointIO`` (installed on the Trainer unless it has a custom
    CheckpointIO): written under a temp name in the same directory and renamed into place, so a
    killed process never leaves a truncated file under a final name. Temp files left by a killed
    writer are deleted at the next start, in this callback's directory and in the directory of the
    checkpoint the run resumes from (temps of a live process are kept).
    """

    @property
    def state_key(self) -> str:
        # The seed's two instances may share a frequency; what they write tells them apart.
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
            filename=self.filename,
            save_weights_only=self.save_weights_only,
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        install_checkpoint_io(trainer)
        if trainer.is_global_zero and self.dirpath is not None:
            remove_stale_temps(self.dirpath)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # A resumed run writes to a new directory, so the one it resumes from is cleaned here.
        path = trainer.ckpt_path
        if trainer.is_global_zero and path is not None and "://" not in str(path):
            remove_stale_temps(Path(path).parent)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Finalize the loggers now, so a failure of theirs cannot replace a one-line ``MinetrainError``.

        Lightning finalizes them after this hook; when a checkpoint write failed because the disk is
        full, their last write fails too and that traceback would be all the user sees.
        """
        if not isinstance(exception, MinetrainError):
            return
        for logger in trainer.loggers:
            try:
                logger.finalize("failed")
            except OSError as exc:
                rank_zero_warn(f"the {type(logger).__name__} could not write its last records ({exc})")
        trainer.loggers = []

    @staticmethod
    def _ema_callback(trainer: pl.Trainer) -> EMA | None:
        return next((callback for callback in trainer.callbacks if isinstance(callback, EMA)), None)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # ``last`` of the step that ends training (max_steps, or a stop request: max_time, early
        # stopping) is written here, in the loop state a periodic checkpoint has (this epoch, this batch
        # done). Written at train end, it would record the epoch as finished, and a resumed run would
        # start the next epoch. A request that min_epochs/min_steps overrule costs one extra write.
        max_steps_reached = 0 <= trainer.max_steps <= trainer.global_step
        if (
            self.save_last
            and (max_steps_reached or trainer.should_stop)
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning writes ``last`` at the end only if this callback never saved; a run that stops
        # between two saves (other than at the step that ends it, see above) would otherwise resume
        # from an older step than it reached.
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        super().on_train_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        ema = self._ema_callback(trainer)
        if ema is None or not ema.initialized:
            return
        target = ema_path(filepath, self.FILE_EXTENSION)
        if self.verbose:
            rank_zero_info(f"Saving EMA weights to {target}")
        with ema.swapped(trainer.lightning_module):
            trainer.save_checkpoint(target, weights_only=True)

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        # Removing a file that does not exist (no EMA yet) is a no-op.
        super()._remove_checkpoint(trainer, ema_path(filepath, self.FILE_EXTENSION))
