"""Atomic file writes: a hidden temp file beside the target, fsynced, renamed over it, then the
directory fsynced, so a process killed at any moment leaves either the old file or the complete new
one under the final name. Shared by data, models and offline, which do not import each other.

The temp name ends with the writer's pid so ``remove_stale_temps`` can tell an interrupted write
(its process is gone) from one in progress. The temp file is created by the caller's writer like any
new file, so it gets the umask's mode (``mkstemp``'s would be 0600).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def temp_path(path: str | Path) -> Path:
    """Hidden name in the target's directory that an interrupted write leaves behind."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")


def fsync_directory(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced and renamed over ``path``; on any
    exception it is removed and ``path`` is left as it was."""
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
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _writer_is_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (if unsure, yes: its temp file is then kept)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temp files in ``directory`` whose writer process is gone; return them.

    The writer's pid ends the temp name (``temp_path``); temps of a live process belong to a write in
    progress (another run writing to the same directory) and are kept.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for temp in directory.glob(f"{TEMP_PREFIX}*"):
        pid = temp.name.rsplit(".", 1)[-1]
        if temp.is_file() and pid.isdigit() and not _writer_is_running(int(pid)):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed
