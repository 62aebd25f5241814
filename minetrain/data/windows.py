"""``WindowIndex``: which frames each item of a dataset reads, as data.

Items are numbered episode after episode (``counts`` gives the items per episode, ``offsets`` the
number of the first), the order ``EpisodeContinuousBatchSampler`` expects. An item is a window of
``win_len`` kept frames, one every ``skip_frame``:

- raw mode (``raw_windows``): window w of an episode covers the frames
  ``[w * win_len * skip_frame, (w + 1) * win_len * skip_frame)``, the last one cut at the episode end;
- event mode (``event_windows``): the window of an occurrence at frame T ends at ``T + bias``; frames
  it reaches before the episode start are padding.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from minetrain.data.events import Occurrences, cap_per_event, dedupe_nearby

log = logging.getLogger(__name__)


def split_episodes(
    episodes: Sequence[str],
    split: str,
    split_ratio: float,
    shuffle: bool,
    seed: int,
    apart: Collection[str] = (),
) -> list[str]:
    """The episodes of ``split``: train is the first ``int(n * split_ratio)`` of the (seeded) shuffle.

    The shuffle is Python's ``random.Random(seed).shuffle`` of the name-sorted episodes, the one the
    reference (MineStudio) uses, so both libraries hold out the same validation episodes. Episodes
    in ``apart`` (those the reference leaves out: their modalities disagree on their length) are
    split the same way among themselves and appended, so they do not move the others.
    """

    def cut(order: list[str]) -> list[str]:
        if shuffle:
            random.Random(seed).shuffle(order)
        divider = int(len(order) * split_ratio)
        return order[:divider] if split == "train" else order[divider:]

    extra = set(apart)
    return cut([e for e in episodes if e not in extra]) + cut([e for e in episodes if e in extra])


class WindowSpan(NamedTuple):
    """The frames [start, stop) item ``index`` reads from ``episode``, before striding.

    ``padding`` padding frames come before them (windows reaching back before the episode start);
    ``name`` says which window it is in messages.
    """

    index: int
    episode: str
    start: int
    stop: int
    padding: int
    name: str

    def frames(self, stride: int) -> int:
        return len(range(self.start, self.stop, stride))


@dataclass(frozen=True, eq=False)
class Anchors:
    """Event mode's per-item data: the event (an id into ``names``) and the frame it happens at."""

    names: list[str]
    event: np.ndarray
    frame: np.ndarray
    bias: int


@dataclass(frozen=True, eq=False)
class WindowIndex:
    """The items of a dataset: ``counts[e]`` windows of ``episodes[e]`` (``lengths[e]`` frames) each.

    Without ``anchors`` (raw mode) the windows tile their episode; with them (event mode) item i is
    the window ending ``anchors.bias`` frames after ``anchors.frame[i]``.
    """

    episodes: list[str]
    lengths: list[int]
    counts: list[int]
    win_len: int
    skip_frame: int
    anchors: Anchors | None = None
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)]).astype(np.int64)
        object.__setattr__(self, "offsets", offsets)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def episodes_with_items(self) -> list[tuple[str, int, int]]:
        """(episode, number of windows, index of its first window), as the reference names it."""
        return [(e, n, int(o)) for e, n, o in zip(self.episodes, self.counts, self.offsets, strict=False)]

    def locate(self, index: int) -> tuple[int, int]:
        """(episode position, window number) of an item."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} is outside 0..{len(self) - 1}")
        episode = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return episode, index - int(self.offsets[episode])

    def span(self, index: int) -> WindowSpan:
        """The frames item ``index`` reads."""
        position, window = self.locate(index)
        episode, k = self.episodes[position], self.skip_frame
        if self.anchors is None:
            start, name = window * self.win_len * k, f"window {window} of episode {episode}"
        else:
            event, frame = self.anchors.names[self.anchors.event[index]], int(self.anchors.frame[index])
            start = window_start(frame, self.win_len, k, self.anchors.bias)
            name = f"the {event} window of episode {episode} at frame {frame}"
        padding = -(-max(0, -start) // k)
        stop = min(start + self.win_len * k, self.lengths[position])
        return WindowSpan(index, episode, start + padding * k, stop, padding, name)

    @property
    def event_names(self) -> list[str]:
        """The events the anchors name (those of a query, with items in this index or not)."""
        return [] if self.anchors is None else self.anchors.names

    def item_fields(self, index: int) -> dict[str, Any]:
        """Fields of an item beyond what its frames hold: in event mode the event's name."""
        if self.anchors is None:
            return {}
        event = self.anchors.names[self.anchors.event[index]]
        return {"event": event, "text": event.replace("minecraft.", "")}

    def item_info(self, index: int) -> tuple[str, str, int]:
        """(episode, event name, event frame) of an event-mode item."""
        if self.anchors is None:
            raise TypeError("item_info is for event-mode windows; these are raw windows")
        position, _ = self.locate(int(index))
        anchors = self.anchors
        return self.episodes[position], anchors.names[anchors.event[index]], int(anchors.frame[index])

    def event_counts(self) -> dict[str, int]:
        """Items per event name (event mode), names without items left out."""
        if self.anchors is None:
            return {}
        found = np.bincount(self.anchors.event, minlength=len(self.anchors.names))
        return {name: int(n) for name, n in zip(self.anchors.names, found, strict=True) if n}


def raw_windows(
    episodes: Sequence[str], lengths: Sequence[int], win_len: int, skip_frame: int
) -> WindowIndex:
    """Every window of each episode: ``ceil(length / (win_len * skip_frame))`` of them."""
    span = win_len * skip_frame
    counts = [math.ceil(length / span) for length in lengths]
    return WindowIndex(list(episodes), list(lengths), counts, win_len, skip_frame)


def window_start(frame: Any, win_len: int, skip_frame: int, bias: int) -> Any:
    """First kept frame of the window whose last kept frame is ``frame + bias``."""
    return frame + bias - (win_len - 1) * skip_frame


def reaches_episode(start: np.ndarray, win_len: int, skip_frame: int, length: np.ndarray) -> np.ndarray:
    """Whether any kept frame ``start + i * skip_frame`` (i < win_len) lies in [0, length)."""
    first_inside = start + -(-np.maximum(0, -start) // skip_frame) * skip_frame
    return (first_inside <= start + (win_len - 1) * skip_frame) & (first_inside < length)


def event_windows(
    found: Occurrences,
    usable: Mapping[str, int],
    episodes: Sequence[str],
    *,
    win_len: int,
    skip_frame: int,
    bias: int = 0,
    min_nearby: int | None = None,
    max_within: int | None = None,
    seed: int = 0,
    event_regex: str = "",
) -> WindowIndex:
    """The windows of the occurrences ``found`` (the steps of ``event_dataset.py``'s docstring).

    ``usable`` maps the episodes the store can read to their lengths, ``episodes`` are the split's;
    ``event_regex`` (what ``found`` matches) names the selection in warnings.
    """
    readable = np.array([name in usable for name in found.episodes], dtype=bool)
    readable = readable[found.episode] if len(found) else np.zeros(0, dtype=bool)
    if not readable.all():
        log.warning(
            "%d of %d occurrences matching %r are in episodes the store cannot read "
            "(a modality lacks them); they are left out",
            int((~readable).sum()),
            len(found),
            event_regex,
        )
    found = found.subset(readable)
    lengths = np.array([usable.get(name, 0) for name in found.episodes], dtype=np.int64)
    starts = window_start(found.frame, win_len, skip_frame, bias)
    inside = reaches_episode(starts, win_len, skip_frame, lengths[found.episode])
    if not inside.all():
        log.warning(
            "%d occurrences matching %r have a window (win_len %d, bias %d) entirely outside their "
            "episode; they are left out",
            int((~inside).sum()),
            event_regex,
            win_len,
            bias,
        )
    selected = cap_per_event(dedupe_nearby(found.subset(inside), min_nearby), max_within, seed)
    # Items grouped by split episode (split order), by frame within one.
    position = {name: i for i, name in enumerate(episodes)}
    split_position = np.array([position.get(name, -1) for name in selected.episodes], dtype=np.int64)
    item_position = split_position[selected.episode] if len(selected) else np.zeros(0, dtype=np.int64)
    keep = item_position >= 0
    order = np.lexsort((selected.event[keep], selected.frame[keep], item_position[keep]))
    anchors = Anchors(selected.event_names, selected.event[keep][order], selected.frame[keep][order], bias)
    counts = [int(n) for n in np.bincount(item_position[keep], minlength=len(episodes))]
    lengths_of_split = [usable[name] for name in episodes]
    return WindowIndex(list(episodes), lengths_of_split, counts, win_len, skip_frame, anchors)
