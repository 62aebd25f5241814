"""``EventDataset``: windows that end where a named event happens (``mode='event'``).

Which occurrences become items, in this order (``windows.event_windows``):

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
grouped by episode in split order, and within an episode sorted by frame, so the dataset's
``WindowIndex`` serves ``EpisodeContinuousBatchSampler`` as in raw mode: ranks get disjoint
episodes and training resumes mid-epoch exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from minetrain.data.dataset import RawDataset
from minetrain.data.events import query_events
from minetrain.data.windows import WindowIndex, event_windows
from minetrain.errors import ConfigError

log = logging.getLogger(__name__)

# The data_params keys mode='event' adds to raw mode's.
EVENT_PARAMS = ("event_regex", "min_nearby", "max_within", "bias")


class EventDataset(RawDataset):
    """Windows anchored on the occurrences of the events ``event_regex`` selects.

    ``dataset_kwargs`` are ``RawDataset``'s arguments; only the window index differs.
    """

    mode = "event"

    def __init__(
        self,
        dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike],
        event_regex: str = ".*",
        min_nearby: int | None = None,
        max_within: int | None = None,
        bias: int = 0,
        **dataset_kwargs: Any,
    ) -> None:
        if min_nearby is not None and (not isinstance(min_nearby, int) or min_nearby < 0):
            raise ConfigError(f"min_nearby must be a frame count >= 0 or None, got {min_nearby!r}")
        if max_within is not None and (not isinstance(max_within, int) or max_within < 1):
            raise ConfigError(f"max_within must be an int >= 1 or None, got {max_within!r}")
        if not isinstance(bias, int):
            raise ConfigError(f"bias must be an int number of frames, got {bias!r}")
        self.event_regex = event_regex
        self.min_nearby = min_nearby
        self.max_within = max_within
        self.bias = int(bias)
        super().__init__(dataset_dirs, **dataset_kwargs)
        log.info(
            "event dataset (%s split, regex %r): %d items of %d events in %d episodes",
            self.split,
            event_regex,
            len(self),
            len(self.event_names),
            sum(1 for count in self.window_counts if count),
        )

    def index_windows(self, episodes: list[str]) -> WindowIndex:
        """One window per selected occurrence in the split's ``episodes``."""
        return event_windows(
            query_events(self.dataset_dirs, self.event_regex),
            self.store.episodes,
            episodes,
            win_len=self.win_len,
            skip_frame=self.skip_frame,
            bias=self.bias,
            min_nearby=self.min_nearby,
            max_within=self.max_within,
            seed=self.seed,
            event_regex=self.event_regex,
        )

    @property
    def event_names(self) -> list[str]:
        """The names of the events ``event_regex`` matches."""
        return self.windows.event_names

    def event_counts(self) -> dict[str, int]:
        """Items per event name in this split."""
        return self.windows.event_counts()

    def item_info(self, index: int) -> tuple[str, str, int]:
        """(episode, event name, event frame) of an item."""
        return self.windows.item_info(index)
