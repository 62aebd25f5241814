"""What a dataset holds: episodes, frames, hours, resolution, modalities, gaps, interaction types.

``summarise`` answers "is this the data I think it is?" before a long training run. Modalities are
those present in any of the given dirs; an episode counts as usable only when every one of them
has it, and the rest are listed per modality (never silently left out).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av

from minetrain.data.render import interaction_name
from minetrain.data.store import MODALITY_SPECS, TrajectoryStore, layout
from minetrain.data.store.handles import reader_env
from minetrain.data.store.reader import length_mismatches
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.data.workers import die_with_parent
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
    # "WxH" -> image parts, most common first: the first episode of each part is read, not every one.
    resolutions: dict[str, int] = field(default_factory=dict)
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
    found = layout.modalities_in(dataset_dir, MODALITY_SPECS)
    if not found:
        raise DataError(
            f"{dataset_dir}: no modality folder ({', '.join(MODALITY_SPECS)}); is this a dataset dir?"
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
    """Count image parts per frame size, from the first episode of each part; returns failed reads.

    Reading every episode's first chunk costs one read per episode (15,655 at published scale);
    a part is written by one conversion at one size, so one read per part is enough.
    """
    first: dict[Path, str] = {}
    for episode in store.modality_episodes("image"):
        first.setdefault(store.locate(episode, "image").part, episode)
    unreadable = 0
    for episode in first.values():
        try:
            width, height = _frame_size(store.raw_chunk(episode, "image", 0))
        except DataError:
            unreadable += 1
            continue
        counts[f"{width}x{height}"] += 1
    return unreadable


@dataclass(frozen=True)
class _Segments:
    """One episode's segmentation chunks: what a worker needs to count its interactions."""

    part: str
    episode: str
    episode_idx: int
    num_frames: int
    chunk_size: int


def _segment_tasks(store: TrajectoryStore) -> list[_Segments]:
    tasks = []
    for episode, num_frames in store.modality_episodes("segmentation").items():
        location = store.locate(episode, "segmentation")
        tasks.append(
            _Segments(str(location.part), episode, location.episode_idx, num_frames, location.chunk_size)
        )
    return tasks


def _count_interactions(task: _Segments) -> tuple[Counter, Counter, int]:
    """Frames and distinct interactions per type in one episode, and how many chunks did not read."""
    frames: Counter = Counter()
    interactions: Counter = Counter()
    unreadable = 0
    seen: set = set()
    starts = range(0, task.num_frames, task.chunk_size)
    try:
        env = reader_env(Path(task.part))
    except DataError:
        return frames, interactions, len(starts)
    for start in starts:
        chunk_key = layout.chunk_key(task.episode_idx, start)
        with env.begin(buffers=False) as txn:
            data = txn.get(chunk_key)
        expected = min(task.chunk_size, task.num_frames - start)
        try:
            if data is None:
                raise DataError("chunk is missing")
            chunk = load_pickle(data, f"{task.part}: chunk {chunk_key.decode()}", "re-convert this episode")
            if not isinstance(chunk, list) or len(chunk) < expected:
                raise DataError(f"chunk does not hold {expected} frames")
        except UnsafeDataError:
            raise
        except DataError:
            unreadable += 1
            continue
        for frame in chunk[:expected]:
            for key, value in frame.items() if isinstance(frame, dict) else ():
                name = interaction_name(value.get("obj_id") if isinstance(value, dict) else None)
                frames[name] += 1
                if key not in seen:
                    seen.add(key)
                    interactions[name] += 1
    return frames, interactions, unreadable


def _histogram(
    tasks: list[_Segments], jobs: int, on_episode: Callable[[], None] | None
) -> tuple[Counter, Counter, int]:
    """Sum ``_count_interactions`` over every episode, in ``jobs`` processes when there are several."""
    frames: Counter = Counter()
    interactions: Counter = Counter()
    unreadable = 0
    results: Iterator[tuple[Counter, Counter, int]]
    with contextlib.ExitStack() as stack:
        if jobs > 1 and len(tasks) > 1:
            pool = stack.enter_context(
                ProcessPoolExecutor(max_workers=jobs, initializer=die_with_parent, initargs=(os.getpid(),))
            )
            results = pool.map(_count_interactions, tasks, chunksize=max(1, len(tasks) // (jobs * 8)))
        else:
            results = map(_count_interactions, tasks)
        for episode_frames, episode_interactions, episode_unreadable in results:
            frames.update(episode_frames)
            interactions.update(episode_interactions)
            unreadable += episode_unreadable
            if on_episode is not None:
                on_episode()
    return frames, interactions, unreadable


def summarise(
    dataset_dirs: Sequence[str | Path],
    interactions: bool = False,
    jobs: int = 1,
    on_plan: Callable[[int], None] | None = None,
    on_episode: Callable[[], None] | None = None,
) -> DatasetSummary:
    """Figures from the bookkeeping keys and one image chunk per part, in seconds at published scale.

    ``interactions`` also reads every segmentation chunk (minutes at published scale, hence opt-in)
    in ``jobs`` processes; ``on_plan`` gets the number of episodes to read, ``on_episode`` each one read.
    """
    dirs = [Path(d) for d in dataset_dirs]
    per_dir = {d: present_modalities(d) for d in dirs}
    modalities = [m for m in MODALITY_SPECS if any(m in present for present in per_dir.values())]
    index: dict[str, dict[str, int]] = {m: {} for m in modalities}
    chunk_sizes: set[int] = set()
    sizes: Counter = Counter()
    tasks: list[_Segments] = []
    unreadable = 0
    for dataset_dir, present in per_dir.items():
        store = TrajectoryStore(dataset_dir, modalities=present)
        chunk_sizes.add(store.chunk_size)
        for modality in present:
            for name, n in store.modality_episodes(modality).items():
                index[modality].setdefault(name, n)
        if "image" in present:
            unreadable += _resolutions(store, sizes)
        if interactions and "segmentation" in present:
            tasks.extend(_segment_tasks(store))
    if on_plan is not None:
        on_plan(len(tasks))
    frames_hist, inter_hist, failed = _histogram(tasks, jobs, on_episode)
    unreadable += failed
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
