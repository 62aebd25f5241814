"""``WindowIndex``: item numbering, locate at the edges and the frames each item reads, raw and event mode."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from minetrain.data.events import Occurrences
from minetrain.data.windows import WindowSpan, event_windows, raw_windows

KILL, MINE = "minecraft.kill_entity:zombie", "minecraft.mine_block:oak_log"


def test_raw_windows_tile_each_episode() -> None:
    index = raw_windows(["a", "b", "c"], [10, 16, 1], win_len=4, skip_frame=2)  # 8 frames per window
    assert index.counts == [2, 2, 1] and len(index) == 5
    assert index.episodes_with_items == [("a", 2, 0), ("b", 2, 2), ("c", 1, 4)]
    assert [index.locate(i) for i in range(5)] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    for outside in (-1, 5):
        with pytest.raises(IndexError, match=f"window {outside} is outside 0..4"):
            index.locate(outside)
    assert index.span(1) == WindowSpan(1, "a", 8, 10, 0, "window 1 of episode a")
    assert index.span(1).frames(2) == 1
    assert index.span(3) == WindowSpan(3, "b", 8, 16, 0, "window 1 of episode b")
    assert index.span(4) == WindowSpan(4, "c", 0, 1, 0, "window 0 of episode c")
    assert index.item_fields(0) == {} and index.event_counts() == {}


def test_event_windows_follow_the_split_and_end_at_the_event(caplog: pytest.LogCaptureFixture) -> None:
    episodes = ["a", "b", "c", "gone"]
    rows = [  # (event, episode, frame), sorted as a query returns them
        (0, 0, 2),
        (0, 1, 25),
        (1, 0, 15),
        (1, 0, 40),  # past the end of a (20 frames): its window holds no frame of it
        (1, 1, 3),
        (1, 1, 29),
        (1, 2, 5),  # c is in the other split
        (1, 3, 4),  # the store cannot read "gone"
    ]
    event, episode, frame = (np.array(column, dtype=np.int64) for column in zip(*rows, strict=True))
    found = Occurrences([KILL, MINE], episodes, event, episode, frame)
    with caplog.at_level(logging.WARNING, logger="minetrain.data.windows"):
        index = event_windows(
            found, {"a": 20, "b": 30, "c": 10}, ["b", "a"], win_len=4, skip_frame=1, event_regex=".*"
        )
    assert "1 of 8 occurrences matching '.*' are in episodes the store cannot read" in caplog.text
    assert "1 occurrences matching '.*' have a window (win_len 4, bias 0) entirely outside" in caplog.text
    # Split order (b, then a), by frame within an episode.
    assert index.episodes_with_items == [("b", 3, 0), ("a", 2, 3)]
    assert [index.item_info(i) for i in range(len(index))] == [
        ("b", MINE, 3),
        ("b", KILL, 25),
        ("b", MINE, 29),
        ("a", KILL, 2),
        ("a", MINE, 15),
    ]
    assert index.event_counts() == {KILL: 2, MINE: 3}
    assert (index.locate(2), index.locate(3), index.locate(4)) == ((0, 2), (1, 0), (1, 1))
    with pytest.raises(IndexError):
        index.locate(5)
    # The event is the last frame; frames before the episode start are padding at the front.
    assert index.span(2) == WindowSpan(2, "b", 26, 30, 0, f"the {MINE} window of episode b at frame 29")
    assert index.span(3) == WindowSpan(3, "a", 0, 3, 1, f"the {KILL} window of episode a at frame 2")
    assert index.item_fields(3) == {"event": KILL, "text": "kill_entity:zombie"}


def test_event_windows_bias_and_stride() -> None:
    found = Occurrences([MINE], ["a"], *(np.array([value], dtype=np.int64) for value in (0, 0, 10)))
    after = event_windows(found, {"a": 12}, ["a"], win_len=3, skip_frame=2, bias=4)
    # Kept frames 10, 12, 14 end at 10 + 4; the episode ends at 12, so only frame 10 is read.
    assert after.span(0)[2:5] == (10, 12, 0) and after.span(0).frames(2) == 1
    before = event_windows(found, {"a": 12}, ["a"], win_len=3, skip_frame=2, bias=-9)
    # Kept frames -3, -1, 1: two padding frames, then frame 1.
    assert before.span(0)[2:5] == (1, 3, 2) and before.span(0).frames(2) == 1
