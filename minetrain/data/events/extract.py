"""Finding events in episodes and writing them into a dataset's index (``minetrain data index-events``).

Where occurrences come from:

* ``meta_info``: a frame's ``events`` field maps event names to values (what the reference's
  event converter reads); each name is one occurrence on that frame.
* ``segmentation``: every interaction (an interaction key with its ``frame_range``) is one
  occurrence of its event at the last frame of that range, the frame where the interaction
  completes (the last frame showing the key when the range is missing or runs past the episode).
  The event is named by the interaction's ``event`` (``minecraft.mine_block:minecraft.oak_log``),
  as the reference's event index names it, so ``event_regex='minecraft.mine_block:.*'`` selects
  it; the key's last element (the interaction type in published data) only when ``event`` is absent.

Both usually describe the same moments, one or two frames apart, so for one episode and one event
name meta_info wins when it reports that name at all; segmentation fills in the rest (datasets
without meta_info, or interactions it does not log). An episode is (re)indexed when a source
modality holds it that the index has not read yet, which also covers segmentation attached after
the first run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minetrain.data.events.index_file import (
    INDEX_NAME,
    SOURCES,
    EventIndex,
    is_outdated,
    load_own,
    write_index,
)
from minetrain.data.store import TrajectoryStore, layout
from minetrain.data.store.lock import dataset_write_lock
from minetrain.errors import DataError


def _event_name(key: object, value: object) -> str | None:
    """The interaction's full event (``minecraft.mine_block:minecraft.oak_log``), else its key's last element.

    Published keys end with the interaction type only (``minecraft.mine_block``); the value's
    ``event`` is the name the reference's event index and ``event_regex`` conventions use.
    """
    if isinstance(value, Mapping) and isinstance(value.get("event"), str) and value["event"]:
        return value["event"]
    if isinstance(key, tuple) and key and isinstance(key[-1], str):
        return key[-1]
    return None


def _frame_range(value: object) -> tuple[int, int] | None:
    if not isinstance(value, Mapping):
        return None
    try:
        start, end = (int(v) for v in value.get("frame_range"))
    except (TypeError, ValueError):
        return None
    return (start, end) if 0 <= start <= end else None


def segmentation_events(frames: Sequence[Mapping]) -> dict[str, list[int]]:
    """Event name -> sorted frames: one occurrence per interaction, where it completes."""
    last_seen: dict[tuple, int] = {}
    for t, frame in enumerate(frames):
        for key, value in frame.items():
            name = _event_name(key, value)
            if name is not None:
                last_seen[(name, key, _frame_range(value))] = t
    found: dict[str, set[int]] = {}
    for (name, _, frame_range), t in last_seen.items():
        end = frame_range[1] if frame_range is not None and frame_range[1] < len(frames) else t
        found.setdefault(name, set()).add(end)
    return {name: sorted(frames_) for name, frames_ in found.items()}


def meta_info_events(frames: Sequence[Mapping]) -> dict[str, list[int]]:
    """Event name -> sorted frames on which meta_info's ``events`` field reports it."""
    found: dict[str, list[int]] = {}
    for t, frame in enumerate(frames):
        events = frame.get("events") if isinstance(frame, Mapping) else None
        if isinstance(events, Mapping):
            for name in events:
                found.setdefault(str(name), []).append(t)
    return found


def episode_events(
    segmentation: Sequence[Mapping] | None, meta_info: Sequence[Mapping] | None
) -> dict[str, list[int]]:
    """Occurrences of one episode; for an event name meta_info reports, its frames replace segmentation's."""
    merged = segmentation_events(segmentation) if segmentation is not None else {}
    if meta_info is not None:
        merged.update(meta_info_events(meta_info))
    return merged


@dataclass
class IndexReport:
    """What one ``index_events`` run did."""

    path: Path
    indexed: list[str] = field(default_factory=list)
    already_indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    occurrences: int = 0
    events: int = 0


class _IndexState:
    """The index being updated in memory: episode ids, source masks, per-event lists of row blocks."""

    def __init__(self, index: EventIndex | None) -> None:
        self.episodes = list(index.episodes) if index else []
        self.sources = list(index.sources) if index else []
        self.ids = {name: i for i, name in enumerate(self.episodes)}
        loaded = index.occurrences(index.names) if index else {}
        self.blocks: dict[str, list[np.ndarray]] = {name: [rows] for name, rows in loaded.items()}

    def drop(self, episodes: Sequence[str]) -> None:
        """Forget the occurrences of episodes about to be indexed again."""
        ids = np.array([self.ids[name] for name in episodes if name in self.ids], dtype=np.int32)
        if ids.size == 0:
            return
        for name, blocks in self.blocks.items():
            rows = np.concatenate(blocks)
            self.blocks[name] = [rows[~np.isin(rows[:, 0], ids)]]

    def add(self, episode: str, sources: int, events: dict[str, list[int]]) -> int:
        episode_id = self.ids.get(episode)
        if episode_id is None:
            episode_id = self.ids[episode] = len(self.episodes)
            self.episodes.append(episode)
            self.sources.append(0)
        self.sources[episode_id] = sources
        for name, frames in events.items():
            rows = np.empty((len(frames), 2), dtype=np.int32)
            rows[:, 0], rows[:, 1] = episode_id, frames
            self.blocks.setdefault(name, []).append(rows)
        return sum(len(frames) for frames in events.values())

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name, blocks in self.blocks.items():
            rows = np.concatenate(blocks)
            if len(rows):
                out[name] = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
                self.blocks[name] = [out[name]]
        return out


def index_events(
    dataset_dir: str | os.PathLike,
    rebuild: bool = False,
    save_every: int = 500,
    on_plan: Callable[[int], None] | None = None,
    on_item: Callable[[str], None] | None = None,
) -> IndexReport:
    """Index the episodes of ``dataset_dir`` that the index lacks (all of them with ``rebuild``, or
    when the index was written by an older minetrain: the index migrates by being rebuilt).

    The index is rewritten every ``save_every`` episodes and at the end, so an interrupted run keeps
    its progress; the dataset's write lock is held throughout. An episode whose chunks do not read
    is reported in ``failed`` and left out of the index, so the next run tries it again.
    """
    dataset_dir = Path(dataset_dir)
    present = layout.modalities_in(dataset_dir, SOURCES)
    if not present:
        raise DataError(
            f"{dataset_dir}: no segmentation/ or meta_info/ folder, the modalities events come from; "
            "convert one of them first"
        )
    with dataset_write_lock(dataset_dir):
        stores = {m: TrajectoryStore(dataset_dir, modalities=(m,)) for m in present}
        lengths = {m: store.modality_episodes(m) for m, store in stores.items()}
        available: dict[str, int] = {}
        for modality, episodes in lengths.items():
            for name in episodes:
                available[name] = available.get(name, 0) | SOURCES[modality]
        path = dataset_dir / INDEX_NAME
        rebuild = rebuild or is_outdated(path)
        state = _IndexState(None if rebuild or not path.exists() else load_own(path))
        done = {name: state.sources[i] for name, i in state.ids.items()}
        todo = [name for name in sorted(available) if available[name] & ~done.get(name, 0)]
        report = IndexReport(path, already_indexed=len(available) - len(todo))
        if on_plan:
            on_plan(len(todo))
        state.drop(todo)
        pending = rebuild or not path.exists()
        unsaved = 0
        for name in todo:
            read = {}
            try:
                for modality, store in stores.items():
                    if name in lengths[modality]:
                        read[modality] = store.read(name, modality, 0, lengths[modality][name])
            except DataError as exc:
                report.failed.append((name, str(exc)))
            else:
                events = episode_events(read.get("segmentation"), read.get("meta_info"))
                report.occurrences += state.add(name, available[name], events)
                report.indexed.append(name)
                pending = True
                unsaved += 1
            if on_item:
                on_item(name)
            if unsaved >= save_every:
                write_index(path, state.episodes, state.sources, state.arrays())
                pending, unsaved = False, 0
        arrays = state.arrays()
        if pending:
            write_index(path, state.episodes, state.sources, arrays)
        report.events = len(arrays)
    return report
