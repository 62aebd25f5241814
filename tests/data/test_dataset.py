import logging

import lmdb
import numpy as np
import pytest
import torch

from minetrain.actions import BUTTONS, env_to_agent
from minetrain.data import RawDataset
from minetrain.data.loader import WindowLoader, collate_windows
from minetrain.data.sampler import EpisodeContinuousBatchSampler
from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import rle_encode
from minetrain.data.store.layout import chunk_key
from minetrain.errors import ConfigError, DataError

LENGTHS = [37, 20, 45, 9, 30]
A = ("1", "minecraft.mine_block:minecraft:stone")
B = ("2", "minecraft.kill_entity:minecraft:pig")


def box(top, left):
    mask = np.zeros((360, 640), dtype=np.uint8)
    mask[top : top + 90, left : left + 160] = 1
    return rle_encode(mask)


def make_episode(index: int, length: int) -> Episode:
    rng = np.random.default_rng(index)
    ramp = np.linspace(0, 200, 32, dtype=np.float64)
    image = np.stack(
        [np.full((32, 32, 3), (ramp[t % 32] + 7 * index) % 255, dtype=np.uint8) for t in range(length)]
    )
    image[:, :8, :8] = 255  # a corner marker so frames are not flat
    action = {key: rng.integers(0, 2, size=length) for key in BUTTONS}
    action["camera"] = rng.uniform(-12, 12, size=(length, 2))
    action["ESC"] = np.zeros(length, dtype=np.int64)
    segmentation = []
    for t in range(length):
        frame = {}
        if t % 5 != 4:
            frame[A] = {"obj_id": 2, "rle_mask": box(0, 0), "event": "mine", "point": (45, 80), "frame_id": t,
                        "frame_range": (0, length - 1)}  # fmt: skip
        if t % 3 != 2:
            frame[B] = {"obj_id": 1, "rle_mask": box(180, 320), "event": "kill", "point": None, "frame_id": t,
                        "frame_range": (0, length - 1)}  # fmt: skip
        segmentation.append(frame)
    return Episode(name=f"ep{index}", image=image, action=action, segmentation=segmentation)


def write(out):
    with DatasetWriter(out, chunk_size=8, image_preset="ultrafast") as writer:
        for index, length in enumerate(LENGTHS):
            writer.write(make_episode(index, length))
    return out


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return write(tmp_path_factory.mktemp("windows") / "d")


def dataset(path, **kwargs):
    params = dict(frame_width=32, frame_height=32, win_len=8, split_ratio=1.0)
    return RawDataset([str(path)], **{**params, **kwargs})


@pytest.mark.parametrize("skip", [1, 3])
def test_windows_hold_the_store_frames_and_actions(dataset_dir, skip):
    data = dataset(dataset_dir, skip_frame=skip)
    store = TrajectoryStore([str(dataset_dir)])
    assert data.window_counts == [-(-n // (8 * skip)) for n in LENGTHS]
    for index in range(len(data)):
        position, window = data.windows.locate(index)
        episode, length = data.episodes[position], data.windows.lengths[position]
        start = window * 8 * skip
        stop = min(start + 8 * skip, length)
        item = data[index]
        real = len(range(start, stop, skip))
        assert item["episode"] == episode
        assert item["mask"].tolist() == [1] * real + [0] * (8 - real)
        assert item["timestamp"].tolist() == list(range(start, stop, skip)) + [-1] * (8 - real)
        assert item["first"].tolist() == [t == 0 for t in item["timestamp"].tolist()]
        frames = store.read(episode, "image", start, stop, size=(32, 32))[::skip]
        assert torch.equal(item["image"][:real], torch.from_numpy(frames))
        assert item["image"][real:].sum() == 0
        actions = store.read(episode, "action", start, stop)
        for t in range(real):
            rows = slice(t * skip, (t + 1) * skip)
            for key in BUTTONS:
                assert item["env_action"][key][t] == actions[key][rows].max()
            assert np.allclose(item["env_action"]["camera"][t], actions["camera"][rows].sum(0), atol=1e-4)
        assert "ESC" not in item["env_action"]
        assert all(item["env_action"][key][real:].sum() == 0 for key in item["env_action"])
        expected = env_to_agent({key: value.numpy() for key, value in item["env_action"].items()})
        assert all(np.array_equal(item["agent_action"][key].numpy(), expected[key]) for key in expected)


def test_padding_has_no_condition(dataset_dir):
    data = dataset(dataset_dir)
    for index in range(len(data)):
        item = data[index]
        pad = item["mask"] == 0
        segment = item["segment"]
        assert (segment["obj_id"][pad] == -1).all()
        assert segment["obj_mask"][pad].sum() == 0
        assert (segment["point"][pad] == -1).all()
        assert [e for e, p in zip(segment["event"], pad.tolist(), strict=True) if p] == [""] * int(pad.sum())
    item = data[0]  # ep0 frame 0 shows A (mine, type 2) and B (raw 1 -> interact, type 3)
    assert set(item["segment"]["obj_id"].tolist()) <= {2, 3}
    assert item["segment"]["obj_mask"].shape == (8, 32, 32)


def test_relabelling_is_deterministic_per_epoch_and_item(dataset_dir):
    first = dataset(dataset_dir)
    second = dataset(dataset_dir)
    ids = lambda data: [data[i]["segment"]["obj_id"].tolist() for i in range(len(data))]  # noqa: E731
    assert ids(first) == ids(second)
    epoch0 = ids(first)
    first.set_epoch(1)
    assert ids(first) != epoch0
    first.set_epoch(0)
    assert ids(first) == epoch0


def test_condition_dropout_per_window(dataset_dir):
    data = dataset(dataset_dir, condition_dropout=0.5)
    dropped = 0
    for epoch in range(8):
        data.set_epoch(epoch)
        for index in range(len(data)):
            obj_id = data[index]["segment"]["obj_id"]
            dropped += bool((obj_id == -1).all())
    assert 0.3 < dropped / (8 * len(data)) < 0.7


def test_previous_action(dataset_dir):
    for skip in (1, 2):
        data = dataset(dataset_dir, skip_frame=skip, enable_prev_action=True)
        item = data[data.windows.offsets[2]]  # first window of the third episode
        nxt = data[data.windows.offsets[2] + 1]
        assert item["timestamp"][0] == 0
        assert all(item["env_prev_action"][key][0] == 0 for key in BUTTONS)
        for key in BUTTONS:
            assert torch.equal(item["env_prev_action"][key][1:], item["env_action"][key][:-1])
            assert nxt["env_prev_action"][key][0] == item["env_action"][key][-1]
        assert torch.allclose(nxt["env_prev_action"]["camera"][0], item["env_action"]["camera"][-1])
        assert set(item["agent_prev_action"]) == {"buttons", "camera"}


def test_split_is_stable_and_by_episode(dataset_dir):
    kwargs = dict(split_ratio=0.6, shuffle_episodes=True, seed=4)
    train, val = dataset(dataset_dir, split="train", **kwargs), dataset(dataset_dir, split="val", **kwargs)
    assert len(train.episodes) == 3 and len(val.episodes) == 2
    assert sorted(train.episodes + val.episodes) == [f"ep{i}" for i in range(5)]
    assert dataset(dataset_dir, split="train", **kwargs).episodes == train.episodes
    plain = dataset(dataset_dir, split="train", split_ratio=0.6)
    assert plain.episodes == ["ep0", "ep1", "ep2"]


def test_bad_arguments(dataset_dir):
    with pytest.raises(ConfigError, match="on_error"):
        dataset(dataset_dir, on_error="ignore")
    with pytest.raises(ConfigError, match="condition_dropout"):
        dataset(dataset_dir, condition_dropout=1.5)


def corrupt(path, episode_idx, chunk_start, payload):
    part = next((path / "image").iterdir())
    env = lmdb.open(str(part), subdir=part.is_dir())
    with env.begin(write=True) as txn:
        if payload is None:
            txn.delete(chunk_key(episode_idx, chunk_start))
        else:
            txn.put(chunk_key(episode_idx, chunk_start), payload)
    env.close()


@pytest.mark.parametrize("payload", [None, b"not an mp4"])
def test_bad_chunk_raises_or_is_skipped_and_counted(tmp_path, payload, caplog):
    path = write(tmp_path / "d")
    corrupt(path, 2, 8, payload)  # ep2, frames 8..15: its second window
    strict = dataset(path)
    with pytest.raises(DataError, match=r"episode ep2 chunk \(2, 8\)"):
        strict[strict.windows.offsets[2] + 1]

    lenient = dataset(path, on_error="skip")
    with caplog.at_level(logging.WARNING):
        item = lenient[lenient.windows.offsets[2] + 1]
    assert "skipping window 1 of episode ep2" in caplog.text
    assert item["mask"].sum() == 0 and item["first"][0] and (item["segment"]["obj_id"] == -1).all()

    sampler = EpisodeContinuousBatchSampler(lenient.window_counts, 2, 1, 0, shuffle=False)
    for workers in (0, 2):
        loader = WindowLoader(lenient, batch_sampler=sampler, collate_fn=collate_windows, num_workers=workers)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            batches = list(loader)
        assert len(batches) == len(sampler)
        assert loader.skipped_windows == {0: 1}
        assert "epoch 0: 1 train window(s) were skipped" in caplog.text


def test_batch_buffers_are_reused_only_when_released(dataset_dir):
    data = dataset(dataset_dir)
    storage = lambda tensor: tensor.untyped_storage().data_ptr()  # noqa: E731
    first = data.__getitems__([0, 1])
    expected = first["image"].clone()
    held = first["image"][1]  # a view keeps the whole batch buffer alive
    del first
    second = data.__getitems__([2, 3])
    assert storage(second["image"]) != storage(held)
    assert torch.equal(held, expected[1])
    pointers = {storage(held), storage(second["image"])}
    del held, second
    again = data.__getitems__([0, 1])
    assert storage(again["image"]) in pointers
    assert torch.equal(again["image"], expected)
