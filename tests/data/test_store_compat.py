"""Datasets cross between minetrain and the reference library (MineStudio) in both directions.

Fixtures come from scripts/make_store_fixtures.py; the live test reruns the reference reader on
a fresh minetrain dataset when the reference venv is present.
"""

import gzip
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minetrain.data.store import MODALITIES, DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import rle_decode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_store_fixtures.py"
REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")


def load_reference_read(path: Path) -> dict:
    with gzip.open(path, "rb") as f:
        return pickle.load(f)


def nearest_resize(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.floor(np.arange(height) * mask.shape[0] / height).astype(int)
    cols = np.floor(np.arange(width) * mask.shape[1] / width).astype(int)
    return mask[rows][:, cols]


def assert_same_as_reference(store: TrajectoryStore, reference: dict) -> None:
    assert store.episodes == {name: value["num_frames"] for name, value in reference.items()}
    for name, ref in reference.items():
        n = ref["num_frames"]
        assert ref["mask"].tolist() == [1] * n
        np.testing.assert_array_equal(store.read(name, "image", 0, n), ref["image"])
        action = store.read(name, "action", 0, n)
        assert action.keys() == ref["env_action"].keys()
        for key, value in ref["env_action"].items():
            np.testing.assert_array_equal(action[key], value)
            assert action[key].dtype == value.dtype
        segmentation = store.read(name, "segmentation", 0, n)
        assert segmentation == ref["segmentation_frames"]
        for t, frame in enumerate(segmentation):
            expected = np.zeros_like(ref["obj_mask"][t])
            if frame:
                (interaction,) = frame.values()
                expected = nearest_resize(rle_decode(interaction["rle_mask"]), *expected.shape)
            np.testing.assert_array_equal(ref["obj_mask"][t], expected)
        meta_info = store.read(name, "meta_info", 0, n)
        assert {key: [frame[key] for frame in meta_info] for key in ref["meta_info"]} == ref["meta_info"]


def test_a_reference_written_dataset_reads_in_minetrain():
    store = TrajectoryStore(FIXTURES / "store_reference", modalities=MODALITIES)
    assert store.chunk_size == 32
    assert_same_as_reference(store, load_reference_read(FIXTURES / "store_reference_read.pkl.gz"))


def test_a_minetrain_written_dataset_reads_in_the_reference():
    store = TrajectoryStore(FIXTURES / "store_minetrain", modalities=MODALITIES)
    reference = load_reference_read(FIXTURES / "store_minetrain_reference_read.pkl.gz")
    assert {name: value["num_frames"] for name, value in reference.items()} == {
        "mt-alpha": 70,
        "mt-beta": 32,
        "mt-gamma": 5,
    }  # the reference reads the short tails too
    assert_same_as_reference(store, reference)


@pytest.mark.skipif(not REFERENCE_PYTHON.exists(), reason="reference venv /tmp/reference-venv is absent")
def test_the_reference_reads_a_fresh_minetrain_dataset_over_several_parts(tmp_path):
    source = TrajectoryStore(FIXTURES / "store_minetrain", modalities=MODALITIES)
    dataset = tmp_path / "dataset"
    with DatasetWriter(dataset, episodes_per_part=2, image_crf=30) as writer:
        for name, n in source.episodes.items():
            writer.write(Episode(f"fresh-{name}", *(source.read(name, m, 0, n) for m in MODALITIES)))
    assert len(list((dataset / "image").iterdir())) == 2
    out = tmp_path / "read.pkl.gz"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [str(REFERENCE_PYTHON), str(SCRIPT), "reference-read", str(dataset), str(out)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert_same_as_reference(TrajectoryStore(dataset, modalities=MODALITIES), load_reference_read(out))
