"""``EventDataset``: windows that end where a named event happens (``mode='event'``).

Which occurrences become items, in this order:

1. every occurrence of the events whose name ``re.match``-es ``event_regex``, from the event
   index of each dataset dir (``minetrain data index-events``);
2. occurrences in episodes the store cannot read (a modality lacks them) are left out, and
   counted in a warning;
3. ``min_nearby``: per event and episode, an occurrence less than ``min_nearby`` frames after the
   last kept one is dropped (one mining session logs a block per swing);
4. ``max_within``: at most that many occurrences per event name, a random subset fixed by ``seed``
   (drawn over all episodes, before the split, as the reference does);
5. the train/val split by episode, exactly as ``RawDataset`` splits (same ``split_ratio``,
   ``shuffle_episodes`` and ``seed`` give the same episodes).

Window of an occurrence at frame T: ``win_len`` kept frames, one every ``skip_frame``, the last one
at ``T + bias``: with ``bias = 0`` the event is the last frame, a positive bias also shows what
follows the event (it sits ``bias / skip_frame`` frames before the end), a negative one ends the
window before it. The reference ends the same window one frame earlier (its last frame is
``T - 1 + bias``) and shifts windows near the episode start so that they start at frame 0; here the
event keeps its position and frames outside the episode are padding (``mask`` 0, ``timestamp``
-1), on either side. Occurrences whose window holds no frame of the
episode at all are left out and counted in a warning.

Items are ``RawDataset`` items (same reader, conditioning and padding) plus ``event`` (the event
name) and ``text`` (the name without ``minecraft.``, the key the reference uses). They are
grouped by episode in split order, and within an episode sorted by frame, so ``window_counts``
(items per episode) serves ``EpisodeContinuousBatchSampler`` as in raw mode: ranks get disjoint
episodes and training resumes mid-epoch exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from minetrain.data.dataset import RawDataset, WindowSpan
from minetrain.data.events import Occurrences, cap_per_event, dedupe_nearby, query_events
from minetrain.errors import ConfigError

log = logging.getLogger(__name__)

# The data_params keys mode='event' adds to raw mode's.
EVENT_PARAMS = ("event_regex", "min_nearby", "max_within", "bias")


def window_start(frame: Any, win_len: int, skip_frame: int, bias: int) -> Any:
    """First kept frame of the window whose last kept frame is ``frame + bias``."""
    return frame + bias - (win_len - 1) * skip_frame


def reaches_episode(start: np.ndarray, win_len: int, skip_frame: int, length: np.ndarray) -> np.ndarray:
    """Whether any kept frame ``start + i * skip_frame`` (i < win_len) lies in [0, length)."""
    first_inside = start + -(-np.maximum(0, -start) // skip_frame) * skip_frame
    return (first_inside <= start + (win_len - 1) * skip_frame) & (first_inside < length)


class EventDataset(RawDataset):
    """Windows anchored on the occurrences of the events ``event_regex`` selects."""

    mode = "event"

    def __init__(
        self,
        dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike],
        event_regex: str = ".*",
        min_nearby: int | None = None,
        max_within: int | None = None,
        bias: int = 0,
        frame_width: int = 224,
        frame_height: int = 224,
        win_len: int = 128,
        skip_frame: int = 1,
        enable_segment: bool = True,
        enable_prev_action: bool = False,
        condition_dropout: float = 0.0,
        split: Literal["train", "val"] = "train",
        split_ratio: float = 0.8,
        shuffle_episodes: bool = False,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        decode_threads: int = 1,
        resize_interpolation: str = "linear",
        enable_contractor_info: bool = False,
        enable_video_aug: bool = False,
        image_format: str = "rgb",
    ) -> None:
        if min_nearby is not None and (not isinstance(min_nearby, int) or min_nearby < 0):
            raise ConfigError(f"min_nearby must be a frame count >= 0 or None, got {min_nearby!r}")
        if max_within is not None and (not isinstance(max_within, int) or max_within < 1):
            raise ConfigError(f"max_within must be an int >= 1 or None, got {max_within!r}")
        if not isinstance(bias, int):
            raise ConfigError(f"bias must be an int number of frames, got {bias!r}")
        super().__init__(
            dataset_dirs,
            frame_width=frame_width,
            frame_height=frame_height,
            win_len=win_len,
            skip_frame=skip_frame,
            enable_segment=enable_segment,
            enable_prev_action=enable_prev_action,
            condition_dropout=condition_dropout,
            split=split,
            split_ratio=split_ratio,
            shuffle_episodes=shuffle_episodes,
            seed=seed,
            on_error=on_error,
            decode_threads=decode_threads,
            resize_interpolation=resize_interpolation,
            enable_contractor_info=enable_contractor_info,
            enable_video_aug=enable_video_aug,
            image_format=image_format,
        )
        self.event_regex = event_regex
        self.bias = int(bias)
        selected = self._select(query_events(self.dataset_dirs, event_regex), min_nearby, max_within)
        self.event_names = selected.event_names
        self._layout(selected)

    def _select(self, found: Occurrences, min_nearby: int | None, max_within: int | None) -> Occurrences:
        usable = np.array([name in self.store.episodes for name in found.episodes], dtype=bool)
        readable = usable[found.episode] if len(found) else np.zeros(0, dtype=bool)
        if not readable.all():
            log.warning(
                "%d of %d occurrences matching %r are in episodes the store cannot read "
                "(a modality lacks them); they are left out",
                int((~readable).sum()),
                len(found),
                self.event_regex,
            )
        found = found.subset(readable)
        lengths = np.array([self.store.episodes.get(name, 0) for name in found.episodes], dtype=np.int64)
        starts = window_start(found.frame, self.win_len, self.skip_frame, self.bias)
        inside = reaches_episode(starts, self.win_len, self.skip_frame, lengths[found.episode])
        if not inside.all():
            log.warning(
                "%d occurrences matching %r have a window (win_len %d, bias %d) entirely outside their "
                "episode; they are left out",
                int((~inside).sum()),
                self.event_regex,
                self.win_len,
                self.bias,
            )
        return cap_per_event(dedupe_nearby(found.subset(inside), min_nearby), max_within, self.seed)

    def _layout(self, selected: Occurrences) -> None:
        """Items grouped by split episode (split order), by frame within one, plus the per-episode counts."""
        position = {name: i for i, name in enumerate(self.episodes)}
        split_position = np.array([position.get(name, -1) for name in selected.episodes], dtype=np.int64)
        item_position = split_position[selected.episode] if len(selected) else np.zeros(0, dtype=np.int64)
        keep = item_position >= 0
        order = np.lexsort((selected.event[keep], selected.frame[keep], item_position[keep]))
        self.item_event = selected.event[keep][order]
        self.item_frame = selected.frame[keep][order]
        counts = np.bincount(item_position[keep], minlength=len(self.episodes))
        self.window_counts = [int(n) for n in counts]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        log.info(
            "event dataset (%s split, regex %r): %d items of %d events in %d episodes",
            self.split,
            self.event_regex,
            len(self.item_frame),
            len(self.event_names),
            int((counts > 0).sum()),
        )

    def event_counts(self) -> dict[str, int]:
        """Items per event name in this split."""
        found = np.bincount(self.item_event, minlength=len(self.event_names))
        return {name: int(n) for name, n in zip(self.event_names, found, strict=True) if n}

    def item_info(self, index: int) -> tuple[str, str, int]:
        """(episode, event name, event frame) of an item."""
        position, _ = self.locate(int(index))
        return self.episodes[position], self.event_names[self.item_event[index]], int(self.item_frame[index])

    def _span(self, index: int) -> WindowSpan:
        episode, event, frame = self.item_info(index)
        k = self.skip_frame
        start = window_start(frame, self.win_len, k, self.bias)
        padding = -(-max(0, -start) // k)
        stop = min(start + self.win_len * k, self.store.episodes[episode])
        name = f"the {event} window of episode {episode} at frame {frame}"
        return WindowSpan(index, episode, start + padding * k, stop, padding, name)

    def _item_fields(self, span: WindowSpan) -> dict[str, Any]:
        event = self.event_names[self.item_event[span.index]]
        return {"event": event, "text": event.replace("minecraft.", "")}
