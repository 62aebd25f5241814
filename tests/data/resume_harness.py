"""A real Lightning run that records what each training step saw, for the loader resume tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class Recorder(pl.LightningModule):
    """Records (epoch, batch index, signature(batch)) per step; the loss only exists so optimisation runs."""

    def __init__(self, signature: Callable[[dict], object]) -> None:
        super().__init__()
        self.signature = signature
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch_idx, self.signature(batch)))
        return (self.weight * batch["mask"].float().mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_recording(
    datamodule: pl.LightningDataModule,
    signature: Callable[[dict], object],
    max_epochs: int,
    max_steps: int,
    ckpt_dir: Path,
    ckpt_path: Path | None = None,
    every: int | None = None,
) -> tuple[list, pl.Trainer]:
    """Train a ``Recorder`` (checkpointing every ``every`` steps if given) and return what it saw."""
    recorder = Recorder(signature)
    callbacks = (
        [] if every is None else [ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=every, save_top_k=-1)]
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        max_steps=max_steps,
        use_distributed_sampler=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=every is not None,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    trainer.fit(recorder, datamodule=datamodule, ckpt_path=ckpt_path)
    return recorder.seen, trainer
