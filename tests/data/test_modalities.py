"""The batch contract (``modalities.batch_fields``) against real batches, and the modality records."""

import shutil
import subprocess
import sys

import lmdb
import numpy as np
import pytest
import torch

from minetrain.data import RawDataset
from minetrain.data.datamodule import MineDataModule
from minetrain.data.event_dataset import EventDataset
from minetrain.data.events import index_events
from minetrain.data.store import Episode
from minetrain.data.store.codecs import dumps_chunk
from minetrain.data.store.modalities import MODALITY_SPECS, Field, Modality, batch_fields
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.data.synth import synth_episode, write_synthetic_dataset
from minetrain.data.verify import verify_datasets
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
    assert tuple(MODALITY_SPECS) == ("image", "action", "segmentation", "meta_info")
    assert {name: spec.folders[0] for name, spec in MODALITY_SPECS.items()} == {m: m for m in MODALITY_SPECS}
    assert MODALITY_SPECS["image"].folders == ("image", "video")


def test_synthetic_episodes_hold_every_modality_of_the_records():
    assert synth_episode(0, 5).modalities == tuple(MODALITY_SPECS)


def test_previous_actions_at_a_start_before_the_stride_cover_the_episode_from_frame_0(dataset_dir):
    # An event window may start at frame 1 with skip_frame 2: the previous action of its first
    # kept frame is frame 0's alone ([t - k, t) clipped to the episode), not a read before frame 0.
    params = dict(win_len=4, skip_frame=2, enable_prev_action=True, enable_segment=False)
    dataset = RawDataset(str(dataset_dir), **params)
    span = dataset.windows.span(0)._replace(start=1, stop=8)
    previous = dataset._read_fields(span, 0, {})["env_prev_action"]
    action = dataset.store.read(span.episode, "action", 0, 8)
    forward, camera = action["forward"], action["camera"]
    assert previous["forward"].tolist() == [forward[0], forward[1:3].max(), forward[3:5].max(), 0]
    expected = [camera[0], camera[1:3].sum(0), camera[3:5].sum(0), (0, 0)]
    np.testing.assert_allclose(previous["camera"], expected, rtol=1e-6)
    events = EventDataset(str(dataset_dir), bias=1, **params)
    assert len(events) and all(events[i]["mask"].any() for i in range(len(events)))


# A modality that is not in the package: one record, as docs/architecture.md ("Extending") says.
def _validate_reward(value):
    rewards = np.asarray(value, dtype=np.float32)
    if rewards.ndim != 1:
        raise DataError(f"reward must hold one number per frame, got shape {rewards.shape}")
    return rewards, len(rewards)


def _check_reward(data, expected):
    value = load_pickle(data, "", "re-convert this episode")
    if not isinstance(value, np.ndarray) or value.shape != (expected,):
        raise DataError(f"holds {getattr(value, 'shape', type(value).__name__)}, expected {expected} rewards")


def _take_reward(value, expected, lo, hi):
    return value[lo:hi] if isinstance(value, np.ndarray) and len(value) >= expected else None


def _read_reward(window, fields):
    fields["reward"][: window.real] = window.read("reward")[:: window.stride]


REWARD = Modality(
    "reward",
    ("reward",),
    _validate_reward,
    _check_reward,
    take=_take_reward,
    join=np.concatenate,
    fields=lambda p: {"reward": Field((p.batch_size, p.win_len), np.float32)},
    read=_read_reward,
    # 1 on the frames that show an interaction
    synthesize=lambda episode: np.array([target is not None for target in episode.targets], np.float32),
)


def test_a_modality_added_as_one_record_is_stored_verified_and_batched(tmp_path, monkeypatch):
    monkeypatch.setitem(MODALITY_SPECS, "reward", REWARD)
    path = write_synthetic_dataset(tmp_path / "rewarded", lengths=[37, 21], size=32)
    assert (path / "reward").is_dir()
    assert verify_datasets([path]).ok
    dataset = RawDataset(str(path), frame_width=SIZE, frame_height=SIZE, win_len=WIN)
    batch = dataset.__getitems__(list(range(len(dataset))))
    assert_matches(batch, batch_fields(dataset.batch_params(len(dataset))))
    assert torch.equal(batch["reward"], (batch["segment"]["obj_id"] >= 0).float())
    assert batch["reward"].any() and not batch["reward"][batch["mask"] == 0].any()

    with pytest.raises(DataError, match="episode bad: reward must hold one number per frame"):
        Episode("bad", reward=np.zeros((3, 2)))
    corrupt = shutil.copytree(path, tmp_path / "corrupt")  # the store holds ``path`` open
    env = lmdb.open(str(corrupt / "reward" / "part-0"), subdir=True, lock=False)
    with env.begin(write=True) as txn:
        key = next(k for k, _ in txn.cursor() if not k.startswith(b"__"))
        txn.put(key, dumps_chunk(np.zeros(3, dtype=np.float32)))
    env.close()
    problems = verify_datasets([corrupt]).problems
    assert [p.modality for p in problems] == ["reward"] and "expected" in problems[0].message


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
