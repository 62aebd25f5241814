"""Contractor meta_info: a dict per frame (yaw, pitch, GUI state, ...), batched on request
(``enable_contractor_info``) as the reference batches it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minetrain.data.store.modalities.base import BatchParams, Field, SyntheticEpisode, WindowRead
from minetrain.data.store.modalities.frames import frame_dict_modality


def meta_info_rows(frames: Sequence[Any], length: int) -> dict[str, list[Any]]:
    """Per-frame meta_info as the reference batches it: field -> ``length`` values, None where absent.

    Fields are those of any frame of the window; padding frames and frames without a field get None.
    """
    keys = dict.fromkeys(key for frame in frames if isinstance(frame, dict) for key in frame)
    return {
        key: [frame.get(key) if isinstance(frame, dict) else None for frame in frames]
        + [None] * (length - len(frames))
        for key in keys
    }


def stack_meta_info(windows: list[dict[str, list[Any]]], length: int) -> dict[str, list[list[Any]]]:
    """Batch per-window meta_info: field -> one list per window, all-None for windows without it."""
    keys = dict.fromkeys(key for window in windows for key in window)
    return {key: [window.get(key, [None] * length) for window in windows] for key in keys}


def _fields(p: BatchParams) -> dict[str, Field]:
    if not p.enable_contractor_info:
        return {}
    return {"meta_info": Field((p.batch_size, p.win_len), dict, pad=None, stack=stack_meta_info)}


def _read(window: WindowRead, fields: dict[str, Any]) -> None:
    frames = window.read("meta_info")[:: window.stride]
    fields["meta_info"] = meta_info_rows(frames, window.params.win_len)


def _synthesize(episode: SyntheticEpisode) -> list[dict]:
    """Where the camera points: the running sum of its moves."""
    pitch, yaw = np.cumsum(episode.action["camera"], axis=0).T
    return [{"yaw": float(y), "pitch": float(p), "isGuiOpen": False} for p, y in zip(pitch, yaw, strict=True)]


META_INFO = frame_dict_modality(
    "meta_info", ("meta_info", "contractor_info"), fields=_fields, read=_read, synthesize=_synthesize
)
