"""A tiny dataset whose events happen at frames the tests choose.

Each episode has 16x16 frames, actions with ``attack`` = 1 exactly on event frames (so a window's
alignment shows in its actions), segmentation interactions given as (event, first, last frame) and
meta_info ``events`` given as {frame: [event names]}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minetrain.actions import BUTTONS
from minetrain.data.store import DatasetWriter, Episode

MINE_LOG = "minecraft.mine_block:minecraft:oak_log"
MINE_STONE = "minecraft.mine_block:minecraft:stone"
CRAFT = "minecraft.craft_item:minecraft:oak_planks"
KILL = "minecraft.kill_entity:minecraft:cow"

# name -> (length, segmentation interactions, meta_info events)
EPISODES: dict[str, tuple[int, list[tuple[str, int, int]], dict[int, list[str]]]] = {
    "ep-a": (100, [(MINE_LOG, 30, 40), (MINE_LOG, 41, 45), (MINE_LOG, 80, 90), (KILL, 50, 60)], {}),
    "ep-b": (90, [(MINE_STONE, 10, 21), (CRAFT, 60, 70)], {20: [MINE_STONE], 65: [MINE_STONE, MINE_LOG]}),
    "ep-c": (70, [(MINE_LOG, 2, 5), (MINE_LOG, 60, 69)], {}),
    "ep-d": (80, [(KILL, 20, 30), (MINE_LOG, 35, 50)], {}),
}


def event_frames(name: str) -> dict[str, list[int]]:
    """The occurrences the index must find in one of ``EPISODES`` (meta_info wins per event name)."""
    _, interactions, meta = EPISODES[name]
    found: dict[str, set[int]] = {}
    for event, _, last in interactions:
        found.setdefault(event, set()).add(last)
    meta_found: dict[str, set[int]] = {}
    for frame, events in meta.items():
        for event in events:
            meta_found.setdefault(event, set()).add(frame)
    found.update(meta_found)
    return {event: sorted(frames) for event, frames in found.items()}


def make_episode(
    name: str, length: int, interactions: list[tuple[str, int, int]], meta: dict[int, list[str]]
) -> Episode:
    t = np.arange(length)
    image = np.broadcast_to((t * 2 % 250).astype(np.uint8)[:, None, None, None], (length, 16, 16, 3)).copy()
    action = {key: np.zeros(length, dtype=np.int64) for key in BUTTONS}
    action["camera"] = np.zeros((length, 2), dtype=np.float32)
    segmentation: list[dict] = [{} for _ in range(length)]
    for number, (event, first, last) in enumerate(interactions):
        action["attack"][last] = 1
        for frame in range(first, last + 1):
            # Keyed as published data is: the key ends with the interaction type, ``event`` is in full.
            segmentation[frame][(str(number), event.split(":", 1)[0])] = {
                "obj_id": 2,
                "rle_mask": "1 640",
                "event": event,
                "point": (0, 320),
                "frame_id": frame,
                "frame_range": (first, last),
            }
    meta_info = [{"pitch": 0.0, "yaw": 0.0} for _ in range(length)]
    for frame, events in meta.items():
        action["attack"][frame] = 1
        meta_info[frame]["events"] = {event: 1 for event in events}
    return Episode(name, image=image, action=action, segmentation=segmentation, meta_info=meta_info)


def write_event_dataset(out: Path, names: list[str] | None = None, chunk_size: int = 16) -> Path:
    with DatasetWriter(out, chunk_size=chunk_size, image_preset="ultrafast") as writer:
        for name in names or list(EPISODES):
            writer.write(make_episode(name, *EPISODES[name]))
    return out
