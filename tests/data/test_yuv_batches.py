"""``image_format='yuv420'``: batches of I420 planes that parse_batch makes the RGB path's frames."""

import numpy as np
import pytest
import torch

from minetrain.data import RawDataset
from minetrain.data.datamodule import MineDataModule
from minetrain.data.event_dataset import EventDataset
from minetrain.data.events import index_events
from minetrain.data.synth import write_synthetic_dataset
from minetrain.errors import ConfigError
from minetrain.models.inputs import parse_batch

WIN = 8


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    # Lengths that leave a padded last window; stored at 64x64.
    return write_synthetic_dataset(tmp_path_factory.mktemp("yuv"), lengths=[37, 21], size=64)


def pair(dataset_dir, size: int, **kwargs) -> tuple[RawDataset, RawDataset]:
    common = dict(frame_width=size, frame_height=size, win_len=WIN, split_ratio=1.0, **kwargs)
    return RawDataset(dataset_dir, **common), RawDataset(dataset_dir, image_format="yuv420", **common)


@pytest.mark.parametrize("size", [64, 32, 48])
def test_yuv_batches_become_the_rgb_batches_on_the_device(dataset_dir, size):
    rgb_set, yuv_set = pair(dataset_dir, size)
    indices = list(range(len(rgb_set)))
    rgb, yuv = rgb_set.__getitems__(indices), yuv_set.__getitems__(indices)
    assert yuv["image"].shape == (len(indices), WIN, 96, 64)  # stored 64x64: 3/2 * 64 rows
    assert yuv["image"].dtype == torch.uint8
    assert yuv["frame_size"].tolist() == [[size, size]] * len(indices)
    assert yuv["segment"]["obj_mask"].shape == rgb["segment"]["obj_mask"].shape  # masks at the frame size
    for key in ("mask", "timestamp", "first"):
        assert torch.equal(rgb[key], yuv[key])
    ours = parse_batch(yuv, torch.device("cpu")).image
    theirs = parse_batch(rgb, torch.device("cpu")).image
    assert ours.shape == theirs.shape == (len(indices), WIN, size, size, 3)
    diff = (ours.int() - theirs.int()).abs()
    assert int(diff.max()) <= 1 and float(diff.float().mean()) <= 0.5
    padding = rgb["mask"] == 0
    assert padding.any() and int(ours[padding].max()) == 0  # padding frames are black


def test_batch_shapes_follow_the_image_format(dataset_dir):
    rgb_set, yuv_set = pair(dataset_dir, 32)
    assert rgb_set.batch_shapes(2)["image"] == (2, WIN, 32, 32, 3)
    assert yuv_set.batch_shapes(2)["image"] == (2, WIN, 96, 64)
    assert yuv_set.batch_shapes(2)["segment/obj_mask"] == rgb_set.batch_shapes(2)["segment/obj_mask"]


def test_workers_deliver_yuv_batches_through_the_ring(dataset_dir):
    params = dict(dataset_dirs=[str(dataset_dir)], frame_width=32, frame_height=32, win_len=WIN)
    loaded = {}
    for image_format, workers in (("rgb", 0), ("yuv420", 2)):
        module = MineDataModule(
            dict(params, image_format=image_format), batch_size=2, num_workers=workers, split_ratio=1.0
        )
        module.setup()
        loaded[image_format] = [parse_batch(b, torch.device("cpu")).image for b in module.train_dataloader()]
    assert len(loaded["rgb"]) == len(loaded["yuv420"])
    for a, b in zip(loaded["rgb"], loaded["yuv420"], strict=True):
        assert int((a.int() - b.int()).abs().max()) <= 1


def test_event_windows_take_the_image_format(dataset_dir):
    index_events(dataset_dir)
    events = EventDataset(dataset_dir, event_regex=".*", win_len=WIN, split_ratio=1.0, image_format="yuv420",
                          frame_width=64, frame_height=64)  # fmt: skip
    assert events.batch_shapes(1)["image"] == (1, WIN, 96, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(frame_width=33), "even frame_width"),
        (dict(enable_video_aug=True), "enable_video_aug"),
        (dict(frame_width=32, frame_height=32, resize_interpolation="antialias"), "linear"),
        (dict(image_format="bgr"), "image_format must be one of"),
    ],
)
def test_unusable_yuv_settings_are_one_line_config_errors(dataset_dir, kwargs, message):
    kwargs = {"image_format": "yuv420", **kwargs}
    with pytest.raises(ConfigError, match=message) as info:
        RawDataset(dataset_dir, win_len=WIN, **kwargs)
    assert "\n" not in str(info.value)


def test_odd_plane_shapes_are_rejected_by_parse_batch():
    with pytest.raises(ConfigError, match="I420 planes"):
        parse_batch({"image": torch.zeros(1, 2, 95, 64, dtype=torch.uint8)}, torch.device("cpu"))
    with pytest.raises(ConfigError, match="frame_size"):
        planes = torch.zeros(2, 2, 96, 64, dtype=torch.uint8)
        parse_batch({"image": planes, "frame_size": torch.tensor([[32, 32], [16, 16]])}, torch.device("cpu"))


def test_yuv_planes_without_frame_size_keep_their_size():
    planes = np.zeros((1, 1, 48, 32), np.uint8)
    planes[..., :32, :] = 16
    planes[..., 32:, :] = 128
    image = parse_batch({"image": torch.from_numpy(planes)}, torch.device("cpu")).image
    assert image.shape == (1, 1, 32, 32, 3) and int(image.max()) == 0
