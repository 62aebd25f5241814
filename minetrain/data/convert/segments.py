"""Per-episode interaction annotations -> the segmentation modality of an existing dataset.

One JSON file per episode, ``<episode>.json`` in the annotation dir::

    {
      "episode": "cheeky-cornflower-setter-...",   # optional, defaults to the file name
      "frames": {                                  # frame index -> interactions on that frame
        "12": [
          {
            "id": "log-1",                         # optional: same id = same interaction across frames
            "event": "minecraft.mine_block:minecraft:oak_log",
            "obj_id": 2,                           # interaction type: 0 Hunt, 1/3 Use/Interact, 2 Mine,
                                                   # 4 Craft, 5 Switch, 6 Approach
            "point": [180, 320],                   # (row, col) in 360x640 pixels, or null
            "frame_range": [10, 40],               # first and last frame of the interaction
            "rle_mask": "57601 40 58241 40"        # RLE over 360x640 (1-based start, length) ...
            # or "mask_png": "masks/12-log.png"    # ... a PNG (non-zero = object), relative to the JSON
          }
        ]
      }
    }

Frames not listed have no interaction. The stored form is the reference's: per frame a dict keyed
``(id, event)`` whose value holds obj_id, rle_mask, event, point, frame_id and frame_range. An id
left out defaults to the frame range, so one interaction keeps one key over its frames (the loader's
hindsight relabelling relies on that).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from minetrain.data.convert.report import ConversionReport
from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import MASK_SHAPE, rle_decode, rle_encode
from minetrain.data.store.lock import dataset_write_lock
from minetrain.data.summary import present_modalities
from minetrain.errors import DataError

INTERACTION_IDS = frozenset(range(7))


def _mask_rle(item: dict, source: Path, where: str) -> str:
    if "rle_mask" in item:
        rle = item["rle_mask"]
        if not isinstance(rle, str):
            raise DataError(f"{source}: {where}: rle_mask must be a string")
        try:
            rle_decode(rle, MASK_SHAPE)
        except DataError as exc:
            raise DataError(f"{source}: {where}: {exc}") from None
        return rle
    if "mask_png" in item:
        path = source.parent / str(item["mask_png"])
        try:
            with Image.open(path) as image:
                mask = np.asarray(image.convert("L")) != 0
        except OSError as exc:
            raise DataError(f"{source}: {where}: mask_png {path} does not load ({exc})") from None
        if mask.shape != MASK_SHAPE:
            rows = np.arange(MASK_SHAPE[0]) * mask.shape[0] // MASK_SHAPE[0]
            cols = np.arange(MASK_SHAPE[1]) * mask.shape[1] // MASK_SHAPE[1]
            mask = mask[rows[:, None], cols[None, :]]
        return rle_encode(mask)
    raise DataError(f"{source}: {where}: needs rle_mask or mask_png")


def _interaction(item: object, frame: int, source: Path) -> tuple[tuple[str, str], dict]:
    where = f"frame {frame}"
    if not isinstance(item, dict):
        raise DataError(f"{source}: {where}: each interaction must be an object")
    for name in ("event", "obj_id", "frame_range"):
        if name not in item:
            raise DataError(f"{source}: {where}: interaction lacks {name}")
    event, obj_id, frame_range = item["event"], item["obj_id"], item["frame_range"]
    if not isinstance(event, str) or not event:
        raise DataError(f"{source}: {where}: event must be a non-empty string")
    if not isinstance(obj_id, int) or obj_id not in INTERACTION_IDS:
        raise DataError(f"{source}: {where}: obj_id {obj_id!r} is not an interaction type in 0..6")
    if not (
        isinstance(frame_range, list)
        and len(frame_range) == 2
        and all(isinstance(v, int) for v in frame_range)
    ):
        raise DataError(f"{source}: {where}: frame_range must be [first, last] frame indices")
    point = item.get("point")
    if point is not None and not (isinstance(point, list) and len(point) == 2):
        raise DataError(f"{source}: {where}: point must be [row, col] or null")
    ident = str(item.get("id", f"{frame_range[0]}-{frame_range[1]}"))
    value = {
        "obj_id": obj_id,
        "rle_mask": _mask_rle(item, source, where),
        "event": event,
        "point": tuple(point) if point is not None else None,
        "frame_id": frame,
        "frame_range": tuple(frame_range),
    }
    return (ident, event), value


def load_annotation(path: Path, num_frames: int) -> list[dict]:
    """The per-frame segmentation list of one annotation file for an episode of ``num_frames``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON annotation ({exc})") from None
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, dict):
        raise DataError(f'{path}: needs a top-level object with a "frames" object')
    segmentation: list[dict] = [{} for _ in range(num_frames)]
    for key, items in frames.items():
        try:
            frame = int(key)
        except ValueError:
            raise DataError(f"{path}: frame key {key!r} is not an integer") from None
        if not 0 <= frame < num_frames:
            raise DataError(f"{path}: frame {frame} is outside the episode's frames 0..{num_frames - 1}")
        if not isinstance(items, list):
            raise DataError(f"{path}: frame {frame}: expected a list of interactions")
        for item in items:
            ikey, value = _interaction(item, frame, path)
            segmentation[frame][ikey] = value
    return segmentation


def _episode_name(path: Path) -> str:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return path.stem
    return str(data.get("episode", path.stem)) if isinstance(data, dict) else path.stem


def attach_segments(
    seg_dir: str | Path,
    dataset: str | Path,
    on_plan: Callable[[int], None] | None = None,
    on_item: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Add the annotations in ``seg_dir`` to ``dataset`` as its segmentation modality.

    Episodes that already have segmentation are left as they are; bad files are reported.
    """
    seg_dir, dataset = Path(seg_dir), Path(dataset)
    if not seg_dir.is_dir():
        raise DataError(f"{seg_dir}: annotation dir does not exist")
    files = sorted(seg_dir.glob("*.json"))
    if not files:
        raise DataError(f"{seg_dir}: holds no <episode>.json annotation files")
    base = [m for m in ("image", "action", "meta_info") if m in present_modalities(dataset)]
    if not base:
        raise DataError(f"{dataset}: has no image, action or meta_info to attach segmentation to")
    with dataset_write_lock(dataset):
        store = TrajectoryStore(dataset, modalities=base)
        lengths: dict[str, int] = {}
        for modality in base:
            for name, n in store.modality_episodes(modality).items():
                lengths[name] = max(lengths.get(name, 0), n)
        report = ConversionReport()
        if on_plan is not None:
            on_plan(len(files))
        with DatasetWriter(dataset, chunk_size=store.chunk_size) as writer:
            for path in files:
                name = _episode_name(path)
                try:
                    if name not in lengths:
                        raise DataError(f"{path}: episode {name} is not in {dataset}")
                    segmentation = load_annotation(path, lengths[name])
                    if writer.write(Episode(name, segmentation=segmentation)):
                        report.converted.append(name)
                        report.frames += len(segmentation)
                    else:
                        report.already_stored.append(name)
                except DataError as exc:
                    report.failed.append((name, str(exc)))
                if on_item is not None:
                    on_item(name)
    return report
