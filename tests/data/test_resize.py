"""Frames read at another size have the reference's pixels (OpenCV INTER_LINEAR) without OpenCV.

Fixtures come from scripts/make_resize_fixtures.py; the live test compares with cv2 in the
reference venv when it is present.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import LinearResize, decode_video
from minetrain.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "resize_reference"
REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")
SHAPES = [((224, 224), (128, 128)), ((640, 360), (128, 128)), ((33, 17), (20, 9)), ((64, 48), (224, 200))]


def differences(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    assert ours.shape == reference.shape and ours.dtype == np.uint8
    return np.abs(ours.astype(np.int64) - reference)


@pytest.mark.parametrize("name", ["chunk_224x224", "chunk_640x360"])
def test_decoding_at_another_size_gives_the_references_pixels(name):
    reference = np.load(FIXTURES / "reference_128.npz")[name]
    diff = differences(decode_video((FIXTURES / f"{name}.mp4").read_bytes(), (128, 128)), reference)
    assert diff.mean() <= 0.5 and diff.max() <= 1, (diff.mean(), diff.max())


def test_antialias_is_the_swscale_path_and_differs(tmp_path):
    data = (FIXTURES / "chunk_224x224.mp4").read_bytes()
    reference = np.load(FIXTURES / "reference_128.npz")["chunk_224x224"]
    assert differences(decode_video(data, (128, 128), interpolation="antialias"), reference).mean() > 2
    with pytest.raises(ConfigError, match="resize_interpolation must be one of linear, antialias"):
        decode_video(data, (128, 128), interpolation="cubic")


def test_the_store_resizes_with_the_chosen_interpolation(tmp_path):
    frames = decode_video((FIXTURES / "chunk_224x224.mp4").read_bytes())
    with DatasetWriter(tmp_path) as writer:
        writer.write(Episode("e", image=frames, action={"a": np.arange(len(frames))}))
    stored = TrajectoryStore(tmp_path, modalities=("image",)).read("e", "image", 1, 3)
    expected = np.stack([LinearResize((224, 224), (128, 128))(frame) for frame in stored])
    linear = TrajectoryStore(tmp_path, modalities=("image",)).read("e", "image", 1, 3, size=(128, 128))
    np.testing.assert_array_equal(linear, expected)
    store = TrajectoryStore(tmp_path, modalities=("image",), resize_interpolation="antialias")
    assert differences(store.read("e", "image", 1, 3, size=(128, 128)), expected).mean() > 2


CV2_SCRIPT = """
import sys, numpy as np, cv2
data = dict(np.load(sys.argv[1]))
out = {k: cv2.resize(v, tuple(int(n) for n in k.split("_")[1:]), interpolation=cv2.INTER_LINEAR)
       for k, v in data.items()}
np.savez(sys.argv[2], **out)
"""


@pytest.mark.skipif(not REFERENCE_PYTHON.exists(), reason="reference venv /tmp/reference-venv is absent")
def test_linear_resize_matches_opencv_on_noise_shrinking_and_growing(tmp_path):
    rng = np.random.default_rng(0)
    frames = {
        f"{i}_{dst[0]}_{dst[1]}": rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
        for i, (src, dst) in enumerate(SHAPES)
    }
    np.savez(tmp_path / "in.npz", **frames)
    subprocess.run(
        [str(REFERENCE_PYTHON), "-c", CV2_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    reference = np.load(tmp_path / "out.npz")
    for key, frame in frames.items():
        _, width, height = map(int, key.split("_"))
        ours = LinearResize((frame.shape[1], frame.shape[0]), (width, height))(frame)
        diff = differences(ours, reference[key])
        assert diff.mean() <= 0.01 and diff.max() <= 1, (key, diff.mean())
