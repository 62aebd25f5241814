"""Drawing helpers that let a person check a dataset or a batch by eye.

Frames are upscaled (nearest neighbour, so small synthetic frames stay crisp) and get a caption
panel underneath with the frame index, the interaction type and event, and the decoded env action;
masks are blended over the frame in the interaction type's colour. Pillow does all the drawing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from minetrain.actions import BUTTONS, CAMERA_KEY
from minetrain.data.store.codecs import encode_video
from minetrain.errors import ConfigError
from minetrain.files import atomic_path, atomic_write_bytes

# Raw interaction ids (SPEC.md, "ROCKET-1 conditioning"); 1 is the reference's alias of 3.
INTERACTION_NAMES = {
    -1: "none", 0: "Hunt", 1: "Use", 2: "Mine", 3: "Interact", 4: "Craft", 5: "Switch", 6: "Approach",
}  # fmt: skip
INTERACTION_COLOURS = {
    0: (255, 60, 60), 1: (60, 200, 255), 2: (255, 200, 0), 3: (60, 200, 255), 4: (200, 100, 255),
    5: (60, 255, 120), 6: (255, 140, 0),
}  # fmt: skip
_SHORT_NAMES = {"forward": "fwd", "back": "back", "attack": "atk", "inventory": "inv", "sprint": "sprint"}

MIN_DISPLAY_WIDTH = 256
CAPTION_LINES = 3


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def interaction_name(obj_id: int | None) -> str:
    if obj_id is None:
        return "none"
    return INTERACTION_NAMES.get(int(obj_id), f"type {int(obj_id)}")


def action_text(action: Mapping[str, object]) -> str:
    """One line naming the pressed buttons and the camera move of one frame's env action."""
    pressed = [
        _SHORT_NAMES.get(name, name.replace("hotbar.", "hb"))
        for name in BUTTONS
        if name in action and np.asarray(action[name]).item() != 0
    ]
    text = " ".join(pressed) if pressed else "no button"
    if CAMERA_KEY in action:
        pitch, yaw = (float(v) for v in np.asarray(action[CAMERA_KEY], dtype=np.float64).reshape(2))
        if pitch or yaw:
            text += f"  cam {pitch:+.1f},{yaw:+.1f}"
    return text


def action_row(action: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Frame ``index`` of a dict of per-frame action arrays."""
    return {key: np.asarray(value)[index] for key, value in action.items()}


def overlay_mask(
    frame: np.ndarray, mask: np.ndarray, colour: Sequence[int], alpha: float = 0.5
) -> np.ndarray:
    """Blend ``colour`` over the pixels of ``mask`` (any size; resized nearest to the frame)."""
    height, width = frame.shape[:2]
    mask = np.asarray(mask)
    if mask.shape != (height, width):
        rows = np.arange(height) * mask.shape[0] // height
        cols = np.arange(width) * mask.shape[1] // width
        mask = mask[rows[:, None], cols[None, :]]
    selected = mask.astype(bool)
    out = frame.copy()
    blended = frame[selected] * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    out[selected] = blended.astype(np.uint8)
    return out


def annotate_frame(
    frame: np.ndarray,
    *,
    index: int | None = None,
    masks: Sequence[tuple[np.ndarray, int]] = (),
    events: Sequence[str] = (),
    action: Mapping[str, object] | None = None,
    width: int | None = None,
) -> np.ndarray:
    """A frame with its masks overlaid, upscaled, above a caption of index, interaction and action.

    ``masks`` holds (mask, obj_id) pairs; ``events`` the event names shown in the caption.
    """
    for mask, obj_id in masks:
        frame = overlay_mask(frame, mask, INTERACTION_COLOURS.get(int(obj_id), (255, 255, 255)))
    height, src_width = frame.shape[:2]
    width = width or max(src_width, MIN_DISPLAY_WIDTH)
    scaled_h = round(height * width / src_width)
    resample = Image.NEAREST if width >= src_width else Image.BILINEAR
    picture = Image.fromarray(frame).resize((width, scaled_h), resample)
    font_size = max(10, width // 22)
    line_h = font_size + 3
    canvas = Image.new("RGB", (width, scaled_h + CAPTION_LINES * line_h + 4), (16, 16, 16))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    kinds = ", ".join(interaction_name(obj_id) for _, obj_id in masks) or "none"
    lines = [
        (f"t={index}  " if index is not None else "") + f"interaction: {kinds}",
        "; ".join(event.replace("minecraft.", "") for event in events) or "-",
        action_text(action) if action is not None else "",
    ]
    colour = INTERACTION_COLOURS.get(int(masks[0][1]), (230, 230, 230)) if masks else (230, 230, 230)
    for row, text in enumerate(lines):
        fill = colour if row == 0 else (230, 230, 230)
        draw.text((4, scaled_h + 2 + row * line_h), text, fill=fill, font=_font(font_size))
    return np.asarray(canvas)


def make_grid(images: Sequence[np.ndarray], columns: int = 4, gap: int = 4) -> np.ndarray:
    """Tile equally sized images row by row on a dark background."""
    if not images:
        raise ConfigError("nothing to draw: no frames selected")
    height, width = images[0].shape[:2]
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 40, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[
            r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width
        ] = image
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def save_clip(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = 20) -> Path:
    """Write annotated frames as an H.264 MP4 (sizes rounded down to even for yuv420p players)."""
    stack = np.stack(frames)
    stack = stack[:, : stack.shape[1] // 2 * 2, : stack.shape[2] // 2 * 2]
    path = Path(path)
    atomic_write_bytes(path, encode_video(np.ascontiguousarray(stack), fps=fps))
    return path
