"""Event mode: windows anchored on event occurrences, through ``EventDataset`` and ``MineDataModule``."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from event_fixtures import (
    EPISODES,
    KILL,
    MINE_LOG,
    MINE_STONE,
    event_frames,
    make_episode,
    write_event_dataset,
)
from resume_harness import fit_recording

from minetrain.data import MineDataModule
from minetrain.data.dataset import RawDataset
from minetrain.data.event_dataset import EventDataset
from minetrain.data.events import index_events
from minetrain.data.sampler import EpisodeContinuousBatchSampler
from minetrain.data.store import DatasetWriter
from minetrain.errors import ConfigError, DataError

SIZE = dict(frame_width=16, frame_height=16)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four fixture episodes, indexed."""
    out = write_event_dataset(tmp_path_factory.mktemp("small") / "ds")
    index_events(out)
    return out


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve episodes (three copies of each fixture episode), indexed: enough to split and shard."""
    out = tmp_path_factory.mktemp("large") / "ds"
    names = list(EPISODES)
    with DatasetWriter(out, chunk_size=16, image_preset="ultrafast") as writer:
        for i in range(12):
            writer.write(make_episode(f"{names[i % 4]}-{i:02d}", *EPISODES[names[i % 4]]))
    index_events(out)
    return out


def dataset(path: Path, **params: object) -> EventDataset:
    return EventDataset([path], **{"win_len": 8, "split_ratio": 1.0, **SIZE, **params})


def infos(ds: EventDataset) -> list[tuple[str, str, int]]:
    return [ds.item_info(i) for i in range(len(ds))]


def test_every_matching_occurrence_is_an_item(small: Path) -> None:
    ds = dataset(small, event_regex="minecraft.mine_block:.*")
    expected = sorted(
        (episode, event, frame)
        for episode in EPISODES
        for event, frames in event_frames(episode).items()
        if event.startswith("minecraft.mine_block:")
        for frame in frames
    )
    assert sorted(infos(ds)) == expected
    assert ds.event_counts() == {MINE_LOG: 7, MINE_STONE: 2}
    assert sum(ds.window_counts) == len(ds) == 9


def test_regex_selects_events(small: Path) -> None:
    assert {event for _, event, _ in infos(dataset(small, event_regex="minecraft.kill_entity:.*"))} == {KILL}
    assert dataset(small, event_regex=".*").event_counts() == {
        MINE_LOG: 7,
        KILL: 2,
        MINE_STONE: 2,
        "minecraft.craft_item:minecraft:oak_planks": 1,
    }


def test_min_nearby_and_max_within(small: Path) -> None:
    ds = dataset(small, event_regex=MINE_LOG, min_nearby=6)
    assert [f for e, _, f in infos(ds) if e == "ep-a"] == [40, 90]  # 45 is 5 frames after 40
    ds = dataset(small, event_regex="minecraft.mine_block:.*", max_within=3)
    assert ds.event_counts() == {MINE_LOG: 3, MINE_STONE: 2}
    assert infos(ds) == infos(dataset(small, event_regex="minecraft.mine_block:.*", max_within=3))


@pytest.mark.parametrize(("skip_frame", "bias"), [(1, 0), (1, 3), (1, -3), (2, 0), (2, 4), (3, 2)])
def test_window_ends_at_event_frame_plus_bias(small: Path, skip_frame: int, bias: int) -> None:
    ds = dataset(small, event_regex=".*", skip_frame=skip_frame, bias=bias)
    for index in range(len(ds)):
        episode, _, frame = ds.item_info(index)
        item = ds[index]
        timestamp = item["timestamp"].numpy()
        expected = frame + bias - skip_frame * np.arange(8)[::-1]
        inside = (expected >= 0) & (expected < EPISODES[episode][0])
        assert timestamp.tolist() == np.where(inside, expected, -1).tolist()
        assert item["mask"].numpy().tolist() == inside.astype(int).tolist()
        position = 7 - bias // skip_frame
        if bias >= 0 and bias % skip_frame == 0 and inside[position]:
            # The attack button is pressed exactly on event frames: it shows where the event is.
            assert timestamp[position] == frame and item["env_action"]["attack"][position] == 1


def test_windows_near_the_episode_edges_are_padded_not_shifted(small: Path) -> None:
    ds = dataset(small, event_regex=MINE_LOG, bias=3)
    by_frame = {(e, f): i for i, (e, _, f) in enumerate(infos(ds))}
    early = ds[by_frame[("ep-c", 5)]]  # frames 1..8: all inside
    assert early["timestamp"].tolist() == list(range(1, 9))
    late = ds[by_frame[("ep-c", 69)]]  # frames 65..72 of a 70-frame episode
    assert late["timestamp"].tolist() == [65, 66, 67, 68, 69, -1, -1, -1]
    assert late["mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    ds = dataset(small, event_regex=MINE_LOG, win_len=12)
    first = ds[next(i for i, (e, _, f) in enumerate(infos(ds)) if (e, f) == ("ep-c", 5))]
    assert first["timestamp"].tolist() == [-1] * 6 + list(range(6))
    assert first["first"].tolist() == [False] * 6 + [True] + [False] * 5
    assert first["image"][:6].sum() == 0 and first["segment"]["obj_id"][:6].tolist() == [-1] * 6


def test_windows_entirely_outside_the_episode_are_left_out(small: Path) -> None:
    ds = dataset(small, event_regex=MINE_LOG, bias=-10, win_len=4)
    assert ("ep-c", MINE_LOG, 5) not in infos(ds)  # would end at frame -5
    assert ("ep-c", MINE_LOG, 69) in infos(ds)


def test_split_is_by_episode_as_in_raw_mode(large: Path) -> None:
    params = dict(split_ratio=0.75, shuffle_episodes=True, seed=3, win_len=8, **SIZE)
    for split in ("train", "val"):
        event = EventDataset([large], event_regex=".*", split=split, **params)
        raw = RawDataset([large], split=split, **params)
        assert event.episodes == raw.episodes
        assert {e for e, _, _ in infos(event)} <= set(raw.episodes)
    train = EventDataset([large], event_regex=".*", split="train", **params)
    val = EventDataset([large], event_regex=".*", split="val", **params)
    assert len(train) + len(val) == 12 * 3
    assert not {e for e, _, _ in infos(train)} & {e for e, _, _ in infos(val)}


def module(
    path: Path, batch_size: int = 2, continuous: bool = True, workers: int = 0, **params: object
) -> MineDataModule:
    return MineDataModule(
        data_params={
            "mode": "event",
            "dataset_dirs": [str(path)],
            "event_regex": "minecraft.mine_block:.*",
            "win_len": 8,
            **SIZE,
            **params,
        },
        batch_size=batch_size,
        num_workers=workers,
        split_ratio=0.75,
        shuffle_episodes=True,
        episode_continuous_batch=continuous,
    )


def test_batch_is_the_raw_batch_plus_the_event_name(large: Path) -> None:
    event_batch = next(iter(module(large).train_dataloader()))
    raw = MineDataModule(
        data_params=dict(mode="raw", dataset_dirs=[str(large)], win_len=8, **SIZE),
        batch_size=2,
        episode_continuous_batch=True,
    )
    raw_batch = next(iter(raw.train_dataloader()))

    def shapes(value: object) -> object:
        if isinstance(value, dict):
            return {key: shapes(v) for key, v in value.items()}
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype)
        return type(value).__name__

    extra = {"event", "text"}
    assert shapes({k: v for k, v in event_batch.items() if k not in extra}) == shapes(raw_batch)
    assert all(name.startswith("minecraft.mine_block:") for name in event_batch["event"])
    assert [t for t in event_batch["text"]] == [n.replace("minecraft.", "") for n in event_batch["event"]]


def signature(batch: dict) -> list[tuple[str, str, int]]:
    return [
        (episode, event, int(timestamp[-1]))
        for episode, event, timestamp in zip(
            batch["episode"], batch["event"], batch["timestamp"], strict=True
        )
    ]


def test_distributed_ranks_are_disjoint(large: Path) -> None:
    ds = module(large)
    ds.setup()
    train = ds.train_dataset
    for epoch in range(2):
        seen = []
        for rank in range(2):
            sampler = EpisodeContinuousBatchSampler(train.window_counts, 2, 2, rank, seed=0)
            sampler.set_epoch(epoch)
            seen.append({i for batch in sampler for i in batch})
        assert seen[0] and seen[1] and not seen[0] & seen[1]
    shuffled = module(large, continuous=False).train_dataloader()
    assert isinstance(shuffled.sampler, torch.utils.data.DistributedSampler)
    items = [s for batch in shuffled for s in signature(batch)]
    assert len(items) == len(set(items)) == len(train) // 2 * 2


def test_worker_processes_give_the_same_batches(large: Path) -> None:
    plain = [signature(b) for b in module(large).train_dataloader()]
    assert [signature(b) for b in module(large, workers=2).train_dataloader()] == plain


def test_resume_mid_epoch_through_the_module_state(large: Path) -> None:
    reference = [signature(b) for b in module(large).train_dataloader()]
    assert len(reference) >= 4
    state = {"sampler": {**module(large).train_dataloader().batch_sampler.state_dict(consumed=3)}}
    resumed = module(large)
    resumed.load_state_dict(state)
    assert [signature(b) for b in resumed.train_dataloader()] == reference[3:]


def fit(path: Path, max_steps: int, ckpt_dir: Path, ckpt_path: Path | None = None, every: int | None = None):
    return fit_recording(module(path), signature, 2, max_steps, ckpt_dir, ckpt_path=ckpt_path, every=every)


def test_lightning_resume_continues_with_the_next_batch(large: Path, tmp_path: Path) -> None:
    reference, trainer = fit(large, -1, tmp_path)
    per_epoch = trainer.num_training_batches
    assert len(reference) == 2 * per_epoch and reference[:per_epoch] != reference[per_epoch:]
    stop = per_epoch + 2
    before, _ = fit(large, stop, tmp_path, every=stop)
    (checkpoint,) = sorted(tmp_path.glob("*.ckpt"))
    after, _ = fit(large, -1, tmp_path, ckpt_path=checkpoint)
    assert before == reference[:stop]
    assert after == reference[stop:]


def test_regex_matching_nothing_lists_the_events_present(small: Path) -> None:
    with pytest.raises(ConfigError, match=rf"matches none .*most frequent: {MINE_LOG} \(7\)"):
        module(small, event_regex="minecraft.use_item:.*").setup()


def test_missing_index_suggests_the_command(tmp_path: Path) -> None:
    out = write_event_dataset(tmp_path / "ds", names=["ep-a"])
    with pytest.raises(DataError, match=rf"build it with `minetrain data index-events {out}`"):
        module(out).setup()


def test_bad_event_params(small: Path) -> None:
    with pytest.raises(ConfigError, match="min_nearby"):
        dataset(small, min_nearby=-1)
    with pytest.raises(ConfigError, match="max_within"):
        dataset(small, max_within=0)
    with pytest.raises(ConfigError, match=r"unknown data_params key.*event_regex"):
        MineDataModule(dict(mode="raw", dataset_dirs=[str(small)], event_regex=".*"))


def test_unreadable_window_raises_or_is_skipped(tmp_path: Path) -> None:
    out = write_event_dataset(tmp_path / "ds", names=["ep-a"])
    index_events(out)
    with lmdb.open(str(out / "image" / "part-0")) as env, env.begin(write=True) as txn:
        txn.put(b"(0, 32)", b"not an mp4")
    ds = dataset(out, event_regex=MINE_LOG)
    broken = next(i for i, (_, _, f) in enumerate(infos(ds)) if f == 40)
    with pytest.raises(DataError, match=r"\(0, 32\)"):
        ds[broken]
    ds = dataset(out, event_regex=MINE_LOG, on_error="skip")
    item = ds[broken]
    assert item["mask"].sum() == 0 and item["image"].sum() == 0 and item["event"] == MINE_LOG
    assert ds[next(i for i, (_, _, f) in enumerate(infos(ds)) if f == 90)]["mask"].sum() == 8
