"""What a dataset holds: episodes, frames, hours, resolution, modalities, gaps, interaction types.

``summarise`` answers "is this the data I think it is?" before a long training run. Modalities are
those present in any of the given dirs; an episode counts as usable only when every one of them
has it, and the rest are listed per modality (never silently left out).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av

from minetrain.data.render import interaction_name
from minetrain.data.store import MODALITIES, TrajectoryStore, layout
from minetrain.data.store.reader import length_mismatches
from minetrain.errors import DataError, UnsafeDataError

FPS = 20


@dataclass
class DatasetSummary:
    dirs: list[str]
    modalities: list[str]
    episodes: int
    frames: int
    hours: float
    resolution: list[int] | None  # [height, width], the most common one
    chunk_sizes: list[int]
    episodes_per_modality: dict[str, int]
    frames_per_modality: dict[str, int]
    missing: dict[str, list[str]]
    interaction_frames: dict[str, int] = field(default_factory=dict)
    interactions: dict[str, int] = field(default_factory=dict)
    unreadable_chunks: int = 0
    resolutions: dict[str, int] = field(default_factory=dict)  # "WxH" -> episodes, most common first
    # Usable episodes whose modalities hold different frame counts (training uses the shortest).
    length_mismatches: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class EpisodeRow:
    """One stored episode: where it is, its frame count per modality, and whether training can use it."""

    episode: str
    dataset: str
    lengths: dict[str, int]
    usable: bool


def present_modalities(dataset_dir: Path) -> list[str]:
    """Modalities with a folder in ``dataset_dir``; DataError for a missing, empty or foreign dir."""
    layout.check_dataset_dir(dataset_dir)
    with layout.permission_errors():
        found = [m for m in MODALITIES if layout.modality_folder(dataset_dir, m) is not None]
    if not found:
        raise DataError(
            f"{dataset_dir}: no modality folder ({', '.join(MODALITIES)}); is this a dataset dir?"
        )
    return found


def _frame_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an MP4 chunk's header, without decoding a frame."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            context = container.streams.video[0].codec_context
            return context.width, context.height
    except (av.FFmpegError, IndexError):
        raise DataError("image chunk does not open as an MP4 with a video stream") from None


def _resolutions(store: TrajectoryStore, counts: Counter) -> int:
    """Count episodes per frame size; returns how many first chunks did not read."""
    unreadable = 0
    for episode in store.modality_episodes("image"):
        try:
            width, height = _frame_size(store.raw_chunk(episode, "image", 0))
        except DataError:
            unreadable += 1
            continue
        counts[f"{width}x{height}"] += 1
    return unreadable


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
    sizes: Counter = Counter()
    frames_hist: Counter = Counter()
    inter_hist: Counter = Counter()
    unreadable = 0
    for dataset_dir, present in per_dir.items():
        store = TrajectoryStore(dataset_dir, modalities=present)
        chunk_sizes.add(store.chunk_size)
        for modality in present:
            for name, n in store.modality_episodes(modality).items():
                index[modality].setdefault(name, n)
        if "image" in present:
            unreadable += _resolutions(store, sizes)
        if histogram and "segmentation" in present:
            unreadable += _histogram(store, frames_hist, inter_hist)
    every = set().union(*(set(names) for names in index.values()))
    usable = set.intersection(*(set(names) for names in index.values()))
    frames = sum(min(index[m][name] for m in modalities) for name in usable)
    resolution = None
    if sizes:
        width, height = map(int, sizes.most_common(1)[0][0].split("x"))
        resolution = [height, width]
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
        resolutions=dict(sizes.most_common()),
        length_mismatches=length_mismatches(index, sorted(usable)),
    )


def episode_rows(dataset_dirs: Sequence[str | Path]) -> list[EpisodeRow]:
    """Every episode of every dir with its frame count per modality (only bookkeeping is read)."""
    rows = []
    for dataset_dir in map(Path, dataset_dirs):
        present = present_modalities(dataset_dir)
        store = TrajectoryStore(dataset_dir, modalities=present)
        lengths = {m: store.modality_episodes(m) for m in present}
        for name in sorted(set().union(*lengths.values())):
            per_modality = {m: index[name] for m, index in lengths.items() if name in index}
            rows.append(EpisodeRow(name, str(dataset_dir), per_modality, name in store.episodes))
    return rows
