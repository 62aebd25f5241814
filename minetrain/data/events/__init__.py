"""The event index: where each named event (``minecraft.mine_block:minecraft:oak_log``, ...) happens.

Event mode samples windows that end where an event happens, so it needs, for every event name,
its occurrences as (episode, frame). Finding them means reading two whole modalities, so they are
indexed once into ``<dataset dir>/event_index.npz`` by ``minetrain data index-events``:
``extract`` finds them, ``index_file`` reads and writes the index (ours and the reference's),
``query`` selects them for event mode.
"""

from minetrain.data.events.extract import (
    IndexReport,
    episode_events,
    index_events,
    meta_info_events,
    segmentation_events,
)
from minetrain.data.events.index_file import (
    BUILD_COMMAND,
    INDEX_NAME,
    REFERENCE_INDEX_NAME,
    EventIndex,
    event_counts,
    index_path,
    load_event_index,
    write_index,
)
from minetrain.data.events.query import Occurrences, cap_per_event, dedupe_nearby, query_events

__all__ = [
    "BUILD_COMMAND",
    "INDEX_NAME",
    "REFERENCE_INDEX_NAME",
    "EventIndex",
    "IndexReport",
    "Occurrences",
    "cap_per_event",
    "dedupe_nearby",
    "episode_events",
    "event_counts",
    "index_events",
    "index_path",
    "load_event_index",
    "meta_info_events",
    "query_events",
    "segmentation_events",
    "write_index",
]
