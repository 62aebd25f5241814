"""Checkpoint files: written atomically, read with one-line errors.

Lightning's default ``TorchCheckpointIO`` serialises into memory and lets fsspec stage the file in
the system temp dir before moving it, which doubles the checkpoint's memory at save time and is not
an atomic rename when the temp dir is another filesystem. ``MineCheckpointIO`` streams
``torch.save`` into a hidden temp file beside the target, fsyncs it and ``os.replace``\\ s it, so a
process killed at any moment leaves either the old file or the complete new one under the final
name. Only plain local paths are handled here; URLs go through Lightning's implementation.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from minetrain.errors import CheckpointError

TEMP_PREFIX = ".tmp-"


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path)


def temp_path(path: str | Path) -> Path:
    """Hidden name in the target's directory that an interrupted write leaves behind."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_stale_temps(directory: str | Path) -> None:
    """Delete temp files that killed writers left in ``directory``."""
    directory = Path(directory)
    if directory.is_dir():
        for stale in directory.glob(f"{TEMP_PREFIX}*"):
            stale.unlink(missing_ok=True)


class MineCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic local writes and ``CheckpointError`` on unreadable files."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise CheckpointError(
                f"writing checkpoint {path} failed ({reason}); nothing was written under that name. "
                f"Free space in {Path(path).parent} and resume from the previous checkpoint"
            ) from exc

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if _is_local(path) and not Path(path).is_file():
            raise CheckpointError(
                f"checkpoint {path} does not exist; pass the path of a saved ckpt-*.ckpt file, or "
                "ckpt_path=None to start from scratch"
            )
        try:
            checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"checkpoint {path} cannot be read ({first}); it is truncated or not a torch checkpoint"
            ) from exc
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(
                f"checkpoint {path} holds no 'state_dict'; it is not a Lightning checkpoint"
            )
        return checkpoint


def install_checkpoint_io(trainer: pl.Trainer) -> None:
    """Use ``MineCheckpointIO`` unless the Trainer was given a custom CheckpointIO plugin."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = MineCheckpointIO()
