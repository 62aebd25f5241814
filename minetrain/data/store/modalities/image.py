"""The frames: H.264 MP4 chunks, batched as RGB frames or as stored I420 planes (``image_format``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from minetrain.data.store.codecs import decode_video
from minetrain.data.store.modalities.base import BatchParams, Field, Modality, SyntheticEpisode
from minetrain.errors import DataError


def _validate(value: Any) -> tuple[np.ndarray, int]:
    image = np.asarray(value)
    if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise DataError(f"image must be (N, H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    return image, len(image)


def _check(data: bytes, expected: int) -> None:
    frames = decode_video(data)
    if len(frames) != expected:
        raise DataError(f"MP4 holds {len(frames)} frames, expected {expected}")


def _fields(p: BatchParams) -> dict[str, Field]:
    b, t = p.batch_size, p.win_len
    if p.stored_size is None:
        return {"image": Field((b, t, p.frame_height, p.frame_width, 3), np.uint8, "buffer")}
    height, width = p.stored_size
    return {
        "image": Field((b, t, height * 3 // 2, width), np.uint8, "buffer"),
        "frame_size": Field((b, 2), np.int64, "batch"),
    }


def _finish(batch: dict[str, Any], p: BatchParams) -> None:
    if p.stored_size is not None:
        import torch  # batches are tensors; the store's other uses need no torch

        batch["frame_size"] = torch.tensor([(p.frame_height, p.frame_width)] * len(batch["image"]))


def _synthesize(episode: SyntheticEpisode) -> np.ndarray:
    return episode.frames


IMAGE = Modality(
    "image",
    ("image", "video"),
    _validate,
    _check,
    video=True,
    fields=_fields,
    finish=_finish,
    synthesize=_synthesize,
    required=True,
)
