"""The batch contract (``modalities.batch_fields``) against real batches, and the modality records."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from minetrain.data import RawDataset
from minetrain.data.datamodule import MineDataModule
from minetrain.data.event_dataset import EventDataset
from minetrain.data.events import index_events
from minetrain.data.store import MODALITIES, layout
from minetrain.data.store.modalities import MODALITY_SPECS, Field, batch_fields
from minetrain.data.synth import synth_episode, write_synthetic_dataset
from minetrain.errors import DataError

WIN, SIZE = 8, 32


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    # Lengths that leave a padded last window; stored at 64x64, batched at 32x32.
    path = write_synthetic_dataset(tmp_path_factory.mktemp("contract"), lengths=[37, 21], size=64)
    index_events(path)
    return path


def flatten(batch: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in batch.items():
        if isinstance(value, dict) and key != "meta_info":
            flat |= flatten(value, f"{prefix}{key}/")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def assert_matches(batch: dict, fields: dict[str, Field]) -> None:
    flat = flatten(batch)
    assert set(flat) == set(fields)
    for name, field in fields.items():
        value = flat[name]
        if field.dtype is str:
            assert isinstance(value, list) and len(value) == field.shape[0], name
            rows = value if len(field.shape) == 1 else [x for row in value for x in row]
            if len(field.shape) == 2:
                assert all(len(row) == field.shape[1] for row in value), name
            assert all(isinstance(x, str) for x in rows), name
        elif field.dtype is dict:
            assert value and all(len(rows) == field.shape[0] for rows in value.values()), name
            assert all(len(row) == field.shape[1] for rows in value.values() for row in rows), name
        else:
            assert isinstance(value, torch.Tensor), name
            assert tuple(value.shape) == field.shape, name
            assert value.dtype == torch.from_numpy(np.empty(0, dtype=field.dtype)).dtype, name


@pytest.mark.parametrize("mode", ["raw", "event"])
@pytest.mark.parametrize("image_format", ["rgb", "yuv420"])
@pytest.mark.parametrize("extras", [{}, {"enable_segment": False}, {"enable_prev_action": True}])
def test_batches_hold_exactly_the_contracted_fields(dataset_dir, mode, image_format, extras):
    params = dict(
        frame_width=SIZE, frame_height=SIZE, win_len=WIN, split_ratio=1.0, image_format=image_format
    )
    dataset = (EventDataset if mode == "event" else RawDataset)(dataset_dir, **params, **extras)
    count = min(len(dataset), 5)
    batch = dataset.__getitems__(list(range(count)))
    fields = batch_fields(dataset.batch_params(count))
    assert_matches(batch, fields)
    assert ("frame_size" in fields) == (image_format == "yuv420")
    assert ("segment/obj_id" in fields) == extras.get("enable_segment", True)
    assert dataset.batch_shapes(count)["image"] == fields["image"].shape


def test_loader_batches_hold_the_contracted_fields(dataset_dir):
    params = dict(dataset_dirs=[str(dataset_dir)], frame_width=SIZE, frame_height=SIZE, win_len=WIN)
    module = MineDataModule(dict(params, image_format="yuv420"), batch_size=2, split_ratio=1.0)
    module.setup()
    for batch in module.train_dataloader():
        assert_matches(batch, batch_fields(module.train_dataset.batch_params(len(batch["episode"]))))


def test_meta_info_is_batched_as_per_field_lists(dataset_dir):
    dataset = RawDataset(
        dataset_dir, frame_width=SIZE, frame_height=SIZE, win_len=WIN, enable_contractor_info=True
    )
    batch = dataset.__getitems__([0, 1])
    assert_matches(batch, batch_fields(dataset.batch_params(2)))
    assert set(batch["meta_info"]) == {"yaw", "pitch", "isGuiOpen"}


def test_padding_windows_follow_the_contract(dataset_dir):
    dataset = RawDataset(dataset_dir, frame_width=SIZE, frame_height=SIZE, win_len=WIN, split_ratio=1.0)
    padding = dataset._padding("e")
    assert padding["timestamp"].tolist() == [-1] * WIN and padding["mask"].tolist() == [0] * WIN
    assert padding["first"].tolist() == [True] + [False] * (WIN - 1)
    assert padding["segment"]["obj_id"].tolist() == [-1] * WIN and padding["segment"]["event"] == [""] * WIN
    padding["mask"][:] = 1  # a copy: the next padding window is untouched
    assert dataset._padding("e")["mask"].tolist() == [0] * WIN


def test_the_store_knows_the_modalities_of_the_records():
    assert MODALITIES == tuple(MODALITY_SPECS) == ("image", "action", "segmentation", "meta_info")
    assert {name: spec.folders[0] for name, spec in MODALITY_SPECS.items()} == {m: m for m in MODALITIES}
    assert layout.FOLDER_NAMES["image"] == ("image", "video")


def test_synthetic_episodes_hold_every_modality_of_the_records():
    # A new record needs its synthetic values in synth_episode: tests and the demo run on them.
    assert synth_episode(0, 5).modalities == tuple(MODALITY_SPECS)


def test_take_rejects_chunks_short_of_frames():
    action = MODALITY_SPECS["action"]
    assert action.take({"camera": np.zeros((3, 2))}, 4, 0, 4) is None
    assert MODALITY_SPECS["segmentation"].take([{}] * 3, 4, 0, 4) is None
    with pytest.raises(DataError, match="disagree on their keys"):
        action.join([{"a": np.zeros(1)}, {"b": np.zeros(1)}])


def test_the_records_import_first_without_a_circle():
    # In a fresh interpreter: a test process has the store imported already, hiding a circle.
    code = "import minetrain.data.store.modalities"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
