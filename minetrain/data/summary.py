"""What a dataset holds: episodes, frames, hours, resolution, modalities, gaps, interaction types.

``summarise`` answers "is this the data I think it is?" before a long training run. Modalities are
those present in any of the given dirs; an episode counts as usable only when every one of them
has it, and the rest are listed per modality (never silently left out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from minetrain.data.render import interaction_name
from minetrain.data.store import MODALITIES, TrajectoryStore, layout
from minetrain.errors import DataError, UnsafeDataError

FPS = 20


@dataclass
class DatasetSummary:
    dirs: list[str]
    modalities: list[str]
    episodes: int
    frames: int
    hours: float
    resolution: list[int] | None  # [height, width]
    chunk_sizes: list[int]
    episodes_per_modality: dict[str, int]
    frames_per_modality: dict[str, int]
    missing: dict[str, list[str]]
    interaction_frames: dict[str, int] = field(default_factory=dict)
    interactions: dict[str, int] = field(default_factory=dict)
    unreadable_chunks: int = 0


def present_modalities(dataset_dir: Path) -> list[str]:
    """Modalities with a folder in ``dataset_dir``; DataError for a missing, empty or foreign dir."""
    if not dataset_dir.is_dir():
        raise DataError(f"{dataset_dir}: dataset dir does not exist; check the path")
    if not any(dataset_dir.iterdir()):
        raise DataError(f"{dataset_dir}: dataset dir is empty; convert or copy a dataset into it")
    found = [m for m in MODALITIES if layout.modality_folder(dataset_dir, m) is not None]
    if not found:
        raise DataError(
            f"{dataset_dir}: no modality folder ({', '.join(MODALITIES)}); is this a dataset dir?"
        )
    return found


def _histogram(store: TrajectoryStore, frames: Counter, interactions: Counter) -> int:
    """Count frames and distinct interactions per type over the segmentation modality."""
    unreadable = 0
    for episode, num_frames in store.modality_episodes("segmentation").items():
        seen: set = set()
        for start in range(0, num_frames, store.chunk_size):
            try:
                chunk = store.read(episode, "segmentation", start, min(num_frames, start + store.chunk_size))
            except UnsafeDataError:
                raise
            except DataError:
                unreadable += 1
                continue
            for frame in chunk:
                for key, value in frame.items():
                    name = interaction_name(value.get("obj_id") if isinstance(value, dict) else None)
                    frames[name] += 1
                    if key not in seen:
                        seen.add(key)
                        interactions[name] += 1
    return unreadable


def summarise(dataset_dirs: Sequence[str | Path], histogram: bool = True) -> DatasetSummary:
    dirs = [Path(d) for d in dataset_dirs]
    per_dir = {d: present_modalities(d) for d in dirs}
    modalities = [m for m in MODALITIES if any(m in present for present in per_dir.values())]
    index: dict[str, dict[str, int]] = {m: {} for m in modalities}
    chunk_sizes: set[int] = set()
    resolution = None
    frames_hist: Counter = Counter()
    inter_hist: Counter = Counter()
    unreadable = 0
    for dataset_dir, present in per_dir.items():
        store = TrajectoryStore(dataset_dir, modalities=present)
        chunk_sizes.add(store.chunk_size)
        for modality in present:
            for name, n in store.modality_episodes(modality).items():
                index[modality].setdefault(name, n)
        if resolution is None and "image" in present:
            try:
                resolution = list(store.image_resolution())
            except DataError:
                unreadable += 1
        if histogram and "segmentation" in present:
            unreadable += _histogram(store, frames_hist, inter_hist)
    every = set().union(*(set(names) for names in index.values()))
    usable = set.intersection(*(set(names) for names in index.values()))
    frames = sum(min(index[m][name] for m in modalities) for name in usable)
    return DatasetSummary(
        dirs=[str(d) for d in dirs],
        modalities=modalities,
        episodes=len(usable),
        frames=frames,
        hours=frames / FPS / 3600,
        resolution=resolution,
        chunk_sizes=sorted(chunk_sizes),
        episodes_per_modality={m: len(index[m]) for m in modalities},
        frames_per_modality={m: sum(index[m].values()) for m in modalities},
        missing={m: sorted(every - set(index[m])) for m in modalities},
        interaction_frames=dict(frames_hist.most_common()),
        interactions=dict(inter_hist.most_common()),
        unreadable_chunks=unreadable,
    )
