"""Opt-in batch fields the reference offers: ``meta_info`` and video augmentation."""

import numpy as np
import pytest
import torch

from minetrain.data import MineDataModule, RawDataset
from minetrain.data.augment import VideoAugmentation
from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.synth import synth_episode, write_synthetic_dataset

LENGTHS = [20, 13, 9]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("extras") / "d", size=32, lengths=LENGTHS, chunk_size=8
    )


def dataset(path, **kwargs):
    return RawDataset(
        [str(path)], **{**dict(frame_width=32, frame_height=32, win_len=8, split_ratio=1.0), **kwargs}
    )


def test_meta_info_is_per_frame_values_with_none_on_padding(dataset_dir):
    data = dataset(dataset_dir, enable_contractor_info=True)
    store = TrajectoryStore(dataset_dir, modalities=("meta_info",))
    last = data.windows.offsets[1] - 1  # the last window of the first episode: 4 real frames, 4 padding
    batch = data.__getitems__([0, int(last)])
    episode = data.episodes[0]
    frames = store.read(episode, "meta_info", 0, LENGTHS[0])
    assert set(batch["meta_info"]) == {"yaw", "pitch", "isGuiOpen"}
    assert batch["meta_info"]["yaw"][0] == [frame["yaw"] for frame in frames[:8]]
    assert batch["meta_info"]["pitch"][1] == [frame["pitch"] for frame in frames[16:]] + [None] * 4
    assert data[0]["meta_info"]["isGuiOpen"] == [False] * 8
    assert "meta_info" not in dataset(dataset_dir)[0]


def test_meta_info_fields_missing_in_a_window_are_none(tmp_path):
    length = 6
    image = np.zeros((length, 16, 16, 3), np.uint8)
    action = synth_episode(0, length, size=16).action
    metas = [[{"yaw": 1.0}] * length, [{"yaw": 2.0, "events": {"minecraft.mine_block:x": 1}}] + [{}] * 5]
    with DatasetWriter(tmp_path, chunk_size=8) as writer:
        for i, meta in enumerate(metas):
            writer.write(Episode(f"e{i}", image=image, action=action, meta_info=meta))
    data = RawDataset(tmp_path, frame_width=16, frame_height=16, win_len=8, split_ratio=1.0,
                      enable_segment=False, enable_contractor_info=True)  # fmt: skip
    batch = data.__getitems__([0, 1])
    assert batch["meta_info"]["yaw"] == [[1.0] * 6 + [None] * 2, [2.0] + [None] * 7]
    assert batch["meta_info"]["events"] == [[None] * 8, [{"minecraft.mine_block:x": 1}] + [None] * 7]


def test_the_datamodule_passes_the_reference_flags(dataset_dir):
    params = dict(dataset_dirs=[str(dataset_dir)], frame_width=32, frame_height=32, win_len=8)
    module = MineDataModule(
        {**params, "enable_contractor_info": True, "enable_video_aug": True}, split_ratio=1.0
    )
    module.setup()
    assert module.train_dataset.enable_contractor_info and module.train_dataset.enable_video_aug


def test_augmentation_kinds_and_ranges():
    draws = [VideoAugmentation.draw(0, 0, index) for index in range(200)]
    for name, low, high in [("brightness", 0.8, 1.2), ("contrast", 0.8, 1.2), ("saturation", 0.8, 1.2),
                            ("hue", -0.1, 0.1), ("rotate", -4.0, 2.0), ("scale", 0.98, 1.02)]:  # fmt: skip
        values = [getattr(draw, name) for draw in draws]
        assert low <= min(values) and max(values) <= high and max(values) - min(values) > (high - low) / 2
    assert all(-2 <= s <= 2 for draw in draws for s in draw.shear)
    assert len({draw.order for draw in draws}) > 10
    frames = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    same = frames.copy()
    VideoAugmentation().apply(same)
    np.testing.assert_array_equal(same, frames)
    grey = np.full((1, 24, 24, 3), 100, np.uint8)
    brighter = grey.copy()
    VideoAugmentation(brightness=1.2, hue=0.1, saturation=0.8, contrast=1.2).apply(brighter)
    assert (brighter == 120).all()  # grey stays grey under hue, saturation and contrast
    dot = np.zeros((1, 101, 101, 3), np.uint8)
    dot[0, 48:53, 85:90] = 255  # right of the centre
    below = np.ascontiguousarray(dot.transpose(0, 2, 1, 3))  # below the centre
    # Directions and amounts as the reference's warp (measured with albumentations 2.0.8 in its venv).
    for draw, image, centre in [(VideoAugmentation(rotate=20.0), dot, (37.4, 84.7)),
                                (VideoAugmentation(shear=(10.0, 0.0)), below, (87.0, 43.5)),
                                (VideoAugmentation(shear=(0.0, 10.0)), dot, (43.5, 87.0))]:  # fmt: skip
        warped = image.copy()
        draw.apply(warped)
        rows, cols = np.nonzero(warped[0, ..., 0] > 100)
        assert abs(rows.mean() - centre[0]) < 0.5 and abs(cols.mean() - centre[1]) < 0.5
    turned = frames[:1].copy()
    VideoAugmentation(rotate=2.0).apply(turned)
    assert np.abs(turned[:, 8:16, 8:16].astype(int) - frames[:1, 8:16, 8:16]).mean() > 0


def test_augmentation_is_one_draw_per_window_deterministic_per_item_and_epoch(dataset_dir):
    plain = dataset(dataset_dir)
    augmented = dataset(dataset_dir, enable_video_aug=True)
    again = dataset(dataset_dir, enable_video_aug=True)
    last = int(augmented.windows.offsets[1] - 1)
    a, b, ref = (
        augmented.__getitems__([0, last]),
        again.__getitems__([0, last]),
        plain.__getitems__([0, last]),
    )
    assert torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"][0], ref["image"][0])
    assert (a["image"][1, 4:] == 0).all()  # padding frames stay black
    for key in ("mask", "timestamp"):
        assert torch.equal(a[key], ref[key])
    assert all(torch.equal(a["env_action"][key], value) for key, value in ref["env_action"].items())
    assert torch.equal(a["segment"]["obj_mask"], ref["segment"]["obj_mask"])  # the mask is not warped
    again.set_epoch(1)
    assert not torch.equal(again.__getitems__([0, last])["image"], a["image"])
    # Every frame of a window gets the same draw: the window equals frame-wise application of it.
    frames = ref["image"][0].numpy().copy()
    VideoAugmentation.draw(augmented.seed, 0, 0).apply(frames)
    np.testing.assert_array_equal(frames, a["image"][0].numpy())


def test_meta_info_and_augmentation_come_through_loader_workers(dataset_dir):
    params = dict(dataset_dirs=[str(dataset_dir)], frame_width=32, frame_height=32, win_len=8)
    flags = {"enable_contractor_info": True, "enable_video_aug": True}
    batches = []
    for workers in (0, 1):
        module = MineDataModule({**params, **flags}, batch_size=2, num_workers=workers, split_ratio=1.0)
        module.setup()
        batches.append(next(iter(module.train_dataloader())))
    assert batches[0]["meta_info"] == batches[1]["meta_info"]
    assert torch.equal(batches[0]["image"], batches[1]["image"])
