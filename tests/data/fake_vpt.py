"""Tiny fake VPT contractor recordings (an MP4 + a jsonl) for converter tests."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np


def step(
    keys: tuple[str, ...] = (),
    buttons: tuple[int, ...] = (),
    new_buttons: tuple[int, ...] = (),
    dx: float = 0.0,
    dy: float = 0.0,
    gui: bool = False,
    hotbar: int = 0,
    x: float = 100.0,
    y: float = 100.0,
) -> dict:
    return {
        "mouse": {
            "x": x, "y": y, "dx": dx, "dy": dy, "buttons": list(buttons), "newButtons": list(new_buttons),
        },
        "keyboard": {"keys": list(keys), "newKeys": []},
        "isGuiOpen": gui,
        "hotbar": hotbar,
        "yaw": 0.0,
        "pitch": 0.0,
    }  # fmt: skip


def frame_colour(index: int) -> tuple[int, int, int]:
    return (index * 37) % 256, (index * 91) % 256, (255 - index * 13) % 256


def write_video(path: Path, frames: int, width: int = 64, height: int = 36) -> None:
    """Solid-colour frames (colour by index), 20 fps H.264."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("h264", rate=20)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[:] = frame_colour(i)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def write_recording(
    src: Path, name: str, steps: list[dict], frames: int | None = None, width: int = 64, height: int = 36
) -> tuple[Path, Path]:
    src.mkdir(parents=True, exist_ok=True)
    video, jsonl = src / f"{name}.mp4", src / f"{name}.jsonl"
    write_video(video, len(steps) if frames is None else frames, width, height)
    jsonl.write_text("".join(json.dumps(s) + "\n" for s in steps))
    return video, jsonl
