"""The event index: where each named event (``minecraft.mine_block:minecraft:oak_log``, ...) happens.

Event mode samples windows that end where an event happens, so it needs, for every event name,
its occurrences as (episode, frame). Finding them means reading two whole modalities, so they are
indexed once into ``<dataset dir>/event_index.npz`` by ``minetrain data index-events``.

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
without meta_info, or interactions it does not log).

File format: an uncompressed ``.npz``, written under a temporary name and renamed. ``meta`` is
JSON (as uint8) with the event names, their counts, the indexed episodes and, per episode, which
source modalities were indexed (a bit mask); ``e<i>`` is an (n, 2) int32 array of (episode id,
frame) for event ``i``. Members load lazily, so a query reads only the events its regex selects.
An episode is (re)indexed when a source modality holds it that the index has not read yet, which
also covers segmentation attached after the first run. ``index-events`` rebuilds an index of an
older version (version 1 named segmentation events by the key's type); reading one is a one-line
error that says to rebuild it.

The reference library writes its own index as an LMDB in ``<dataset dir>/event/`` (keys
``__event_info__``, ``__codebook__`` and ``str((event, i))`` -> (episode or code, frame, value),
built from meta_info only). ``load_event_index`` reads it when no ``event_index.npz`` exists.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from minetrain.data.store import TrajectoryStore, layout
from minetrain.data.store.lock import dataset_write_lock
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import ConfigError, DataError

INDEX_NAME = "event_index.npz"
REFERENCE_INDEX_NAME = "event"
FORMAT = "minetrain.event_index"
# Version 2 names segmentation events by the interaction's full event; version 1 used the key's type.
VERSION = 2
SOURCES = {"segmentation": 1, "meta_info": 2}
BUILD_COMMAND = "minetrain data index-events"


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


class EventIndex:
    """The events of one dataset dir: names, counts, and occurrences loaded on demand."""

    def __init__(
        self,
        path: Path,
        episodes: list[str],
        sources: list[int],
        counts: dict[str, int],
        loader: Callable[[list[str]], dict[str, np.ndarray]],
    ) -> None:
        self.path = path
        self.episodes = episodes
        self.sources = sources
        self.counts = counts
        self._loader = loader

    @property
    def names(self) -> list[str]:
        return sorted(self.counts)

    def occurrences(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Event name -> (n, 2) int array of (id into ``episodes``, frame)."""
        unknown = [name for name in names if name not in self.counts]
        if unknown:
            raise ConfigError(f"{self.path}: no event named {unknown[0]!r}; see `minetrain data inspect`")
        return self._loader(list(names))


def index_path(dataset_dir: str | os.PathLike) -> Path:
    return Path(dataset_dir) / INDEX_NAME


def _bad_index(path: Path, why: str) -> DataError:
    return DataError(
        f"{path}: not a readable event index ({why}); rebuild it with "
        f"`{BUILD_COMMAND} {path.parent} --rebuild`"
    )


def _raw_meta(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise _bad_index(path, f"{type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _bad_index(path, "unknown format")
    return meta


def _read_meta(path: Path) -> dict:
    meta = _raw_meta(path)
    if meta.get("version") != VERSION:
        old = " (it named segmentation events by interaction type only)" if meta.get("version") == 1 else ""
        raise _bad_index(path, f"version {meta.get('version')}{old}, this minetrain reads {VERSION}")
    return meta


def _outdated(path: Path) -> bool:
    """Whether ``path`` is an index written by an older minetrain, which ``index_events`` rebuilds."""
    try:
        version = _raw_meta(path).get("version")
    except DataError:
        return False
    return isinstance(version, int) and version < VERSION


def _load_own(path: Path) -> EventIndex:
    meta = _read_meta(path)
    members = {name: f"e{i}" for i, name in enumerate(meta["events"])}

    def load(names: list[str]) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[members[name]] for name in names}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise _bad_index(path, f"{type(exc).__name__}: {str(exc)[:80]}") from None

    counts = {name: int(n) for name, n in zip(meta["events"], meta["counts"], strict=True)}
    return EventIndex(path, list(meta["episodes"]), list(meta["sources"]), counts, load)


def _load_reference(path: Path) -> EventIndex:
    """The reference's ``event/`` LMDB, read fully into memory (it is small per event, keyed per item)."""
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    except lmdb.Error as exc:
        raise _bad_index(path, str(exc)) from None
    remedy = f"rebuild it with `{BUILD_COMMAND} {path.parent} --rebuild`"

    def load(raw: bytes, key: str) -> Any:
        return load_pickle(raw, f"{path}: key {key}", remedy)

    try:
        with env.begin(buffers=False) as txn:
            raw_info = txn.get(b"__event_info__")
            if raw_info is None:
                raise _bad_index(path, "no __event_info__ key")
            info = load(raw_info, "__event_info__")
            raw_codebook = txn.get(b"__codebook__")
            decode = (
                {code: name for name, code in load(raw_codebook, "__codebook__").items()}
                if raw_codebook
                else {}
            )
            episodes: dict[str, int] = {}
            arrays: dict[str, np.ndarray] = {}
            for event, value in info.items():
                rows = []
                for i in range(int(value["__num_items__"])):
                    key = str((event, i))
                    item = txn.get(key.encode())
                    if item is None:
                        raise _bad_index(path, f"item {i} of {event} is missing")
                    episode, frame, _ = load(item, key)
                    name = decode.get(episode, str(episode))
                    rows.append((episodes.setdefault(name, len(episodes)), int(frame)))
                arrays[str(event)] = np.asarray(rows, dtype=np.int32).reshape(-1, 2)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _bad_index(path, f"{type(exc).__name__}: {str(exc)[:80]}") from None
    finally:
        env.close()
    counts = {name: len(rows) for name, rows in arrays.items()}
    return EventIndex(
        path,
        list(episodes),
        [SOURCES["meta_info"]] * len(episodes),
        counts,
        lambda names: {name: arrays[name] for name in names},
    )


def load_event_index(dataset_dir: str | os.PathLike) -> EventIndex:
    """Our index of ``dataset_dir``, else the reference's ``event/`` LMDB; else a DataError naming the fix."""
    dataset_dir = Path(dataset_dir)
    own = dataset_dir / INDEX_NAME
    if own.is_file():
        return _load_own(own)
    reference = dataset_dir / REFERENCE_INDEX_NAME
    if reference.is_dir():
        return _load_reference(reference)
    raise DataError(
        f"{dataset_dir}: no event index ({INDEX_NAME}); build it with `{BUILD_COMMAND} {dataset_dir}`"
    )


def event_counts(dataset_dir: str | os.PathLike) -> dict[str, int] | None:
    """Occurrences per event name, most frequent first, or None when the dir has no index yet."""
    try:
        index = load_event_index(dataset_dir)
    except DataError:
        if (Path(dataset_dir) / INDEX_NAME).exists() or (Path(dataset_dir) / REFERENCE_INDEX_NAME).exists():
            raise
        return None
    return dict(sorted(index.counts.items(), key=lambda item: (-item[1], item[0])))


def _write_index(
    path: Path, episodes: list[str], sources: list[int], occurrences: dict[str, np.ndarray]
) -> None:
    names = sorted(occurrences)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "events": names,
        "counts": [len(occurrences[name]) for name in names],
        "episodes": episodes,
        "sources": sources,
    }
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    arrays.update({f"e{i}": occurrences[name] for i, name in enumerate(names)})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    layout.check_dataset_dir(dataset_dir)
    with layout.permission_errors():
        present = [m for m in SOURCES if layout.modality_folder(dataset_dir, m) is not None]
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
        rebuild = rebuild or _outdated(path)
        state = _IndexState(None if rebuild or not path.exists() else _load_own(path))
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
                _write_index(path, state.episodes, state.sources, state.arrays())
                pending, unsaved = False, 0
        arrays = state.arrays()
        if pending:
            _write_index(path, state.episodes, state.sources, arrays)
        report.events = len(arrays)
    return report


@dataclass(frozen=True)
class Occurrences:
    """Selected occurrences over several dataset dirs, sorted by (event, episode, frame)."""

    event_names: list[str]
    episodes: list[str]
    event: np.ndarray  # int64 ids into event_names
    episode: np.ndarray  # int64 ids into episodes
    frame: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.frame.size)

    def subset(self, keep: np.ndarray) -> Occurrences:
        return Occurrences(
            self.event_names, self.episodes, self.event[keep], self.episode[keep], self.frame[keep]
        )

    def counts(self) -> dict[str, int]:
        found = np.bincount(self.event, minlength=len(self.event_names))
        return {name: int(n) for name, n in zip(self.event_names, found, strict=True)}


def _top_events(counts: Mapping[str, int], limit: int = 8) -> str:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    more = f", ... ({len(counts) - limit} more)" if len(counts) > limit else ""
    return ", ".join(f"{name} ({n})" for name, n in ranked) + more


def query_events(dataset_dirs: Sequence[str | os.PathLike], event_regex: str) -> Occurrences:
    """Every occurrence of the events whose name ``re.match``-es ``event_regex`` (as the reference matches).

    An episode indexed in several dirs counts once, from the first dir, as the store reads it.
    """
    try:
        pattern = re.compile(event_regex)
    except re.error as exc:
        raise ConfigError(f"event_regex {event_regex!r} is not a valid regular expression ({exc})") from None
    indexes = [load_event_index(d) for d in dataset_dirs]
    totals: dict[str, int] = {}
    for index in indexes:
        for name, n in index.counts.items():
            totals[name] = totals.get(name, 0) + n
    names = sorted(name for name in totals if pattern.match(name))
    if not names:
        where = ", ".join(str(d) for d in dataset_dirs)
        if not totals:
            raise ConfigError(f"event_regex {event_regex!r}: the event index of {where} holds no events")
        raise ConfigError(
            f"event_regex {event_regex!r} matches none of the {len(totals)} events of {where}; "
            f"most frequent: {_top_events(totals)}"
        )
    episodes: dict[str, int] = {}
    owner: dict[str, int] = {}
    columns: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for dir_number, index in enumerate(indexes):
        global_ids = np.array(
            [episodes.setdefault(name, len(episodes)) for name in index.episodes], dtype=np.int64
        )
        mine = np.array(
            [owner.setdefault(name, dir_number) == dir_number for name in index.episodes], dtype=bool
        )
        found = index.occurrences([n for n in names if n in index.counts])
        for event_id, name in enumerate(names):
            rows = found.get(name)
            if rows is None or not len(rows):
                continue
            rows = rows[mine[rows[:, 0]]]
            columns.append((np.full(len(rows), event_id, dtype=np.int64), global_ids[rows[:, 0]], rows[:, 1]))
    episode_names = list(episodes)
    if columns:
        event, episode, frame = (
            np.concatenate(parts).astype(np.int64) for parts in zip(*columns, strict=True)
        )
    else:
        event = episode = frame = np.zeros(0, dtype=np.int64)
    # Episode order by name, so the selection does not depend on the order episodes were indexed in.
    rank = np.empty(len(episode_names), dtype=np.int64)
    rank[np.argsort(np.array(episode_names, dtype=object))] = np.arange(len(episode_names))
    order = np.lexsort((frame, rank[episode], event))
    return Occurrences(names, episode_names, event[order], episode[order], frame[order])


def dedupe_nearby(occurrences: Occurrences, min_nearby: int | None) -> Occurrences:
    """Keep an occurrence only if it is at least ``min_nearby`` frames after the last kept one.

    Per (event, episode), walking forward in time. The reference drops occurrences up to and
    including ``min_nearby`` frames apart; here exactly ``min_nearby`` apart is kept.
    """
    if not min_nearby or not len(occurrences):
        return occurrences
    keep = np.zeros(len(occurrences), dtype=bool)
    last_group: tuple[int, int] | None = None
    last_frame = 0
    for i, (event, episode, frame) in enumerate(
        zip(occurrences.event.tolist(), occurrences.episode.tolist(), occurrences.frame.tolist(), strict=True)
    ):
        if (event, episode) != last_group or frame - last_frame >= min_nearby:
            keep[i] = True
            last_group, last_frame = (event, episode), frame
    return occurrences.subset(keep)


def cap_per_event(occurrences: Occurrences, max_within: int | None, seed: int = 0) -> Occurrences:
    """At most ``max_within`` occurrences per event: a random subset fixed by ``seed`` and the event name.

    The reference keeps the first ones in index order, which favours whichever episodes come first;
    a seeded draw spreads the kept ones over the whole dataset.
    """
    if max_within is None or not len(occurrences):
        return occurrences
    if max_within < 1:
        raise ConfigError(f"max_within must be >= 1 or None, got {max_within}")
    keep = np.ones(len(occurrences), dtype=bool)
    for event_id, name in enumerate(occurrences.event_names):
        rows = np.flatnonzero(occurrences.event == event_id)
        if rows.size > max_within:
            rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
            dropped = rng.choice(rows, rows.size - max_within, replace=False)
            keep[dropped] = False
    return occurrences.subset(keep)
