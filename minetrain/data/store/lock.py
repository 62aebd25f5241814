"""One writer per dataset dir: an exclusive ``flock`` on ``<dataset dir>/.minetrain-write.lock``.

Two writers on one dir would each scan, number and rename parts as if alone, and one removes the
other's unfinished parts. The OS drops the lock when its holder dies, so a killed writer never
blocks the next one. Readers never take it. The lock file stays in place (unlinking it would let
two processes lock two different files) and holds the holder's pid for the error message. Its
name starts with a dot and it sits beside, not inside, the modality folders, so readers skip it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from minetrain.data.store import layout
from minetrain.errors import DataError

LOCK_NAME = ".minetrain-write.lock"

# Dirs this process holds -> (pid, depth): a converter holds its output dir while the
# DatasetWriter it uses locks it again, and a second flock of one process on a new descriptor
# would fail. The pid keeps a forked child from taking its parent's entry for its own.
_held: dict[str, tuple[int, int]] = {}


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def dataset_write_lock(dataset_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the write lock of ``dataset_dir`` (created if needed); DataError if another process has it."""
    dataset_dir = Path(dataset_dir)
    with layout.permission_errors():
        dataset_dir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(dataset_dir)
    pid, depth = _held.get(key, (0, 0))
    if pid == os.getpid():
        _held[key] = (pid, depth + 1)
        try:
            yield dataset_dir
        finally:
            _held[key] = (pid, depth)
        return
    path = dataset_dir / LOCK_NAME
    with layout.permission_errors():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(
                f"{dataset_dir} is being written by pid {_holder(path)}; wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = (os.getpid(), 1)
        try:
            yield dataset_dir
        finally:
            del _held[key]
    finally:
        os.close(fd)
