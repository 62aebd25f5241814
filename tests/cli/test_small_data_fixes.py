"""Issue 16 item 17: error texts and outputs that named the wrong thing."""

import os
import pickle
import shutil

import lmdb
import numpy as np
import pytest
from PIL import Image

from minetrain.cli.export import export_directory
from minetrain.cli.main import main
from minetrain.data import MineDataModule
from minetrain.data.dataset import RawDataset
from minetrain.data.store import TrajectoryStore
from minetrain.data.synth import write_synthetic_dataset
from minetrain.errors import ConfigError, DataError
from minetrain.models import RocketPolicy

TINY_MODEL = dict(backbone="test_efficientnet", hiddim=32, num_heads=2, num_layers=1, timesteps=8, mem_len=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "ds", episodes=2, frames=20, size=16)


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_rle_mask_names_the_segmentation_part(dataset, tmp_path):
    copy = shutil.copytree(dataset, tmp_path / "copy")
    store = TrajectoryStore(dataset)
    bad = {}
    for name in store.episodes:
        location = store.locate(name, "segmentation")
        frames = [{("0", "x"): {"obj_id": 2, "rle_mask": "230400 5", "event": "x"}}] * location.num_frames
        bad[str((location.episode_idx, 0)).encode()] = pickle.dumps(frames)
    env = lmdb.open(str(copy / "segmentation" / "part-0"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in bad.items():
            txn.put(key, value)
    env.close()
    windows = RawDataset(copy, frame_width=16, frame_height=16, win_len=8, split_ratio=1.0)
    with pytest.raises(DataError) as caught:
        windows[0]
    message = str(caught.value)
    assert f"{copy}: segmentation part-0 episode {windows.episodes[0]} frames [0, 8):" in message
    assert "action" not in message


def test_split_ratio_zero_names_split_ratio(dataset):
    module = MineDataModule(
        data_params=dict(dataset_dirs=[str(dataset)], frame_width=16, frame_height=16, win_len=8),
        split_ratio=0.0,
        episode_continuous_batch=True,
    )
    with pytest.raises(
        ConfigError, match=r"split_ratio=0.0 leaves the train split no episode of the 2 usable"
    ):
        module.train_dataloader()


def test_synth_rerun_says_it_skipped(tmp_path, capsys):
    args = ["data", "synth", str(tmp_path / "ds"), "--episodes", "2", "--frames", "20", "--size", "16"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("wrote 2 episodes")
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote 0 episodes, 0 frames at 16x16 to {tmp_path / 'ds'}; skipped 2 already stored"
    )


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_follows_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        out = export_directory(RocketPolicy(**TINY_MODEL), tmp_path / "out")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes == {"config.json": 0o666 & ~umask, "model.safetensors": 0o666 & ~umask}


def test_evaluate_a_png_says_it_is_not_a_checkpoint(dataset, tmp_path, capsys):
    png = tmp_path / "grid.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(png)
    assert main(["evaluate", str(png), str(dataset)]) == 2
    err = _error_line(capsys)
    assert f"{png} is not a checkpoint" in err and "weights_only" not in err
