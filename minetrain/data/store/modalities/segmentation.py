"""Per-frame object masks: a dict per frame of the interactions it shows (RLE mask, object id,
event, ...), batched as ROCKET-1's condition (``conditioning.py``: hindsight relabelling)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from minetrain.data.conditioning import condition_window, item_rng
from minetrain.data.store.codecs import MASK_SHAPE, rle_decode
from minetrain.data.store.modalities.base import BatchParams, Field, SyntheticEpisode, WindowRead
from minetrain.data.store.modalities.frames import check_frame_dicts, frame_dict_modality
from minetrain.errors import DataError


def _check(data: bytes, expected: int) -> None:
    for offset, frame in enumerate(check_frame_dicts(data, expected)):
        for key, value in frame.items():
            if not isinstance(value, dict) or "rle_mask" not in value or "obj_id" not in value:
                raise DataError(f"frame {offset} interaction {key!r} lacks rle_mask/obj_id")
            try:
                rle_decode(value["rle_mask"])
            except DataError as exc:
                raise DataError(f"frame {offset} interaction {key!r}: {exc}") from None


def _fields(p: BatchParams) -> dict[str, Field]:
    b, t = p.batch_size, p.win_len
    if not p.enable_segment:
        return {}
    return {
        "segment/obj_id": Field((b, t), np.int64, pad=-1),
        "segment/point": Field((b, t, 2), np.float32, pad=-1.0),
        "segment/event": Field((b, t), str, pad=""),
        "segment/frame_id": Field((b, t), np.int64, pad=-1),
        "segment/frame_range": Field((b, t, 2), np.int64, pad=-1),
        "segment/obj_mask": Field((b, t, p.frame_height, p.frame_width), np.uint8, "buffer"),
    }


def _read(window: WindowRead, fields: dict[str, Any]) -> None:
    """The window's condition; its masks go straight into the batch's ``segment/obj_mask`` buffer."""
    real, p = window.real, window.params
    obj_mask = window.buffers["segment/obj_mask"]
    frames = window.read("segmentation")
    rng = item_rng(window.seed, window.epoch, window.index)
    try:
        condition = condition_window(
            frames,
            (p.frame_width, p.frame_height),
            rng,
            window.condition_dropout,
            stride=window.stride,
            obj_mask=obj_mask[:real],
        )
    except DataError as exc:
        raise DataError(f"{window.where('segmentation')}: {exc}") from None
    obj_mask[real:] = 0
    segment = fields["segment"]
    for key, value in condition.items():
        if key != "obj_mask":
            segment[key][:real] = value


def _draw(frames: Sequence[Mapping], offset: int) -> dict[str, Any]:
    interactions = list(frames[offset].values())
    return {
        "masks": [(rle_decode(v["rle_mask"]), int(v["obj_id"])) for v in interactions],
        "events": [str(v.get("event", "")) for v in interactions],
    }


def box_rle(top: int, left: int, bottom: int, right: int, shape: tuple[int, int] = MASK_SHAPE) -> str:
    """RLE (1-based start, length; row-major) of the box rows [top, bottom) x cols [left, right)."""
    width = shape[1]
    if left == 0 and right == width:
        return f"{top * width + 1} {(bottom - top) * width}"
    starts = np.arange(top, bottom) * width + left + 1
    return " ".join(f"{s} {right - left}" for s in starts)


def _synthesize(episode: SyntheticEpisode) -> list[dict]:
    """Each target's box as its mask, over the reference's native 360x640 frame."""
    height, width = MASK_SHAPE
    frames = []
    for t, target in enumerate(episode.targets):
        if target is None:
            frames.append({})
            continue
        top, left, bottom, right = target.box
        r0, c0 = int(top * height), int(left * width)
        r1, c1 = max(r0 + 1, int(bottom * height)), max(c0 + 1, int(right * width))
        interaction = {
            "obj_id": target.obj_id,
            "rle_mask": box_rle(r0, c0, r1, c1),
            "event": target.event,
            "point": ((r0 + r1) // 2, (c0 + c1) // 2),
            "frame_id": t,
            "frame_range": (target.start, target.stop - 1),
        }
        frames.append({(str(target.segment), target.event): interaction})
    return frames


SEGMENTATION = frame_dict_modality(
    "segmentation",
    ("segmentation", "segment"),
    _check,
    fields=_fields,
    read=_read,
    draw=_draw,
    synthesize=_synthesize,
)
