"""With ``shuffle_episodes``, minetrain holds out the same validation episodes as the reference."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minetrain.actions import BUTTONS
from minetrain.data import RawDataset
from minetrain.data.store import DatasetWriter, Episode

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reference_split.py"
REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")
# Written out of name order, over two dataset dirs of several parts each.
NAMES = [["zeta", "alpha", "mu", "kappa", "beta", "omega"], ["delta", "xi", "gamma", "pi", "eta"]]
# Episodes whose segmentation is a frame short: the reference drops them, minetrain trains on them.
SHORT = ["nu", "chi"]
SEED, RATIO = 7, 0.6
# What scripts/reference_split.py printed for this dataset (MineStudio 1.1.6).
REFERENCE = {
    "train": ["beta", "zeta", "eta", "xi", "pi", "gamma"],
    "val": ["omega", "alpha", "mu", "delta", "kappa"],
}


def episode(name: str, length: int = 5) -> Episode:
    image = np.full((length, 16, 16, 3), 90, dtype=np.uint8)
    action = {key: np.zeros(length, dtype=np.int64) for key in BUTTONS}
    action["camera"] = np.zeros((length, 2))
    return Episode(name, image=image, action=action, segmentation=[{} for _ in range(length)])


@pytest.fixture(scope="module")
def dataset_dirs(tmp_path_factory) -> list[Path]:
    dirs = []
    for i, names in enumerate(NAMES):
        out = tmp_path_factory.mktemp(f"dataset{i}")
        with DatasetWriter(out, episodes_per_part=2) as writer:
            for name in names:
                writer.write(episode(name))
            writer.write(Episode(SHORT[i], image=episode("x").image, action=episode("x").action))
        with DatasetWriter(out) as writer:
            writer.write(Episode(SHORT[i], segmentation=[{}] * 4))
        assert len(list((out / "image").iterdir())) > 1
        dirs.append(out)
    return dirs


def minetrain_split(dirs: list[Path]) -> dict[str, list[str]]:
    params = dict(frame_width=16, frame_height=16, win_len=8, split_ratio=RATIO, shuffle_episodes=True)
    return {split: RawDataset(dirs, split=split, seed=SEED, **params).episodes for split in ("train", "val")}


def without_short(split: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: [e for e in episodes if e not in SHORT] for name, episodes in split.items()}


def test_the_split_is_the_references(dataset_dirs):
    split = minetrain_split(dataset_dirs)
    assert without_short(split) == REFERENCE
    # The episodes the reference leaves out are split among themselves, after the others.
    assert sorted(split["train"][-1:] + split["val"][-1:]) == sorted(SHORT)


@pytest.mark.skipif(not REFERENCE_PYTHON.exists(), reason="reference venv /tmp/reference-venv is absent")
def test_the_reference_splits_a_fresh_multi_part_dataset_the_same_way(dataset_dirs):
    out = subprocess.run(
        [str(REFERENCE_PYTHON), str(SCRIPT), str(SEED), str(RATIO), *map(str, dataset_dirs)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert without_short(minetrain_split(dataset_dirs)) == json.loads(out.stdout.strip().splitlines()[-1])
