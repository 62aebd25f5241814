"""Checkpoint files: written atomically, read with one-line errors.

Lightning's default ``TorchCheckpointIO`` serialises into memory and lets fsspec stage the file in
the system temp dir before moving it, which doubles the checkpoint's memory at save time and is not
an atomic rename when the temp dir is another filesystem. ``MineCheckpointIO`` streams
``torch.save`` into a hidden temp file beside the target, fsyncs it and ``os.replace``\\ s it, so a
process killed at any moment leaves either the old file or the complete new one under the final
name. Only plain local paths are handled here; URLs go through Lightning's implementation.

Integrity: a torch checkpoint is a zip archive in which torch stores the CRC-32 of every record (the
pickled state and each tensor's bytes), but ``torch.load`` never checks them, so a flipped bit in an
optimizer tensor loads silently. ``verify_checkpoint`` checks them before a checkpoint is loaded, at
the cost of reading the file once more; files without CRCs (torch's CRC option turned off, or the
legacy non-zip format) are loaded unchecked.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from minetrain.errors import CheckpointError
from minetrain.files import atomic_path

ZIP_MAGIC = b"PK\x03\x04"
_READ_CHUNK = 1 << 22


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path)


def _write_failure(exc: BaseException) -> str:
    """Why a read or write failed: the OS error behind ``exc`` if any, else its first line.

    ``torch.save`` reports a full disk as a ``RuntimeError`` ("enforce fail at inline_container...")
    raised while handling the file's ``OSError``.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.strerror or str(seen) or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# Files this process has verified, by identity: ``resume=auto`` verifies its pick and the load then
# verifies it again, a second full read of the whole checkpoint. Checkpoints are
# replaced by rename, so a rewritten file has a new inode and is verified anew.
_verified: set[tuple[int, int, int, int]] = set()


def verify_checkpoint(path: str | Path) -> None:
    """Raise ``CheckpointError`` if a record of the checkpoint at ``path`` does not match its CRC-32.

    Records stored without a CRC (0) are not checked; a file that is not a zip archive (torch's legacy
    format, or not a checkpoint at all) is left to ``torch.load``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if identity in _verified or handle.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
                return
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.CRC == 0 and record.file_size > 0:
                    continue
                # ZipExtFile compares the CRC-32 of what it read with the stored one at the end.
                with archive.open(record) as data:
                    while data.read(_READ_CHUNK):
                        pass
        _verified.add(identity)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({_write_failure(exc)})") from exc
    except (zipfile.BadZipFile, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt ({first}): it changed after it was written (disk or copy "
            "error); resume from another checkpoint"
        ) from exc


def _modified(path: Path) -> float:
    """Modification time; a file removed meanwhile (by another run's top-k) sorts last and fails to read."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("-inf")


def newest_intact_checkpoint(
    paths: Iterable[str | Path], on_skip: Callable[[Path, str], None] | None = None
) -> Path | None:
    """The most recently modified of ``paths`` that passes ``verify_checkpoint``.

    Each newer file that fails is passed to ``on_skip`` with the reason, so the caller can say which
    checkpoint it did not resume from.
    """
    for path in sorted(map(Path, paths), key=_modified, reverse=True):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            if on_skip is not None:
                on_skip(path, str(err))
            continue
        return path
    return None


class MineCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic local writes and ``CheckpointError`` on unreadable files."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        try:
            # Through a Python file, a full disk surfaces as an OSError (with its errno) behind torch's
            # RuntimeError, which names no cause when torch opens the file itself.
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
        except (OSError, RuntimeError) as exc:
            reason = _write_failure(exc)
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
        if _is_local(path):
            verify_checkpoint(path)
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
