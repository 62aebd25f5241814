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

from minetrain.data.store import MODALITY_SPECS, DatasetWriter, Episode, TrajectoryStore
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
    store = TrajectoryStore(FIXTURES / "store_reference", modalities=list(MODALITY_SPECS))
    assert store.chunk_size == 32
    assert_same_as_reference(store, load_reference_read(FIXTURES / "store_reference_read.pkl.gz"))


def test_a_minetrain_written_dataset_reads_in_the_reference():
    store = TrajectoryStore(FIXTURES / "store_minetrain", modalities=list(MODALITY_SPECS))
    reference = load_reference_read(FIXTURES / "store_minetrain_reference_read.pkl.gz")
    assert {name: value["num_frames"] for name, value in reference.items()} == {
        "mt-alpha": 70,
        "mt-beta": 32,
        "mt-gamma": 5,
    }  # the reference reads the short tails too
    assert_same_as_reference(store, reference)


@pytest.mark.skipif(not REFERENCE_PYTHON.exists(), reason="reference venv /tmp/reference-venv is absent")
def test_the_reference_reads_a_fresh_minetrain_dataset_over_several_parts(tmp_path):
    source = TrajectoryStore(FIXTURES / "store_minetrain", modalities=list(MODALITY_SPECS))
    dataset = tmp_path / "dataset"
    with DatasetWriter(dataset, episodes_per_part=2, image_crf=30) as writer:
        for name, n in source.episodes.items():
            writer.write(Episode(f"fresh-{name}", **{m: source.read(name, m, 0, n) for m in MODALITY_SPECS}))
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
    assert_same_as_reference(
        TrajectoryStore(dataset, modalities=list(MODALITY_SPECS)), load_reference_read(out)
    )


LMDB1_CHECK = """
import multiprocessing, lmdb, numpy as np
from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
assert int(lmdb.__version__.split(".")[0]) == 1, lmdb.__version__
with DatasetWriter(DIR, episodes_per_part=1) as writer:
    for i, n in enumerate([70, 9]):
        image = np.full((n, 15, 17, 3), 100, np.uint8)
        writer.write(Episode(f"e{i}", image=image, action={"a": np.arange(n)}))
store = TrajectoryStore(DIR, modalities=("image", "action"))
assert store.episodes == {"e0": 70, "e1": 9}
assert store.read("e0", "action", 60, 70)["a"].tolist() == list(range(60, 70))
assert store.read("e0", "image", 30, 70).shape == (40, 15, 17, 3)
queue = multiprocessing.get_context("fork").Queue()
child = multiprocessing.get_context("fork").Process(
    target=lambda: queue.put(store.read("e1", "image", 0, 9).shape)
)
child.start()
assert queue.get(timeout=60) == (9, 15, 17, 3)
child.join()
print("ok")
"""


@pytest.mark.skipif(not REFERENCE_PYTHON.exists(), reason="reference venv /tmp/reference-venv is absent")
def test_the_store_works_with_lmdb_1_and_an_older_pyav(tmp_path):
    """The reference venv has lmdb 1.x and PyAV 13; minetrain's own code must run there too."""
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1]), "HF_HUB_OFFLINE": "1"}
    script = f"DIR = {str(tmp_path / 'd')!r}\n" + LMDB1_CHECK
    result = subprocess.run(
        [str(REFERENCE_PYTHON), "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
