import numpy as np
import pytest

from minetrain.actions import env_to_agent, quantize_camera
from minetrain.data.render import INTERACTION_NAMES
from minetrain.data.store import TrajectoryStore
from minetrain.data.store.codecs import rle_decode, rle_encode
from minetrain.data.store.modalities.segmentation import box_rle
from minetrain.data.synth import (
    BUTTON_LAMPS,
    HOTBAR_KEYS,
    LAMP_COLOURS,
    _lamp_layout,
    episode_lengths,
    synth_episode,
    write_synthetic_dataset,
)
from minetrain.errors import ConfigError


def test_episodes_are_deterministic_and_seed_dependent():
    a, b = synth_episode(3, 120, size=32, seed=7), synth_episode(3, 120, size=32, seed=7)
    assert np.array_equal(a.image, b.image)
    assert all(np.array_equal(a.action[k], b.action[k]) for k in a.action)
    assert a.segmentation == b.segmentation
    c = synth_episode(3, 120, size=32, seed=8)
    assert not np.array_equal(a.image, c.image)


def test_lengths_vary_and_never_fill_whole_chunks():
    lengths = episode_lengths(50, 300, seed=0)
    assert len(set(lengths)) > 10
    assert all(225 <= n <= 376 and n % 32 for n in lengths)


def test_frames_show_buttons_and_camera_bin():
    size = 64
    episode = synth_episode(0, 200, size=size, seed=1)
    scene_h, hotbar_top = _lamp_layout(size)
    lamp_w = size / len(BUTTON_LAMPS)
    for t in range(0, 200, 7):
        frame = episode.image[t]
        for i, name in enumerate(BUTTON_LAMPS):
            pixel = frame[(scene_h + hotbar_top) // 2, int((i + 0.5) * lamp_w)]
            assert np.array_equal(pixel, LAMP_COLOURS[i]) == bool(episode.action[name][t]), (t, name)
        slot_w = size / len(HOTBAR_KEYS)
        for i, name in enumerate(HOTBAR_KEYS):
            lit = frame[hotbar_top + (size - hotbar_top) // 2, int((i + 0.5) * slot_w)][0] == 255
            assert lit == bool(episode.action[name][t])
        # The marker is the only pure-white block in the scene: its cell is the camera bin.
        rows, cols = np.nonzero((frame[:scene_h] == 255).all(axis=-1))
        bins = quantize_camera(episode.action["camera"][t])
        assert int(rows.mean() * 11 / scene_h) == bins[0]
        assert int(cols.mean() * 11 / size) == bins[1]


def test_actions_cover_many_agent_classes_and_roundtrip_camera_bins():
    episode = synth_episode(0, 400, size=32, seed=2)
    agent = env_to_agent(episode.action)
    assert len(np.unique(agent["buttons"])) >= 8
    assert len(np.unique(agent["camera"])) >= 8


def test_segmentation_marks_the_drawn_object():
    episode = synth_episode(1, 300, size=64, seed=0)
    kinds = set()
    for t, frame in enumerate(episode.segmentation):
        assert len(frame) <= 1
        for key, value in frame.items():
            assert key[-1] == value["event"] and value["frame_id"] == t
            assert value["obj_id"] in INTERACTION_NAMES and value["obj_id"] >= 0
            kinds.add(value["obj_id"])
            mask = rle_decode(value["rle_mask"])
            row, col = value["point"]
            assert mask[row, col] == 1
            first, last = value["frame_range"]
            assert first <= t <= last
    assert len(kinds) >= 3
    assert any(not frame for frame in episode.segmentation)


def test_box_rle_matches_generic_encoder():
    for box in [(0, 0, 360, 640), (10, 0, 20, 640), (5, 7, 9, 100), (359, 639, 360, 640)]:
        mask = np.zeros((360, 640), dtype=np.uint8)
        mask[box[0] : box[2], box[1] : box[3]] = 1
        assert box_rle(*box) == rle_encode(mask)


def test_written_dataset_reads_back_with_all_modalities(tmp_path):
    out = write_synthetic_dataset(tmp_path / "ds", episodes=3, frames=70, size=32, seed=5, chunk_size=16)
    store = TrajectoryStore(out, modalities=("image", "action", "segmentation", "meta_info"))
    expected = episode_lengths(3, 70, seed=5)
    assert sorted(store.episodes.values()) == sorted(expected)
    name, n = next(iter(store.episodes.items()))
    episode = synth_episode(int(name.rsplit("-", 1)[1]), n, size=32, seed=5)
    assert np.array_equal(store.read(name, "action", 0, n)["forward"], episode.action["forward"])
    image = store.read(name, "image", n - 3, n)
    assert image.shape == (3, 32, 32, 3)
    assert np.abs(image.astype(int) - episode.image[n - 3 :]).mean() < 8


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        synth_episode(0, 0)
    with pytest.raises(ConfigError):
        write_synthetic_dataset(tmp_path / "x", episodes=0)
