"""VPT contractor recordings' JSONL steps -> env actions and per-frame ``meta_info``.

The per-frame rules are those of VPT's published loader (``data_loader.py`` and
``run_inverse_dynamics_model.py`` in openai/Video-Pre-Training):

* keys w/s/a/d/space/left.shift/left.control/q/e/1-9 -> forward/back/left/right/jump/sneak/sprint/
  drop/inventory/hotbar.N; mouse buttons 0/1 -> attack/use (pickItem, swapHands and ESC are not part
  of the env action and go to ``meta_info``);
* camera = (dy, dx) * 360/2400 degrees, kept as float (VPT's loader writes it into an int array
  and so truncates it by accident);
* attack held from the first frame is "stuck" and ignored until it is newly pressed;
* a hotbar change between frames (scroll wheel, not recorded as a key) sets ``hotbar.(N+1)``;
* ESC while a GUI is open becomes ``inventory`` (how VPT's original training treated it: both
  close the GUI); ESC without a GUI is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from minetrain.actions import BUTTONS, CAMERA_KEY
from minetrain.errors import DataError

KEY_BINDINGS = {
    "key.keyboard.w": "forward",
    "key.keyboard.s": "back",
    "key.keyboard.a": "left",
    "key.keyboard.d": "right",
    "key.keyboard.space": "jump",
    "key.keyboard.left.shift": "sneak",
    "key.keyboard.left.control": "sprint",
    "key.keyboard.q": "drop",
    "key.keyboard.e": "inventory",
    "key.keyboard.f": "swapHands",
    "key.keyboard.escape": "ESC",
    **{f"key.keyboard.{i}": f"hotbar.{i}" for i in range(1, 10)},
}
MOUSE_BUTTONS = {0: "attack", 1: "use", 2: "pickItem"}
EXTRA_KEYS = ("ESC", "swapHands", "pickItem")  # recorded, not part of the env action
CAMERA_DEGREES_PER_UNIT = 360.0 / 2400.0


def read_jsonl(path: Path) -> list[dict]:
    """One dict per line; a DataError names the first line that is not a JSON object."""
    steps = []
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                step = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}: line {number} is not valid JSON ({exc})") from None
            if not isinstance(step, dict):
                raise DataError(f"{path}: line {number} is {type(step).__name__}, expected a JSON object")
            steps.append(step)
    if not steps:
        raise DataError(f"{path}: holds no steps")
    return steps


def _field(step: dict, path: str, number: int, source: Path) -> Any:
    value: Any = step
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{source}: line {number} has no {path} field")
        value = value[part]
    return value


def _press(
    codes: Iterable[Any], bindings: Mapping[Any, str], action: dict[str, np.ndarray], extras: dict, i: int
) -> None:
    """Set step ``i`` of the actions (or ``extras``, for bound inputs that are not actions) pressed."""
    for code in codes:
        name = bindings.get(code)
        if name in action:
            action[name][i] = 1
        elif name is not None:
            extras[name] = 1


def steps_to_actions(
    steps: list[dict], source: Path = Path("<jsonl>")
) -> tuple[dict[str, np.ndarray], np.ndarray, list[dict]]:
    """Env actions, per-frame null flags and per-frame meta_info for one recording (VPT's rules)."""
    n = len(steps)
    action = {name: np.zeros(n, dtype=np.int64) for name in BUTTONS}
    camera = np.zeros((n, 2), dtype=np.float64)
    meta: list[dict] = []
    attack_stuck = False
    last_hotbar = 0
    for i, step in enumerate(steps):
        number = i + 1
        mouse = _field(step, "mouse", number, source)
        buttons = list(_field(step, "mouse.buttons", number, source))
        new_buttons = list(_field(step, "mouse.newButtons", number, source))
        keys = _field(step, "keyboard.keys", number, source)
        gui_open = bool(_field(step, "isGuiOpen", number, source))
        hotbar = int(_field(step, "hotbar", number, source))
        if i == 0:
            attack_stuck = new_buttons == [0]
        elif attack_stuck and 0 in new_buttons:
            attack_stuck = False
        if attack_stuck:
            buttons = [b for b in buttons if b != 0]
        extras = dict.fromkeys(EXTRA_KEYS, 0)
        _press(keys, KEY_BINDINGS, action, extras, i)
        if extras["ESC"] and gui_open:
            action["inventory"][i] = 1
        _press(buttons, MOUSE_BUTTONS, action, extras, i)
        camera[i] = (
            float(_field(step, "mouse.dy", number, source)) * CAMERA_DEGREES_PER_UNIT,
            float(_field(step, "mouse.dx", number, source)) * CAMERA_DEGREES_PER_UNIT,
        )
        if hotbar != last_hotbar:
            action[f"hotbar.{hotbar + 1}"][i] = 1
        last_hotbar = hotbar
        info = {
            "isGuiOpen": gui_open,
            "cursor_x": float(mouse.get("x", 0.0)),
            "cursor_y": float(mouse.get("y", 0.0)),
            "hotbar": hotbar,
            "source_frame": i,
            **extras,
        }
        for key in ("yaw", "pitch", "xpos", "ypos", "zpos"):
            if key in step:
                info[key] = step[key]
        meta.append(info)
    action[CAMERA_KEY] = camera
    pressed = np.stack([action[name] for name in BUTTONS]).any(axis=0)
    null = ~pressed & ~camera.any(axis=1)
    for info, is_null in zip(meta, null, strict=True):
        info["null_action"] = bool(is_null)
    return action, null, meta
