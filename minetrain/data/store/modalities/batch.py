"""The batch contract in code: every field of a batch, with its shape and dtype, for given data
parameters; the dataset's padding windows and batch buffers follow it, and tests check real
batches against it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from minetrain.data.store.modalities.base import BatchParams, Field, Modality


def window_fields(p: BatchParams) -> dict[str, Field]:
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


def batch_fields(params: BatchParams, specs: Mapping[str, Modality]) -> dict[str, Field]:
    """Every field of a batch, nested names joined by ``/`` (``env_action/camera``)."""
    fields = window_fields(params)
    for spec in specs.values():
        if spec.fields is not None:
            fields |= spec.fields(params)
    return fields


def padding_window(fields: Mapping[str, Field]) -> dict[str, Any]:
    """The per-frame fields of an all-padding window, nested; ``first`` is set (nothing continues
    into it). Copy it with ``copy_window`` before filling it in."""
    window: dict[str, Any] = {}
    for name, field in fields.items():
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
