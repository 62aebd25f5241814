"""Test helper shared by test directories: bit rot inside one tensor of a saved torch checkpoint."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import torch

# Local file header: 30 bytes, of which the name and extra-field lengths are the two shorts at 26.
_HEADER, _LENGTHS_AT = 30, 26


def flip_tensor_bytes(path: Path, tensor: torch.Tensor, count: int = 4) -> None:
    """Invert ``count`` bytes in the middle of the record of ``path`` that stores ``tensor``'s data."""
    wanted = tensor.detach().cpu().contiguous().numpy().tobytes()
    with zipfile.ZipFile(path) as archive:
        record = next(
            r for r in archive.infolist() if r.file_size == len(wanted) and archive.read(r) == wanted
        )
    with open(path, "r+b") as handle:
        handle.seek(record.header_offset + _LENGTHS_AT)
        name_length, extra_length = struct.unpack("<HH", handle.read(4))
        start = record.header_offset + _HEADER + name_length + extra_length + len(wanted) // 2
        handle.seek(start)
        data = handle.read(count)
        handle.seek(start)
        handle.write(bytes(byte ^ 0xFF for byte in data))
