"""The event index: occurrences found, incremental updates, atomic writes, queries and filters."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest
from event_fixtures import (
    CRAFT,
    EPISODES,
    KILL,
    MINE_LOG,
    MINE_STONE,
    event_frames,
    make_episode,
    write_event_dataset,
)

from minetrain.data import events as ev
from minetrain.data.events import (
    INDEX_NAME,
    cap_per_event,
    dedupe_nearby,
    episode_events,
    event_counts,
    index_events,
    load_event_index,
    query_events,
    segmentation_events,
)
from minetrain.data.store import DatasetWriter, Episode
from minetrain.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_event_dataset(tmp_path_factory.mktemp("events") / "ds")
    index_events(out)
    return out


def _as_dict(index: ev.EventIndex) -> dict[str, dict[str, list[int]]]:
    """episode -> event -> frames, from an index."""
    found: dict[str, dict[str, list[int]]] = {}
    for name, rows in index.occurrences(index.names).items():
        for episode_id, frame in rows.tolist():
            found.setdefault(index.episodes[episode_id], {}).setdefault(name, []).append(frame)
    return {episode: {name: sorted(f) for name, f in per.items()} for episode, per in found.items()}


def test_index_finds_every_known_event(dataset: Path) -> None:
    index = load_event_index(dataset)
    assert _as_dict(index) == {name: event_frames(name) for name in EPISODES}
    assert event_counts(dataset) == {MINE_LOG: 7, KILL: 2, MINE_STONE: 2, CRAFT: 1}
    assert list(event_counts(dataset)) == [MINE_LOG, KILL, MINE_STONE, CRAFT]


def test_segmentation_event_is_the_end_of_its_frame_range() -> None:
    value = {"obj_id": 2, "rle_mask": "1 1", "event": MINE_LOG, "frame_range": (1, 3)}
    frames = [{}, {("0", MINE_LOG): value}, {("0", MINE_LOG): value}, {}]
    # The key is visible on frames 1-2 only, but the interaction completes at frame 3.
    assert segmentation_events(frames) == {MINE_LOG: [3]}
    # No usable frame range: the last frame showing the interaction.
    missing = {**value, "frame_range": (-1, -1)}
    assert segmentation_events([{("0", MINE_LOG): missing}, {("0", MINE_LOG): missing}]) == {MINE_LOG: [1]}
    # A range running past the episode: the last frame showing it.
    late = {**value, "frame_range": (0, 50)}
    assert segmentation_events([{("0", MINE_LOG): late}, {}]) == {MINE_LOG: [0]}


def test_meta_info_wins_over_segmentation_per_event_name() -> None:
    value = {"obj_id": 2, "rle_mask": "1 1", "event": MINE_STONE, "frame_range": (0, 1)}
    craft = {"obj_id": 4, "rle_mask": "1 1", "event": CRAFT, "frame_range": (2, 2)}
    segmentation = [{("0", MINE_STONE): value}, {("0", MINE_STONE): value}, {("1", CRAFT): craft}]
    meta_info = [{}, {}, {"events": {MINE_STONE: 1}}]
    assert episode_events(segmentation, meta_info) == {MINE_STONE: [2], CRAFT: [2]}
    assert episode_events(segmentation, None) == {MINE_STONE: [1], CRAFT: [2]}


def test_rerun_indexes_only_new_episodes(tmp_path: Path) -> None:
    out = write_event_dataset(tmp_path / "ds", names=["ep-a", "ep-b"])
    first = index_events(out)
    assert sorted(first.indexed) == ["ep-a", "ep-b"]
    again = index_events(out)
    assert again.indexed == [] and again.already_indexed == 2
    write_event_dataset(out, names=["ep-c", "ep-d"])
    added = index_events(out)
    assert sorted(added.indexed) == ["ep-c", "ep-d"] and added.already_indexed == 2
    assert _as_dict(load_event_index(out)) == {name: event_frames(name) for name in EPISODES}
    rebuilt = index_events(out, rebuild=True)
    assert sorted(rebuilt.indexed) == sorted(EPISODES)
    assert _as_dict(load_event_index(out)) == {name: event_frames(name) for name in EPISODES}


def test_episode_is_reindexed_when_a_source_modality_arrives(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    full = make_episode("ep-b", *EPISODES["ep-b"])
    with DatasetWriter(out, chunk_size=16) as writer:
        writer.write(Episode("ep-b", segmentation=full.segmentation))
    index_events(out)
    assert _as_dict(load_event_index(out))["ep-b"][MINE_STONE] == [21]  # segmentation only
    with DatasetWriter(out, chunk_size=16) as writer:
        writer.write(Episode("ep-b", meta_info=full.meta_info))
    report = index_events(out)
    assert report.indexed == ["ep-b"]
    assert _as_dict(load_event_index(out)) == {"ep-b": event_frames("ep-b")}


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = write_event_dataset(tmp_path / "ds", names=["ep-a"])
    index_events(out)
    before = (out / INDEX_NAME).read_bytes()
    write_event_dataset(out, names=["ep-b"])

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        index_events(out)
    assert (out / INDEX_NAME).read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if "event" in p.name) == [INDEX_NAME]


def test_interrupted_run_keeps_saved_progress(tmp_path: Path) -> None:
    out = write_event_dataset(tmp_path / "ds")
    seen: list[str] = []

    def stop_after_three(name: str) -> None:
        seen.append(name)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index_events(out, save_every=2, on_item=stop_after_three)
    assert sorted(load_event_index(out).episodes) == ["ep-a", "ep-b"]
    resumed = index_events(out)
    assert sorted(resumed.indexed) == ["ep-c", "ep-d"]


def test_unreadable_episode_is_reported_and_retried(tmp_path: Path) -> None:
    out = write_event_dataset(tmp_path / "ds", names=["ep-a", "ep-b"])
    part = out / "segmentation" / "part-0"
    with lmdb.open(str(part)) as env, env.begin(write=True) as txn:
        txn.put(b"(1, 16)", b"not a pickle")
    report = index_events(out)
    assert report.indexed == ["ep-a"]
    assert [name for name, _ in report.failed] == ["ep-b"]
    assert "(1, 16)" in report.failed[0][1]
    assert index_events(out).failed[0][0] == "ep-b"  # tried again, still broken


def test_missing_index_names_the_command(tmp_path: Path) -> None:
    out = write_event_dataset(tmp_path / "ds", names=["ep-a"])
    with pytest.raises(DataError, match=r"minetrain data index-events .*ds"):
        load_event_index(out)
    with pytest.raises(DataError, match="minetrain data index-events"):
        query_events([out], ".*")
    assert event_counts(out) is None


def test_corrupt_index_says_rebuild(tmp_path: Path) -> None:
    (tmp_path / INDEX_NAME).write_bytes(b"garbage")
    with pytest.raises(DataError, match="--rebuild"):
        load_event_index(tmp_path)


def test_no_source_modality(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    with pytest.raises(DataError, match="segmentation/ or meta_info/"):
        index_events(tmp_path)


def test_query_regex_filters_with_match_semantics(dataset: Path) -> None:
    found = query_events([dataset], "minecraft.mine_block:.*")
    assert found.event_names == [MINE_LOG, MINE_STONE]
    assert found.counts() == {MINE_LOG: 7, MINE_STONE: 2}
    assert query_events([dataset], ".*stone").counts() == {MINE_STONE: 2}
    # re.match anchors at the start, as in the reference: a bare suffix does not match.
    with pytest.raises(ConfigError):
        query_events([dataset], "stone")


def test_regex_matching_nothing_lists_top_events(dataset: Path) -> None:
    with pytest.raises(ConfigError) as err:
        query_events([dataset], "minecraft.use_item:.*")
    message = str(err.value)
    assert "\n" not in message
    assert f"{MINE_LOG} (7)" in message and f"{KILL} (2)" in message
    assert message.index(MINE_LOG) < message.index(CRAFT)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        query_events([dataset], "(")


def test_min_nearby_keeps_occurrences_at_least_that_far_apart(dataset: Path) -> None:
    found = query_events([dataset], MINE_LOG)

    def frames(occ: ev.Occurrences) -> dict[str, list[int]]:
        per: dict[str, list[int]] = {}
        for episode, frame in zip(occ.episode.tolist(), occ.frame.tolist(), strict=True):
            per.setdefault(occ.episodes[episode], []).append(frame)
        return per

    assert frames(found)["ep-a"] == [40, 45, 90]
    assert frames(dedupe_nearby(found, 5))["ep-a"] == [40, 45, 90]  # exactly 5 apart is kept
    assert frames(dedupe_nearby(found, 6))["ep-a"] == [40, 90]
    assert frames(dedupe_nearby(found, 60))["ep-a"] == [40]
    assert frames(dedupe_nearby(found, 60))["ep-c"] == [5, 69]
    # Per event: a stone event next to a log event in ep-b is not a duplicate of it.
    both = dedupe_nearby(query_events([dataset], "minecraft.mine_block:.*"), 100)
    assert both.counts() == {MINE_LOG: 4, MINE_STONE: 1}


def test_max_within_caps_each_event_with_a_seeded_subset(dataset: Path) -> None:
    found = query_events([dataset], "minecraft.mine_block:.*")
    capped = cap_per_event(found, 3, seed=0)
    assert capped.counts() == {MINE_LOG: 3, MINE_STONE: 2}
    again = cap_per_event(found, 3, seed=0)
    assert np.array_equal(capped.frame, again.frame) and np.array_equal(capped.episode, again.episode)
    picks = {tuple(cap_per_event(found, 3, seed=s).frame.tolist()) for s in range(8)}
    assert len(picks) > 1
    with pytest.raises(ConfigError):
        cap_per_event(found, 0)


def test_several_dirs_count_an_episode_once(tmp_path: Path, dataset: Path) -> None:
    other = write_event_dataset(tmp_path / "other", names=["ep-a"])
    index_events(other)
    found = query_events([dataset, other], MINE_LOG)
    assert found.counts() == {MINE_LOG: 7}


def _write_reference_index(path: Path, items: dict[str, list[tuple[str, int]]]) -> None:
    """The layout the reference's event converter writes (codebook of episode names)."""
    codebook: dict[str, str] = {}
    with lmdb.open(str(path), map_size=1 << 24) as env, env.begin(write=True) as txn:
        info = {}
        for event, rows in items.items():
            info[event] = {"__num_items__": len(rows), "__num_episodes__": len({e for e, _ in rows})}
            for i, (episode, frame) in enumerate(rows):
                code = codebook.setdefault(episode, str(len(codebook)))
                txn.put(str((event, i)).encode(), pickle.dumps((code, frame, 1)))
        txn.put(b"__event_info__", pickle.dumps(info))
        txn.put(b"__num__events__", pickle.dumps(len(items)))
        txn.put(b"__codebook__", pickle.dumps(codebook))


def test_reads_the_reference_event_lmdb(tmp_path: Path) -> None:
    _write_reference_index(
        tmp_path / "event", {MINE_LOG: [("ep-a", 40), ("ep-a", 90), ("ep-c", 69)], KILL: [("ep-d", 30)]}
    )
    assert event_counts(tmp_path) == {MINE_LOG: 3, KILL: 1}
    found = query_events([tmp_path], MINE_LOG)
    assert [(found.episodes[e], f) for e, f in zip(found.episode, found.frame, strict=True)] == [
        ("ep-a", 40),
        ("ep-a", 90),
        ("ep-c", 69),
    ]


REFERENCE_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "event_reference"


def _listing(path: Path) -> list[tuple[str, str, int]]:
    found = query_events([path], ".*")
    return [
        (found.event_names[e], found.episodes[p], f)
        for e, p, f in zip(found.event.tolist(), found.episode.tolist(), found.frame.tolist(), strict=True)
    ]


def test_index_written_by_the_reference_converter_matches_ours(tmp_path: Path) -> None:
    """scripts/make_event_fixtures.py ran MineStudio's event converter on these episodes."""
    definition = json.loads((REFERENCE_FIXTURE / "episodes.json").read_text())
    expected = sorted(
        (event, name, int(frame))
        for name, (_, events) in definition.items()
        for frame, names in events.items()
        for event in names
    )
    assert sorted(_listing(REFERENCE_FIXTURE)) == expected
    out = tmp_path / "ds"
    with DatasetWriter(out, chunk_size=32) as writer:
        for name, (length, events) in definition.items():
            meta = [{"events": dict.fromkeys(events.get(str(t), []), 1)} for t in range(length)]
            writer.write(Episode(name, meta_info=meta))
    index_events(out)
    assert _listing(out) == _listing(REFERENCE_FIXTURE)


def test_segmentation_events_are_named_by_the_full_event_not_the_key_type() -> None:
    value = {"obj_id": 2, "rle_mask": "1 1", "event": MINE_LOG, "frame_range": (0, 1)}
    assert segmentation_events([{("0", "minecraft.mine_block"): value}, {}]) == {MINE_LOG: [1]}
    unnamed = {key: v for key, v in value.items() if key != "event"}
    type_only = {"minecraft.mine_block": [1]}
    assert segmentation_events([{("0", "minecraft.mine_block"): unnamed}, {}]) == type_only


def test_the_references_regex_convention_selects_segmentation_events(dataset: Path) -> None:
    # ep-a, ep-c and ep-d have no meta_info events: their occurrences come from segmentation only.
    found = query_events([dataset], "minecraft.mine_block:.*")
    assert found.event_names == [MINE_LOG, MINE_STONE]
    assert {found.episodes[i] for i in found.episode.tolist()} >= {"ep-a", "ep-c", "ep-d"}


def test_an_index_of_version_1_is_a_one_line_error_and_index_events_rebuilds_it(tmp_path: Path) -> None:
    out = write_event_dataset(tmp_path / "ds", names=["ep-a"])
    index_events(out)
    path = out / INDEX_NAME
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta.update(version=1, events=["minecraft.kill_entity", "minecraft.mine_block"])
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        load_event_index(out)
    message = str(info.value)
    assert "\n" not in message and "version 1" in message and f"index-events {out} --rebuild" in message
    report = index_events(out)
    assert report.indexed == ["ep-a"]
    assert event_counts(out) == {MINE_LOG: 3, KILL: 1}
