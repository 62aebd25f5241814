"""The on-disk layout MineStudio datasets use (SPEC.md, "Trajectory store").

A dataset dir holds one folder per modality; each folder holds LMDB environments ("parts") with
four pickled bookkeeping keys and one entry per chunk keyed ``str((episode_idx, chunk_start))``.
"""

from __future__ import annotations

import re
from pathlib import Path

MODALITIES = ("image", "action", "segmentation", "meta_info")

# Folder names the reference library also accepts for a modality; the first is the one we write.
FOLDER_NAMES = {
    "image": ("image", "video"),
    "action": ("action",),
    "segmentation": ("segmentation", "segment"),
    "meta_info": ("meta_info", "contractor_info"),
}

CHUNK_SIZE_KEY = b"__chunk_size__"
CHUNK_INFOS_KEY = b"__chunk_infos__"
NUM_EPISODES_KEY = b"__num_episodes__"
NUM_TOTAL_FRAMES_KEY = b"__num_total_frames__"

# Bookkeeping and chunk pickles use protocol 4 so that older Pythons/readers load them too.
PICKLE_PROTOCOL = 4

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
    for name in FOLDER_NAMES[modality]:
        candidate = dataset_dir / name
        if candidate.is_dir():
            return candidate
    return None


def list_parts(folder: Path) -> list[Path]:
    """Every visible entry of a modality folder, in a stable order (part number, then name)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return sorted(entries, key=lambda p: (part_number(p) is None, part_number(p) or 0, p.name))
