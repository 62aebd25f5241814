"""The event index file: ``<dataset dir>/event_index.npz`` (ours) or the reference's ``event/`` LMDB.

File format: an uncompressed ``.npz``, written under a temporary name and renamed. ``meta`` is
JSON (as uint8) with the event names, their counts, the indexed episodes and, per episode, which
source modalities were indexed (a bit mask); ``e<i>`` is an (n, 2) int32 array of (episode id,
frame) for event ``i``. Members load lazily, so a query reads only the events its regex selects.
``index-events`` rebuilds an index of an older version (version 1 named segmentation events by
the key's type); reading one is a one-line error that says to rebuild it.

The reference library writes its own index as an LMDB in ``<dataset dir>/event/`` (keys
``__event_info__``, ``__codebook__`` and ``str((event, i))`` -> (episode or code, frame, value),
built from meta_info only). ``load_event_index`` reads it when no ``event_index.npz`` exists.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import ConfigError, DataError
from minetrain.files import atomic_path

INDEX_NAME = "event_index.npz"
REFERENCE_INDEX_NAME = "event"
FORMAT = "minetrain.event_index"
# Version 2 names segmentation events by the interaction's full event; version 1 used the key's type.
VERSION = 2
SOURCES = {"segmentation": 1, "meta_info": 2}
BUILD_COMMAND = "minetrain data index-events"


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


def is_outdated(path: Path) -> bool:
    """Whether ``path`` is an index written by an older minetrain, which ``index_events`` rebuilds."""
    try:
        version = _raw_meta(path).get("version")
    except DataError:
        return False
    return isinstance(version, int) and version < VERSION


def load_own(path: Path) -> EventIndex:
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
        return load_own(own)
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


def write_index(
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
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
