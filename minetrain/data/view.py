"""Render a stretch of one stored episode as a PNG grid or an MP4 clip, for a person to check."""

from __future__ import annotations

from pathlib import Path

from minetrain.data.render import annotate_frame, make_grid, save_clip, save_png
from minetrain.data.store import TrajectoryStore
from minetrain.data.store.modalities import MODALITY_SPECS
from minetrain.data.summary import present_modalities
from minetrain.errors import DataError


def render_episode(
    dataset_dir: str | Path, episode: str, start: int, frames: int, out: str | Path, columns: int = 4
) -> Path:
    """Draw frames [start, start + frames) of ``episode`` (clipped to its end) into ``out``."""
    dataset_dir, out = Path(dataset_dir), Path(out)
    present = present_modalities(dataset_dir)
    if "image" not in present:
        raise DataError(f"{dataset_dir}: has no image modality to view")
    # The image is the canvas; the other modalities with a ``draw`` annotate it.
    drawn_on = [m for m, spec in MODALITY_SPECS.items() if m in present and spec.draw is not None]
    store = TrajectoryStore(dataset_dir, modalities=["image", *drawn_on])
    num_frames = store.locate(episode, "image").num_frames
    if not 0 <= start < num_frames:
        raise DataError(
            f"{dataset_dir}: episode {episode} has frames 0..{num_frames - 1}; --start {start} is outside"
        )
    stop = min(num_frames, start + frames)
    values = {m: store.read(episode, m, start, stop) for m in drawn_on}
    drawn = []
    for offset, image in enumerate(store.read(episode, "image", start, stop)):
        notes = {}
        for modality, value in values.items():
            notes |= MODALITY_SPECS[modality].draw(value, offset)
        drawn.append(annotate_frame(image, index=start + offset, **notes))
    if out.suffix.lower() == ".mp4":
        return save_clip(drawn, out)
    return save_png(make_grid(drawn, columns=columns), out)
