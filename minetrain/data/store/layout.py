"""The on-disk layout MineStudio datasets use (SPEC.md, "Trajectory store").

A dataset dir holds one folder per modality; each folder holds LMDB environments ("parts") with
four pickled bookkeeping keys and one entry per chunk keyed ``str((episode_idx, chunk_start))``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from minetrain.data.store.modalities import MODALITY_SPECS
from minetrain.errors import DataError

CHUNK_SIZE_KEY = b"__chunk_size__"
CHUNK_INFOS_KEY = b"__chunk_infos__"
NUM_EPISODES_KEY = b"__num_episodes__"
NUM_TOTAL_FRAMES_KEY = b"__num_total_frames__"

# Parts under construction live here, outside every modality folder: the reference reader opens
# every entry of a modality folder as an LMDB environment.
INCOMPLETE_DIR = ".incomplete"

_PART_RE = re.compile(r"^part-(\d+)$")


def chunk_key(episode_idx: int, chunk_start: int) -> bytes:
    """The LMDB key of one chunk, byte-identical to the reference's ``str((idx, start)).encode()``."""
    return str((int(episode_idx), int(chunk_start))).encode()


def part_number(path: Path) -> int | None:
    """The K of a ``part-K`` folder, or None for other names."""
    match = _PART_RE.match(path.name)
    return int(match.group(1)) if match else None


def part_name(number: int) -> str:
    return f"part-{number}"


def modality_folder(dataset_dir: Path, modality: str) -> Path | None:
    """The folder holding ``modality`` in ``dataset_dir`` (any accepted alias), or None."""
    for name in MODALITY_SPECS[modality].folders:
        candidate = dataset_dir / name
        if candidate.is_dir():
            return candidate
    return None


def list_parts(folder: Path) -> list[Path]:
    """Every visible entry of a modality folder, in a stable order (part number, then name)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return sorted(entries, key=lambda p: (part_number(p) is None, part_number(p) or 0, p.name))


class UnreadableError(DataError):
    """A dataset file or folder this user may not read: fixed by permissions, not by re-converting."""


def unreadable(exc: PermissionError) -> UnreadableError:
    """The one-line error for a file or folder this user may not read."""
    return UnreadableError(
        f"{exc.filename}: permission denied; fix its permissions (chmod/chown) so this user can read it"
    )


@contextmanager
def permission_errors() -> Iterator[None]:
    """Turn a PermissionError raised while reading a dataset into ``unreadable``'s one-line error."""
    try:
        yield
    except PermissionError as exc:
        raise unreadable(exc) from None


def check_dataset_dir(dataset_dir: Path) -> None:
    """DataError unless ``dataset_dir`` is a readable directory with something in it."""
    with permission_errors():
        if not dataset_dir.exists():
            raise DataError(f"{dataset_dir}: dataset dir does not exist; check the path")
        if not dataset_dir.is_dir():
            raise DataError(
                f"{dataset_dir}: is a file, not a dataset dir; pass the directory that holds "
                "image/, action/, segmentation/, meta_info/"
            )
        empty = not any(not p.name.startswith(".") for p in dataset_dir.iterdir())
    if empty:
        raise DataError(f"{dataset_dir}: dataset dir is empty; convert or copy a dataset into it")


def modalities_in(dataset_dir: Path, modalities: Iterable[str]) -> list[str]:
    """Those of ``modalities`` with a folder in ``dataset_dir`` (checked by ``check_dataset_dir``)."""
    check_dataset_dir(dataset_dir)
    with permission_errors():
        return [m for m in modalities if modality_folder(dataset_dir, m) is not None]
