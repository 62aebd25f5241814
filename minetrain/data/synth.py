"""Deterministic synthetic datasets whose actions can be learned from the frames.

Every test and the demo need a dataset with all four modalities that a small policy can actually
fit, so that "BC loss goes down" is a meaningful check. Each frame therefore *shows* the action
taken on it:

* a white marker on an 11x11 grid over the scene: its cell is the (pitch, yaw) camera bin of the
  action (the centre cell means "no camera move");
* a strip of 11 button lamps at the bottom (attack, back, forward, jump, left, right, sneak, sprint,
  use, drop, inventory), lit in the button's colour when pressed, and a 9-slot hotbar row whose
  slot lights up when its hotbar key is pressed;
* during an interaction, a target object (a coloured box, colour by interaction type) that the
  camera turns towards; its box is the segmentation mask, and the buttons follow the interaction
  type (mine/hunt -> attack, interact -> use, approach -> forward+sprint, ...).

Episodes are split into segments of varied length, most of them interactions, some idle. Episode
lengths vary around the requested mean and are never a multiple of 32, so the short last chunk of
the store is always exercised. Everything is drawn from ``numpy.random.default_rng((seed, i))``:
episode i is the same whatever the number of episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minetrain.actions import BUTTONS, CAMERA_BINS_PER_AXIS, CAMERA_NULL_BIN, HOTBAR_KEYS, dequantize_camera
from minetrain.data.store import DatasetWriter, Episode
from minetrain.data.store.modalities import MODALITY_SPECS, SyntheticEpisode, Target
from minetrain.errors import ConfigError

BUTTON_LAMPS = tuple(name for name in BUTTONS if name not in HOTBAR_KEYS)

LAMP_COLOURS = np.array(
    [
        (230, 40, 40), (40, 90, 230), (40, 200, 60), (240, 230, 40), (230, 120, 30), (160, 60, 220),
        (40, 220, 220), (250, 120, 200), (250, 250, 250), (140, 90, 40), (120, 240, 140),
    ],
    dtype=np.uint8,
)  # fmt: skip

# Raw interaction ids of SPEC.md ("ROCKET-1 conditioning") with an event of that kind.
INTERACTIONS = {
    0: ("hunt", "minecraft.kill_entity:minecraft:cow", (170, 110, 70)),
    2: ("mine", "minecraft.mine_block:minecraft:oak_log", (110, 80, 40)),
    3: ("interact", "minecraft.use_item:minecraft:crafting_table", (200, 160, 90)),
    4: ("craft", "minecraft.craft_item:minecraft:oak_planks", (220, 200, 130)),
    5: ("switch", "minecraft.custom:minecraft:switch_hotbar", (90, 90, 200)),
    6: ("approach", "minecraft.custom:minecraft:approach", (60, 170, 170)),
}

# Objects stay in the top of the frame, above the lamp strips (see ``_lamp_layout``).
SCENE_FRACTION = 0.74
SCREEN_CENTRE = np.array((SCENE_FRACTION / 2, 0.5))

CAMERA_BINS = CAMERA_BINS_PER_AXIS
NO_MOVE_BIN = CAMERA_NULL_BIN


def camera_bin_centres() -> np.ndarray:
    """Degrees at the centre of each camera bin: env->agent->env maps them to themselves."""
    return dequantize_camera(np.arange(CAMERA_BINS))


@dataclass(frozen=True)
class _Segment:
    start: int
    stop: int
    obj_id: int | None  # None: idle segment, no interaction


def episode_lengths(episodes: int, frames: int, seed: int) -> list[int]:
    """Lengths within +-25% of ``frames``, never a multiple of 32 (so every episode ends in a short chunk)."""
    rng = np.random.default_rng((seed, 1 << 20))
    low, high = max(1, round(frames * 0.75)), max(1, round(frames * 1.25))
    lengths = rng.integers(low, high + 1, size=episodes)
    return [int(n + 1 if n % 32 == 0 else n) for n in lengths]


def _segments(rng: np.random.Generator, length: int) -> list[_Segment]:
    kinds = sorted(INTERACTIONS)
    segments, start = [], 0
    while start < length:
        stop = min(length, start + int(rng.integers(8, 49)))
        obj_id = None if rng.random() < 0.2 else int(rng.choice(kinds))
        segments.append(_Segment(start, stop, obj_id))
        start = stop
    return segments


def _object_box(centre: np.ndarray, half: np.ndarray) -> tuple[float, float, float, float]:
    """Normalised (top, left, bottom, right) of a box, clipped to the frame."""
    top, left = np.clip(centre - half, 0.0, SCENE_FRACTION)
    bottom, right = np.clip(centre + half, 0.0, (SCENE_FRACTION, 1.0))
    return float(top), float(left), float(bottom), float(right)


def _camera_bin_towards(offset: float, rng: np.random.Generator) -> int:
    """A bin that turns towards a normalised offset from the screen centre (0 when already there)."""
    steps = int(np.clip(np.round(offset * 10), -5, 5))
    if steps != 0 and rng.random() < 0.15:
        steps -= int(np.sign(steps))
    return NO_MOVE_BIN + steps


def _simulate(rng: np.random.Generator, length: int) -> tuple[dict[str, np.ndarray], list, list]:
    """Actions, per-frame object boxes (or None) and segment ids of one episode."""
    buttons = {name: np.zeros(length, dtype=np.int64) for name in BUTTONS}
    cam_bins = np.full((length, 2), NO_MOVE_BIN, dtype=np.int64)
    boxes: list[tuple[float, float, float, float] | None] = [None] * length
    owner: list[tuple[int, _Segment] | None] = [None] * length
    for seg_idx, seg in enumerate(_segments(rng, length)):
        centre = rng.uniform((0.1, 0.1), (SCENE_FRACTION - 0.1, 0.9))
        half = rng.uniform(0.06, 0.16, size=2)
        held = {name: int(rng.random() < 0.3) for name in ("forward", "left", "sneak")}
        hotbar = int(rng.integers(1, 10))
        for t in range(seg.start, seg.stop):
            first = t == seg.start
            if seg.obj_id is None:
                if first or rng.random() < 0.2:
                    cam_bins[t] = rng.integers(0, CAMERA_BINS, size=2)
                else:
                    cam_bins[t] = cam_bins[t - 1]
                for name, on in held.items():
                    buttons[name][t] = on
                buttons["jump"][t] = int(rng.random() < 0.1)
                continue
            owner[t] = (seg_idx, seg)
            boxes[t] = _object_box(centre, half)
            offset = (centre - SCREEN_CENTRE) / (SCENE_FRACTION, 1.0)
            cam_bins[t] = (_camera_bin_towards(offset[0], rng), _camera_bin_towards(offset[1], rng))
            if seg.obj_id in (0, 2):
                buttons["attack"][t] = 1
                buttons["forward"][t] = int(seg.obj_id == 0 and half.prod() < 0.01)
            elif seg.obj_id == 3:
                buttons["use"][t] = 1
            elif seg.obj_id == 4:
                buttons["inventory"][t] = int(first)
                buttons["use"][t] = int(not first)
                cam_bins[t] = NO_MOVE_BIN
            elif seg.obj_id == 5:
                buttons[f"hotbar.{hotbar}"][t] = int(first)
                buttons["use"][t] = int(not first)
            else:
                buttons["forward"][t] = 1
                buttons["sprint"][t] = 1
                buttons["jump"][t] = int(rng.random() < 0.1)
                half = np.minimum(half * 1.03, 0.3)
            # The camera move shifts the object towards the screen centre on the next frame.
            centre = centre - (cam_bins[t] - NO_MOVE_BIN) / 20.0 * (SCENE_FRACTION, 1.0)
            centre = np.clip(centre, 0.05, (SCENE_FRACTION - 0.05, 0.95))
    centres = camera_bin_centres()
    action = dict(buttons)
    action["camera"] = centres[cam_bins].astype(np.float32)
    return action, boxes, owner


def _lamp_layout(size: int) -> tuple[int, int]:
    """Scene height (= top row of the lamp strip) and top row of the hotbar row."""
    strip = size // 8
    return size - 2 * strip, size - strip


def _background(rng: np.random.Generator, size: int, length: int, yaw_px: np.ndarray) -> np.ndarray:
    sky = rng.integers(90, 200, size=3)
    ground = rng.integers(30, 140, size=3)
    horizon = int(size * rng.uniform(0.3, 0.5))
    texture_w = size * 4
    stripes = (np.sin(np.arange(texture_w) * (2 * np.pi / max(6, size // 6))) > 0).astype(np.int16) * 25
    frames = np.empty((length, size, size, 3), dtype=np.uint8)
    frames[:, :horizon] = sky.astype(np.uint8)
    cols = (np.arange(size)[None, :] + yaw_px[:, None]) % texture_w
    ground_rows = np.clip(ground[None, None, :] + stripes[cols][:, :, None], 0, 255).astype(np.uint8)
    frames[:, horizon:] = ground_rows[:, None, :, :]
    return frames


def render_frames(
    rng: np.random.Generator, action: dict[str, np.ndarray], boxes: list, obj_ids: list, size: int
) -> np.ndarray:
    """Draw one episode's frames: scene, target object, camera marker, button lamps and hotbar."""
    length = len(boxes)
    yaw_px = np.cumsum(np.round(action["camera"][:, 1] * size / 40.0)).astype(np.int64)
    frames = _background(rng, size, length, yaw_px)
    scene_h, hotbar_top = _lamp_layout(size)
    strip_h = size - hotbar_top
    frames[:, scene_h:] = 20
    cell = size / CAMERA_BINS
    marker = max(2, int(cell * 0.6))
    centres = camera_bin_centres()
    pitch_bin = np.abs(action["camera"][:, 0:1] - centres[None]).argmin(axis=1)
    yaw_bin = np.abs(action["camera"][:, 1:2] - centres[None]).argmin(axis=1)
    lamp_w = size / len(BUTTON_LAMPS)
    slot_w = size / len(HOTBAR_KEYS)
    for t in range(length):
        frame = frames[t]
        if boxes[t] is not None:
            top, left, bottom, right = (round(v * size) for v in boxes[t])
            frame[top:bottom, left:right] = INTERACTIONS[obj_ids[t]][2]
        row = int(pitch_bin[t] * scene_h / CAMERA_BINS + (scene_h / CAMERA_BINS - marker) / 2)
        col = int(yaw_bin[t] * cell + (cell - marker) / 2)
        frame[max(0, row - 1) : row + marker + 1, max(0, col - 1) : col + marker + 1] = 0
        frame[row : row + marker, col : col + marker] = 255
        for i, name in enumerate(BUTTON_LAMPS):
            x0, x1 = int(i * lamp_w) + 1, int((i + 1) * lamp_w) - 1
            colour = LAMP_COLOURS[i] if action[name][t] else (60, 60, 60)
            frame[scene_h + 1 : hotbar_top - 1, x0:x1] = colour
        for i, name in enumerate(HOTBAR_KEYS):
            x0, x1 = int(i * slot_w) + 1, int((i + 1) * slot_w) - 1
            colour = (255, 255, 255) if action[name][t] else (90, 90, 90)
            frame[hotbar_top + 1 : hotbar_top + strip_h - 1, x0:x1] = colour
    return frames


def synth_episode(index: int, length: int, size: int = 64, seed: int = 0) -> Episode:
    """Episode ``index`` of the synthetic dataset with seed ``seed``: every modality that has a
    ``synthesize`` in its record (``modalities``)."""
    if length < 1 or size < 16:
        raise ConfigError(f"synthetic episode needs length >= 1 and size >= 16, got {length} and {size}")
    rng = np.random.default_rng((seed, index))
    action, boxes, owner = _simulate(rng, length)
    obj_ids = [o[1].obj_id if o else None for o in owner]
    frames = render_frames(rng, action, boxes, obj_ids, size)
    targets = [
        None
        if o is None
        else Target(o[0], o[1].start, o[1].stop, o[1].obj_id, INTERACTIONS[o[1].obj_id][1], boxes[t])
        for t, o in enumerate(owner)
    ]
    shown = SyntheticEpisode(frames, action, targets)
    values = {name: spec.synthesize(shown) for name, spec in MODALITY_SPECS.items() if spec.synthesize}
    return Episode(f"synth{seed}-{index:04d}", **values)


def write_synthetic_dataset(
    out_dir: str | Path,
    episodes: int = 8,
    frames: int = 300,
    size: int = 64,
    seed: int = 0,
    chunk_size: int = 32,
    lengths: list[int] | None = None,
) -> Path:
    """Write a synthetic dataset to ``out_dir`` and return it; ``lengths`` overrides the random lengths."""
    if episodes < 1 or frames < 1:
        raise ConfigError(f"synth needs --episodes >= 1 and --frames >= 1, got {episodes} and {frames}")
    if lengths is None:
        lengths = episode_lengths(episodes, frames, seed)
    out = Path(out_dir)
    write_synthetic_episodes(out, lengths, size=size, seed=seed, chunk_size=chunk_size)
    return out


def write_synthetic_episodes(
    out_dir: str | Path, lengths: list[int], size: int = 64, seed: int = 0, chunk_size: int = 32
) -> tuple[dict[str, int], list[str]]:
    """Write episode i of ``lengths`` unless stored already: ({written name: frames}, skipped names)."""
    written = {}
    with DatasetWriter(out_dir, chunk_size=chunk_size) as writer:
        for index, length in enumerate(lengths):
            episode = synth_episode(index, length, size=size, seed=seed)
            if writer.write(episode):
                written[episode.name] = length
    return written, writer.skipped
