"""What the modalities stored as one dict per frame (segmentation, meta_info) share."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from minetrain.data.store.modalities.base import Modality
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import DataError


def validate_frame_dicts(value: Any, name: str) -> tuple[list[dict], int]:
    """An episode's value as a list with one dict per frame, and its length."""
    if not isinstance(value, list | tuple) or not all(isinstance(frame, dict) for frame in value):
        raise DataError(f"{name} must be a list with one dict per frame")
    return list(value), len(value)


def check_frame_dicts(data: bytes, expected: int) -> list[dict]:
    """A stored chunk's frames, if it holds ``expected`` of them, one dict each."""
    value = load_pickle(data, "", "re-convert this episode")
    if not isinstance(value, list) or not all(isinstance(frame, dict) for frame in value):
        raise DataError(f"holds {type(value).__name__}, expected a list with one dict per frame")
    if len(value) != expected:
        raise DataError(f"holds {len(value)} frames, expected {expected}")
    return value


def take_frames(value: Any, expected: int, lo: int, hi: int) -> list | None:
    return value[lo:hi] if isinstance(value, list) and len(value) >= expected else None


def join_frames(pieces: list[list]) -> list:
    return [frame for piece in pieces for frame in piece]


def frame_dict_modality(
    name: str, folders: tuple[str, ...], check: Callable[[bytes, int], Any] = check_frame_dicts, **hooks: Any
) -> Modality:
    """The record of a modality stored as one dict per frame; ``hooks``: its other ``Modality`` fields."""
    validate = partial(validate_frame_dicts, name=name)
    return Modality(name, folders, validate, check, take=take_frames, join=join_frames, **hooks)
