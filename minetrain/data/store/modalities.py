"""The modalities a dataset stores, one record each, and the batch they make: the batch contract.

A ``Modality`` says where a modality lives (its folder names), how a chunk of it is read (an MP4
the store decodes, or a pickle sliced and joined here), how ``verify`` checks a chunk, which batch
fields it produces and how ``view`` draws it. ``batch_fields`` is the batch contract in code: every
field of a batch, with its shape and dtype, for given data parameters; the dataset's padding
windows and batch buffers follow it, and tests check real batches against it.

Adding a modality is a record in ``MODALITY_SPECS`` plus a test. It lives in the store package,
which reads it first (``layout``'s folder names), and imports nothing of ``minetrain.data`` outside
the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minetrain.actions import BUTTONS, CAMERA_KEY, ENV_KEYS
from minetrain.data.store.codecs import decode_video, rle_decode
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import DataError


@dataclass(frozen=True)
class Field:
    """One batch field: ``shape`` batch first, ``dtype`` numpy's (the tensor has torch's equivalent).

    ``dtype`` ``str``: a list (per window) of strings, or of lists of ``win_len`` strings when the
    shape has a frame axis; ``dict``: field name -> per window a list of ``win_len`` values.
    ``fill``: how it is filled -- ``"frames"`` per window, ``pad`` on padding frames;
    ``"buffer"`` decoded into a reused uint8 batch buffer; ``"batch"`` computed for the whole batch;
    ``"window"`` one value per window.
    """

    shape: tuple[int, ...]
    dtype: Any
    fill: str = "frames"
    pad: Any = 0


@dataclass(frozen=True)
class BatchParams:
    """The data parameters a batch's fields depend on (``stored_size``: (h, w) of yuv420 planes)."""

    batch_size: int
    win_len: int
    frame_width: int
    frame_height: int
    stored_size: tuple[int, int] | None = None
    enable_segment: bool = True
    enable_prev_action: bool = False
    enable_contractor_info: bool = False
    mode: str = "raw"


@dataclass(frozen=True)
class Modality:
    """One stored modality.

    ``folders``: folder names readers accept, the first the one written. ``video``: chunks are MP4s
    the store decodes; otherwise pickles, cut by ``take(value, expected, lo, hi)`` (None if the chunk
    does not hold ``expected`` frames) and joined by ``join``. ``check(data, expected)`` raises
    DataError unless a chunk's bytes hold ``expected`` good frames. ``fields`` are its batch fields
    (None: never batched); ``draw(value, offset)`` the ``render.annotate_frame`` arguments of a frame.
    ``required``: a dataset without it has nothing to train on.
    """

    name: str
    folders: tuple[str, ...]
    check: Callable[[bytes, int], None]
    video: bool = False
    take: Callable[[Any, int, int, int], Any] | None = None
    join: Callable[[list[Any]], Any] | None = None
    fields: Callable[[BatchParams], dict[str, Field]] | None = None
    draw: Callable[[Any, int], dict[str, Any]] | None = None
    required: bool = False


def _check_video(data: bytes, expected: int) -> None:
    frames = decode_video(data)
    if len(frames) != expected:
        raise DataError(f"MP4 holds {len(frames)} frames, expected {expected}")


def _image_fields(p: BatchParams) -> dict[str, Field]:
    b, t = p.batch_size, p.win_len
    if p.stored_size is None:
        return {"image": Field((b, t, p.frame_height, p.frame_width, 3), np.uint8, "buffer")}
    height, width = p.stored_size
    return {
        "image": Field((b, t, height * 3 // 2, width), np.uint8, "buffer"),
        "frame_size": Field((b, 2), np.int64, "batch"),
    }


def _take_action(value: Any, expected: int, lo: int, hi: int) -> dict[str, np.ndarray] | None:
    ok = isinstance(value, dict) and all(
        isinstance(v, np.ndarray) and v.ndim and len(v) >= expected for v in value.values()
    )
    return {key: array[lo:hi] for key, array in value.items()} if ok else None


def _join_action(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = pieces[0].keys()
    if any(piece.keys() != keys for piece in pieces):
        raise DataError("action chunks disagree on their keys; re-convert this episode")
    return {key: np.concatenate([piece[key] for piece in pieces]) for key in keys}


def _check_action(data: bytes, expected: int) -> None:
    value = load_pickle(data, "", "re-convert this episode")
    if not isinstance(value, dict) or not value:
        raise DataError(f"holds {type(value).__name__}, expected a dict of per-frame arrays")
    lengths = {key: len(v) if isinstance(v, np.ndarray) and v.ndim else None for key, v in value.items()}
    bad = {key: n for key, n in lengths.items() if n != expected}
    if bad:
        detail = ", ".join(f"{key}={n if n is not None else 'not an array'}" for key, n in bad.items())
        raise DataError(f"action arrays must have {expected} rows; {detail}")
    camera = value.get("camera")
    if camera is not None and camera.shape[1:] != (2,):
        raise DataError(f"camera has shape {camera.shape}, expected ({expected}, 2)")


def _action_fields(p: BatchParams) -> dict[str, Field]:
    b, t = p.batch_size, p.win_len
    env = {key: Field((b, t), np.int64) for key in BUTTONS} | {CAMERA_KEY: Field((b, t, 2), np.float32)}
    agent = {key: Field((b, t), np.int64, "batch") for key in ("buttons", "camera")}
    prefixes = ("env_action", "agent_action")
    if p.enable_prev_action:
        prefixes += ("env_prev_action", "agent_prev_action")
    return {
        f"{prefix}/{key}": field
        for prefix in prefixes
        for key, field in (env if prefix.startswith("env") else agent).items()
    }


def _draw_action(action: Mapping[str, np.ndarray], offset: int) -> dict[str, Any]:
    return {"action": {key: np.asarray(value)[offset] for key, value in action.items()}}


def aggregate_actions(action: dict[str, np.ndarray], stride: int) -> dict[str, np.ndarray]:
    """Env actions of every ``stride``-th frame, each covering the frames up to the next kept one.

    Camera moves are summed; every other key takes its maximum (a button counts as pressed if it
    was pressed on any of those frames). The agent action is computed from the aggregate; the
    previous action of kept frame t (``enable_prev_action``) is the aggregate of [t - k, t), zero
    at the start of an episode.
    """
    if stride == 1:
        return action
    length = len(next(iter(action.values())))
    starts = np.arange(0, length, stride)
    return {
        key: np.add.reduceat(value, starts, axis=0)
        if key == CAMERA_KEY
        else np.maximum.reduceat(value, starts, axis=0)
        for key, value in action.items()
    }


def env_action_rows(action: dict[str, np.ndarray], length: int, where: str) -> dict[str, np.ndarray]:
    """The VPT env-action keys as int64 buttons and float32 camera, zero-padded to ``length`` rows.

    Keys beyond the VPT set (e.g. ``ESC``) are left out so that every batch has the same keys.
    """
    missing = [key for key in ENV_KEYS if key not in action]
    if missing:
        raise DataError(f"{where}: action chunk lacks key(s) {', '.join(missing)}; re-convert this episode")
    rows = {}
    for key in ENV_KEYS:
        value = np.asarray(action[key], dtype=np.float32 if key == CAMERA_KEY else np.int64)
        out = np.zeros((length, *value.shape[1:]), dtype=value.dtype)
        out[: len(value)] = value
        rows[key] = out
    return rows


def zero_env_action(length: int) -> dict[str, np.ndarray]:
    """``length`` rows of the null env action, in the dtypes of ``env_action_rows``."""
    return {
        key: np.zeros((length, 2), dtype=np.float32)
        if key == CAMERA_KEY
        else np.zeros(length, dtype=np.int64)
        for key in ENV_KEYS
    }


def _take_frames(value: Any, expected: int, lo: int, hi: int) -> list | None:
    return value[lo:hi] if isinstance(value, list) and len(value) >= expected else None


def _join_frames(pieces: list[list]) -> list:
    return [frame for piece in pieces for frame in piece]


def _frame_dicts(data: bytes, expected: int) -> list[dict]:
    value = load_pickle(data, "", "re-convert this episode")
    if not isinstance(value, list) or not all(isinstance(frame, dict) for frame in value):
        raise DataError(f"holds {type(value).__name__}, expected a list with one dict per frame")
    if len(value) != expected:
        raise DataError(f"holds {len(value)} frames, expected {expected}")
    return value


def _check_meta_info(data: bytes, expected: int) -> None:
    _frame_dicts(data, expected)


def _check_segmentation(data: bytes, expected: int) -> None:
    for offset, frame in enumerate(_frame_dicts(data, expected)):
        for key, value in frame.items():
            if not isinstance(value, dict) or "rle_mask" not in value or "obj_id" not in value:
                raise DataError(f"frame {offset} interaction {key!r} lacks rle_mask/obj_id")
            try:
                rle_decode(value["rle_mask"])
            except DataError as exc:
                raise DataError(f"frame {offset} interaction {key!r}: {exc}") from None


def _segment_fields(p: BatchParams) -> dict[str, Field]:
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


def _draw_segmentation(frames: Sequence[Mapping], offset: int) -> dict[str, Any]:
    interactions = list(frames[offset].values())
    return {
        "masks": [(rle_decode(v["rle_mask"]), int(v["obj_id"])) for v in interactions],
        "events": [str(v.get("event", "")) for v in interactions],
    }


def _meta_info_fields(p: BatchParams) -> dict[str, Field]:
    if not p.enable_contractor_info:
        return {}
    return {"meta_info": Field((p.batch_size, p.win_len), dict, pad=None)}


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


MODALITY_SPECS: dict[str, Modality] = {
    spec.name: spec
    for spec in (
        Modality("image", ("image", "video"), _check_video, video=True, fields=_image_fields, required=True),
        Modality(
            "action",
            ("action",),
            _check_action,
            take=_take_action,
            join=_join_action,
            fields=_action_fields,
            draw=_draw_action,
            required=True,
        ),
        Modality(
            "segmentation",
            ("segmentation", "segment"),
            _check_segmentation,
            take=_take_frames,
            join=_join_frames,
            fields=_segment_fields,
            draw=_draw_segmentation,
        ),
        Modality(
            "meta_info",
            ("meta_info", "contractor_info"),
            _check_meta_info,
            take=_take_frames,
            join=_join_frames,
            fields=_meta_info_fields,
        ),
    )
}


def _window_fields(p: BatchParams) -> dict[str, Field]:
    """Fields of every window whatever it stores: which frames are real and where they come from."""
    b, t = p.batch_size, p.win_len
    fields = {
        "mask": Field((b, t), np.uint8),
        "timestamp": Field((b, t), np.int64, pad=-1),
        "first": Field((b, t), np.bool_, pad=False),
        "episode": Field((b,), str, "window"),
    }
    if p.mode == "event":
        fields |= {"event": Field((b,), str, "window"), "text": Field((b,), str, "window")}
    return fields


def batch_fields(params: BatchParams) -> dict[str, Field]:
    """Every field of a batch, nested names joined by ``/`` (``env_action/camera``)."""
    fields = _window_fields(params)
    for spec in MODALITY_SPECS.values():
        if spec.fields is not None:
            fields |= spec.fields(params)
    return fields


def padding_window(params: BatchParams) -> dict[str, Any]:
    """The per-frame fields of an all-padding window, nested; ``first`` is set (nothing continues
    into it). Copy it with ``copy_window`` before filling it in."""
    window: dict[str, Any] = {}
    for name, field in batch_fields(params).items():
        if field.fill != "frames":
            continue
        *parents, key = name.split("/")
        node = window
        for parent in parents:
            node = node.setdefault(parent, {})
        length, rest = field.shape[1], field.shape[2:]
        if field.dtype is str:
            node[key] = [field.pad] * length
        elif field.dtype is dict:
            node[key] = {}
        else:
            node[key] = np.full((length, *rest), field.pad, dtype=field.dtype)
    window["first"][0] = True
    return window


_COPIED = (np.ndarray, list)  # a constant: ``np.ndarray | list`` in the loop builds a union per field


def copy_window(window: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``padding_window``'s window whose arrays, lists and dicts can be written to."""
    copy: dict[str, Any] = {}
    for key, value in window.items():
        if isinstance(value, _COPIED):
            copy[key] = value.copy()
        elif isinstance(value, dict):
            copy[key] = copy_window(value)
        else:
            copy[key] = value
    return copy
