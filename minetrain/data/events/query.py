"""Selecting occurrences for event mode: by regex over several dirs, deduplicated, capped per event."""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from minetrain.data.events.index_file import load_event_index
from minetrain.errors import ConfigError


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
