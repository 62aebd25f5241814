"""The VPT action space that ROCKET-1 is trained on.

An *env action* is what a dataset stores per frame: one 0/1 value per key in ``BUTTONS`` and a
``camera`` move of (pitch, yaw) degrees. An *agent action* is what the policy predicts: one of
``NUM_BUTTON_CLASSES`` joint button classes and one of ``NUM_CAMERA_CLASSES`` joint camera classes.

Both directions reproduce MineStudio's ``ActionTransformer`` + ``CameraHierarchicalMapping``
(VPT's mapping) value for value, including its less obvious rules, so training targets match those
of the reference loader and checkpoints trained there act the same here:

- a button counts as pressed when its value is non-zero, but ``inventory`` only when it equals 1;
- forward+back and left+right together count as neither; sprint+sneak gives sneak, and among
  hotbar keys the highest number wins (the later option of a group wins);
- the camera-meta part of the button class says whether the quantised camera left the centre bin;
- the inventory class excludes every other button and forces the camera class to
  ``CAMERA_NULL_CLASS``; decoding it keeps the camera head's class, while decoding a class whose
  camera-meta is off yields no camera move.

Every function takes numpy arrays or torch tensors of any leading shape and returns the same kind
(tensors stay on their device). The work is element-wise arithmetic and small table look-ups.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from minetrain.errors import DataError

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")

HOTBAR_KEYS: tuple[str, ...] = tuple(f"hotbar.{i}" for i in range(1, 10))
BUTTONS: tuple[str, ...] = (
    "attack",
    "back",
    "forward",
    "jump",
    "left",
    "right",
    "sneak",
    "sprint",
    "use",
    "drop",
    "inventory",
    *HOTBAR_KEYS,
)
CAMERA_KEY = "camera"
ENV_KEYS: tuple[str, ...] = (*BUTTONS, CAMERA_KEY)

CAMERA_MAXVAL = 10
CAMERA_BINSIZE = 2
CAMERA_MU = 10
CAMERA_BINS_PER_AXIS = 2 * CAMERA_MAXVAL // CAMERA_BINSIZE + 1
CAMERA_NULL_BIN = CAMERA_BINS_PER_AXIS // 2
NUM_CAMERA_CLASSES = CAMERA_BINS_PER_AXIS**2
CAMERA_NULL_CLASS = CAMERA_NULL_BIN * CAMERA_BINS_PER_AXIS + CAMERA_NULL_BIN

# Mixed-radix digits of a button class, most significant first; option 0 of each group is "none".
BUTTON_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "hotbar": ("none", *HOTBAR_KEYS),
        "fore_back": ("none", "forward", "back"),
        "left_right": ("none", "left", "right"),
        "sprint_sneak": ("none", "sprint", "sneak"),
        "use": ("none", "use"),
        "drop": ("none", "drop"),
        "attack": ("none", "attack"),
        "jump": ("none", "jump"),
        "camera": ("none", "camera"),
    }
)
_GROUP_SIZES: tuple[int, ...] = tuple(len(options) for options in BUTTON_GROUPS.values())
INVENTORY_CLASS = math.prod(_GROUP_SIZES)
NUM_BUTTON_CLASSES = INVENTORY_CLASS + 1
NULL_BUTTON_CLASS = 0


def _is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch: no value can be one before torch is
    imported, so the data side (stores, converters, ``minetrain data``) never loads it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _xp(x: Array) -> Any:
    return sys.modules["torch"] if _is_tensor(x) else np


def _coerce(value: Any, like: Array) -> Array:
    """Brings ``value`` to the array kind (and torch device) of ``like``."""
    if _is_tensor(like):
        return sys.modules["torch"].as_tensor(value, device=like.device)
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_int64(x: Array) -> Array:
    return x.long() if _is_tensor(x) else np.asarray(x, dtype=np.int64)


def _as_float64(x: Array) -> Array:
    return x.double() if _is_tensor(x) else np.asarray(x, dtype=np.float64)


def _is_float(x: Array) -> bool:
    return x.is_floating_point() if _is_tensor(x) else np.issubdtype(x.dtype, np.floating)


def _is_int(x: Array) -> bool:
    if _is_tensor(x):
        return not x.is_floating_point() and not x.is_complex() and x.dtype != sys.modules["torch"].bool
    return np.issubdtype(x.dtype, np.integer)


def _check_range(x: Array, upper: int, what: str) -> None:
    if not _is_int(x):
        raise DataError(f"{what} must hold integers, got dtype {x.dtype}")
    empty = x.numel() == 0 if _is_tensor(x) else x.size == 0
    if not empty:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= upper:
            raise DataError(f"{what} holds {low if low < 0 else high}, outside [0, {upper})")


def quantize_camera(degrees: Array) -> Array:
    """Mu-law bin in [0, 11) of each camera component (degrees; clipped to +-CAMERA_MAXVAL).

    The float steps keep the input's precision until the division by log(1 + mu), as the
    reference does, so values next to a bin edge fall in the same bin.
    """
    degrees = degrees if _is_tensor(degrees) else np.asarray(degrees)
    xp = _xp(degrees)
    x = degrees if _is_float(degrees) else _as_float64(degrees)
    if bool(xp.isnan(x).any()):
        raise DataError("camera holds NaN; camera moves must be finite degrees")
    x = x.clip(-CAMERA_MAXVAL, CAMERA_MAXVAL) / CAMERA_MAXVAL
    compressed = _as_float64(xp.log(1.0 + CAMERA_MU * abs(x))) / math.log(1.0 + CAMERA_MU)
    encoded = xp.sign(x) * compressed * CAMERA_MAXVAL
    return _as_int64(xp.round((encoded + CAMERA_MAXVAL) / CAMERA_BINSIZE))


def _camera_bin_degrees() -> np.ndarray:
    centred = (np.arange(CAMERA_BINS_PER_AXIS) * CAMERA_BINSIZE - CAMERA_MAXVAL) / CAMERA_MAXVAL
    expanded = np.sign(centred) * (1.0 / CAMERA_MU) * ((1.0 + CAMERA_MU) ** np.abs(centred) - 1.0)
    return expanded * CAMERA_MAXVAL


def _button_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per button class: the 0/1 value of every key in BUTTONS, and whether camera-meta is off."""
    digits = np.unravel_index(np.arange(INVENTORY_CLASS), _GROUP_SIZES)
    pressed = np.zeros((NUM_BUTTON_CLASSES, len(BUTTONS)), dtype=np.int64)
    for digit, options in zip(digits, BUTTON_GROUPS.values(), strict=True):
        for choice, name in enumerate(options[1:], start=1):
            if name in BUTTONS:
                pressed[:INVENTORY_CLASS, BUTTONS.index(name)] |= digit == choice
    pressed[INVENTORY_CLASS, BUTTONS.index("inventory")] = 1
    camera_off = np.zeros(NUM_BUTTON_CLASSES, dtype=bool)
    camera_off[:INVENTORY_CLASS] = digits[-1] == 0
    return pressed, camera_off


_CAMERA_DEGREES = _camera_bin_degrees()
_BUTTON_PRESSED, _BUTTON_CAMERA_OFF = _button_tables()
for _table in (_CAMERA_DEGREES, _BUTTON_PRESSED, _BUTTON_CAMERA_OFF):
    _table.flags.writeable = False


@functools.lru_cache(maxsize=8)
def _torch_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The look-up tables as tensors, built once per device."""
    import torch

    return tuple(
        torch.tensor(t, device=device) for t in (_CAMERA_DEGREES, _BUTTON_PRESSED, _BUTTON_CAMERA_OFF)
    )


def _tables(like: Array) -> tuple[Array, Array, Array]:
    if _is_tensor(like):
        return _torch_tables(like.device)
    return _CAMERA_DEGREES, _BUTTON_PRESSED, _BUTTON_CAMERA_OFF


def dequantize_camera(bins: Array) -> Array:
    """Degrees (float64) at the centre of each mu-law camera bin in [0, 11)."""
    bins = bins if _is_tensor(bins) else np.asarray(bins)
    _check_range(bins, CAMERA_BINS_PER_AXIS, "camera bins")
    return _tables(bins)[0][_as_int64(bins)]


def camera_class(bins: Array) -> Array:
    """Joint camera class of (..., 2) (pitch bin, yaw bin) pairs."""
    return bins[..., 0] * CAMERA_BINS_PER_AXIS + bins[..., 1]


def camera_bins(classes: Array) -> Array:
    """(..., 2) (pitch bin, yaw bin) pairs of joint camera classes."""
    return _xp(classes).stack([classes // CAMERA_BINS_PER_AXIS, classes % CAMERA_BINS_PER_AXIS], axis=-1)


def _read_env(env: Mapping[str, Any]) -> tuple[Array, dict[str, Array]]:
    if not isinstance(env, Mapping):
        raise DataError(f"env action must be a mapping of key -> array, got {type(env).__name__}")
    missing = [key for key in ENV_KEYS if key not in env]
    if missing:
        raise DataError(f"env action is missing key(s) {', '.join(missing)}; it needs {', '.join(ENV_KEYS)}")
    camera = env[CAMERA_KEY]
    camera = camera if _is_tensor(camera) else _coerce(camera, np.empty(0))
    if camera.ndim == 0 or camera.shape[-1] != 2:
        raise DataError(f"env action key 'camera' has shape {tuple(camera.shape)}; expected (..., 2)")
    shape = tuple(camera.shape[:-1])
    buttons = {}
    for key in BUTTONS:
        buttons[key] = _coerce(env[key], camera)
        if tuple(buttons[key].shape) != shape:
            raise DataError(
                f"env action key '{key}' has shape {tuple(buttons[key].shape)} but 'camera' has "
                f"{tuple(camera.shape)}; every button needs the camera's shape without its last axis"
            )
    return camera, buttons


def env_to_agent(env: Mapping[str, Any]) -> dict[str, Array]:
    """Agent action ``{"buttons", "camera"}`` (int64 classes) of an env action; extra keys are ignored."""
    camera, buttons = _read_env(env)
    xp = _xp(camera)
    pressed = {key: _as_int64(value != 0) for key, value in buttons.items()}
    bins = quantize_camera(camera)

    hotbar = xp.zeros_like(pressed["attack"])
    for number, key in enumerate(HOTBAR_KEYS, start=1):
        hotbar = xp.where(pressed[key] != 0, number, hotbar)
    fore, back, left, right = (pressed[key] for key in ("forward", "back", "left", "right"))
    digits = (
        hotbar,
        xp.where((fore & back) != 0, 0, fore + 2 * back),
        xp.where((left & right) != 0, 0, left + 2 * right),
        xp.where(pressed["sneak"] != 0, 2, pressed["sprint"]),
        pressed["use"],
        pressed["drop"],
        pressed["attack"],
        pressed["jump"],
        _as_int64((bins != CAMERA_NULL_BIN).any(-1)),
    )
    button_class = xp.zeros_like(hotbar)
    for digit, size in zip(digits, _GROUP_SIZES, strict=True):
        button_class = button_class * size + digit

    inventory = buttons["inventory"] == 1
    return {
        "buttons": _as_int64(xp.where(inventory, INVENTORY_CLASS, button_class)),
        "camera": _as_int64(xp.where(inventory, CAMERA_NULL_CLASS, camera_class(bins))),
    }


def agent_to_env(agent: Mapping[str, Any]) -> dict[str, Array]:
    """Env action of an agent action: int64 0/1 per key in BUTTONS and float64 (..., 2) camera degrees."""
    if not isinstance(agent, Mapping):
        raise DataError(
            f"agent action must be a mapping with 'buttons' and 'camera', got {type(agent).__name__}"
        )
    missing = [key for key in ("buttons", "camera") if key not in agent]
    if missing:
        raise DataError(f"agent action is missing key(s) {', '.join(missing)}; it needs buttons and camera")
    buttons = agent["buttons"]
    buttons = buttons if _is_tensor(buttons) else _coerce(buttons, np.empty(0))
    camera = _coerce(agent["camera"], buttons)
    if tuple(buttons.shape) != tuple(camera.shape):
        raise DataError(
            f"agent action keys 'buttons' {tuple(buttons.shape)} and 'camera' {tuple(camera.shape)} "
            "must have the same shape"
        )
    _check_range(buttons, NUM_BUTTON_CLASSES, "agent action 'buttons'")
    _check_range(camera, NUM_CAMERA_CLASSES, "agent action 'camera'")
    xp = _xp(buttons)
    degrees, pressed_table, camera_off_table = _tables(buttons)
    buttons, camera = _as_int64(buttons), _as_int64(camera)
    pressed = pressed_table[buttons]
    bins = xp.where(camera_off_table[buttons][..., None], CAMERA_NULL_BIN, camera_bins(camera))
    env = {key: pressed[..., i] for i, key in enumerate(BUTTONS)}
    env[CAMERA_KEY] = degrees[bins]
    return env
