"""Render a stretch of one stored episode as a PNG grid or an MP4 clip, for a person to check."""

from __future__ import annotations

from pathlib import Path

from minetrain.data.render import action_row, annotate_frame, make_grid, save_clip, save_png
from minetrain.data.store import TrajectoryStore
from minetrain.data.store.codecs import rle_decode
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
    modalities = [m for m in ("image", "action", "segmentation") if m in present]
    store = TrajectoryStore(dataset_dir, modalities=modalities)
    num_frames = store.locate(episode, "image").num_frames
    if not 0 <= start < num_frames:
        raise DataError(
            f"{dataset_dir}: episode {episode} has frames 0..{num_frames - 1}; --start {start} is outside"
        )
    stop = min(num_frames, start + frames)
    images = store.read(episode, "image", start, stop)
    actions = store.read(episode, "action", start, stop) if "action" in modalities else None
    segments = store.read(episode, "segmentation", start, stop) if "segmentation" in modalities else None
    drawn = []
    for offset, image in enumerate(images):
        interactions = list(segments[offset].values()) if segments else []
        masks = [(rle_decode(v["rle_mask"]), int(v["obj_id"])) for v in interactions]
        drawn.append(
            annotate_frame(
                image,
                index=start + offset,
                masks=masks,
                events=[str(v.get("event", "")) for v in interactions],
                action=action_row(actions, offset) if actions is not None else None,
            )
        )
    if out.suffix.lower() == ".mp4":
        return save_clip(drawn, out)
    return save_png(make_grid(drawn, columns=columns), out)
