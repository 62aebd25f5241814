"""Process-local, read-only LMDB handles.

lmdb>=2 refuses to open one environment twice in a process, and a handle must never cross a
fork. So every reader shares one handle per path per process, and a forked child (a DataLoader
worker) drops the handles it inherited before opening its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import lmdb

from minetrain.data.store import layout
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import DataError

_envs: dict[str, lmdb.Environment] = {}
_owner_pid = os.getpid()
_lock = threading.Lock()


def _drop_inherited() -> None:
    """Close, in this process only, the handles a fork copied from the parent."""
    global _owner_pid
    for env in _envs.values():
        env.close()
    _envs.clear()
    _owner_pid = os.getpid()


os.register_at_fork(after_in_child=_drop_inherited)


def _check_readable(data_file: Path) -> None:
    """LMDB reports EACCES as a generic error; opening the data file first names the cause."""
    # A missing file is left to lmdb.open, which reports it as not an LMDB part.
    with layout.permission_errors(), suppress(FileNotFoundError):
        os.close(os.open(data_file, os.O_RDONLY))


def _open(path: Path) -> lmdb.Environment:
    with layout.permission_errors():
        subdir = path.is_dir()
    _check_readable(path / "data.mdb" if subdir else path)
    try:
        return lmdb.open(
            str(path), readonly=True, lock=False, readahead=False, max_readers=512, subdir=subdir
        )
    except lmdb.Error as exc:
        raise DataError(
            f"{path}: not a readable LMDB part ({exc}); remove it from the modality folder or re-convert it"
        ) from None


def reader_env(path: Path) -> lmdb.Environment:
    """The shared read-only handle of ``path`` in this process, opened on first use."""
    key = str(path)
    with _lock:
        if _owner_pid != os.getpid():
            _drop_inherited()
        env = _envs.get(key)
        if env is None:
            env = _envs[key] = _open(path)
        return env


@contextmanager
def borrowed_env(path: Path) -> Iterator[lmdb.Environment]:
    """A handle for a short look: the shared one if open, else a temporary one closed afterwards."""
    key = str(path)
    with _lock:
        if _owner_pid != os.getpid():
            _drop_inherited()
        env = _envs.get(key)
    if env is not None:
        yield env
        return
    env = _open(path)
    try:
        yield env
    finally:
        env.close()


@dataclass(frozen=True)
class PartInfo:
    """The bookkeeping of one LMDB part."""

    path: Path
    chunk_size: int
    chunk_infos: tuple[dict, ...]
    num_episodes: int
    num_total_frames: int


def read_part_info(path: Path) -> PartInfo:
    """Read and check the four bookkeeping keys of a part."""
    keys = (
        layout.CHUNK_SIZE_KEY,
        layout.CHUNK_INFOS_KEY,
        layout.NUM_EPISODES_KEY,
        layout.NUM_TOTAL_FRAMES_KEY,
    )
    values = []
    with borrowed_env(path) as env, env.begin(buffers=False) as txn:
        for key in keys:
            raw = txn.get(key)
            if raw is None:
                raise DataError(
                    f"{path}: bookkeeping key {key.decode()} is missing (an unfinished or foreign LMDB); "
                    "remove this part or re-convert it"
                )
            values.append(load_pickle(raw, f"{path}: bookkeeping key {key.decode()}", "re-convert this part"))
    chunk_size, chunk_infos, num_episodes, num_total_frames = values
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise DataError(f"{path}: __chunk_size__ is {chunk_size!r}, expected a positive int; re-convert it")
    required = {"episode", "episode_idx", "num_frames"}
    if not isinstance(chunk_infos, list) or not all(
        isinstance(info, dict) and required <= info.keys() for info in chunk_infos
    ):
        raise DataError(
            f"{path}: __chunk_infos__ is not a list of dicts with episode, episode_idx, num_frames; "
            "re-convert it"
        )
    infos = tuple(
        {
            "episode": str(ci["episode"]),
            "episode_idx": int(ci["episode_idx"]),
            "num_frames": int(ci["num_frames"]),
        }
        for ci in chunk_infos
    )
    return PartInfo(path, chunk_size, infos, int(num_episodes), int(num_total_frames))
