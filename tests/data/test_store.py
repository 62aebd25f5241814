import logging
import multiprocessing
import pickle
import shutil

import lmdb
import numpy as np
import pytest

from minetrain.data.store import MODALITY_SPECS, DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import encode_video, rle_encode
from minetrain.data.store.layout import chunk_key
from minetrain.errors import ConfigError, DataError

BUTTONS = ["attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop"]
BUTTONS += ["inventory", *(f"hotbar.{i}" for i in range(1, 10))]


def make_episode(
    name: str, n: int, size: int = 16, seed: int = 0, modalities=tuple(MODALITY_SPECS)
) -> Episode:
    rng = np.random.default_rng(seed)
    image = np.zeros((n, size, size, 3), np.uint8)
    image[:] = (np.arange(n, dtype=np.uint8) * 3)[:, None, None, None]  # grey level = frame index
    action = {key: rng.integers(0, 2, n).astype(np.int64) for key in BUTTONS}
    action["camera"] = rng.normal(0, 5, (n, 2)).astype(np.float32)
    mask = np.zeros((360, 640), np.uint8)
    mask[100:120, 200:260] = 1
    key = ("mine_block", "minecraft.mine_block:stone")
    segmentation = [
        {
            key: {
                "obj_id": 2,
                "rle_mask": rle_encode(mask),
                "event": key[-1],
                "point": (110, 230),
                "frame_id": i,
                "frame_range": (0, n - 1),
            }
        }
        if i % 3
        else {}
        for i in range(n)
    ]
    meta_info = [{"pitch": float(i), "isGuiOpen": bool(i % 2)} for i in range(n)]
    values = {"image": image, "action": action, "segmentation": segmentation, "meta_info": meta_info}
    return Episode(name, **{m: values[m] for m in modalities})


def write(out, episodes, **kwargs):
    with DatasetWriter(out, **kwargs) as writer:
        for episode in episodes:
            writer.write(episode)
    return writer


def lmdb_values(part):
    env = lmdb.open(str(part), readonly=True, lock=False)
    with env.begin() as txn:
        values = dict(txn.cursor())
    env.close()
    return values


def test_layout_is_the_reference_layout(tmp_path):
    write(tmp_path, [make_episode("a", 70), make_episode("b", 32)])
    for modality in MODALITY_SPECS:
        assert sorted(p.name for p in (tmp_path / modality).iterdir()) == ["part-0"]
    values = lmdb_values(tmp_path / "image" / "part-0")
    assert pickle.loads(values[b"__chunk_size__"]) == 32
    assert pickle.loads(values[b"__chunk_infos__"]) == [
        {"episode": "a", "episode_idx": 0, "num_frames": 70},
        {"episode": "b", "episode_idx": 1, "num_frames": 32},
    ]
    assert pickle.loads(values[b"__num_episodes__"]) == 2
    assert pickle.loads(values[b"__num_total_frames__"]) == 102
    assert {k for k in values if not k.startswith(b"__")} == {b"(0, 0)", b"(0, 32)", b"(0, 64)", b"(1, 0)"}
    action = pickle.loads(lmdb_values(tmp_path / "action" / "part-0")[b"(0, 64)"])
    assert set(action) == {*BUTTONS, "camera"} and len(action["camera"]) == 6  # the tail is kept
    seg = pickle.loads(lmdb_values(tmp_path / "segmentation" / "part-0")[b"(0, 0)"])
    assert isinstance(seg, list) and len(seg) == 32 and seg[0] == {}
    assert not (tmp_path / ".incomplete").exists()


def test_round_trip_of_every_modality_with_a_short_tail(tmp_path):
    episode = make_episode("a", 70)
    write(tmp_path, [episode, make_episode("b", 5)], image_crf=0)
    store = TrajectoryStore(tmp_path, modalities=list(MODALITY_SPECS))
    assert store.episodes == {"a": 70, "b": 5}
    assert store.chunk_size == 32
    frames = store.read("a", "image", 0, 70)
    assert frames.shape == (70, 16, 16, 3)
    assert np.abs(frames[..., 0].mean(axis=(1, 2)) - np.arange(70) * 3).max() < 1.5  # in order
    action = store.read("a", "action", 30, 70)
    for key, value in episode.action.items():
        np.testing.assert_array_equal(action[key], value[30:70])
    assert store.read("a", "segmentation", 31, 34) == episode.segmentation[31:34]
    assert store.read("a", "meta_info", 60, 70) == episode.meta_info[60:70]


def test_read_of_a_range_matches_the_full_read(tmp_path):
    write(tmp_path, [make_episode("a", 70)])
    store = TrajectoryStore(tmp_path)
    full = store.read("a", "image", 0, 70)
    np.testing.assert_array_equal(store.read("a", "image", 33, 66), full[33:66])
    np.testing.assert_array_equal(store.read("a", "image", 69, 70), full[69:70])
    assert store.read("a", "image", 0, 4, size=(8, 4)).shape == (4, 4, 8, 3)
    assert store.image_resolution() == (16, 16)


def test_reader_reports_missing_episodes_and_uses_the_shortest_modality(tmp_path, caplog):
    write(tmp_path, [make_episode("a", 40), make_episode("only-image", 10, modalities=("image",))])
    write(tmp_path, [Episode("a", image=make_episode("x", 40).image)])  # already stored: skipped
    # episode "b" has fewer segmentation frames than images, as can happen across conversions
    write(tmp_path, [make_episode("b", 40, modalities=("image", "action"))])
    write(tmp_path, [make_episode("b", 33, modalities=("segmentation",))])
    with caplog.at_level(logging.WARNING):
        store = TrajectoryStore(tmp_path)
    assert store.episodes == {"a": 40, "b": 33}
    assert store.missing == {"image": [], "action": ["only-image"], "segmentation": ["only-image"]}
    assert "only-image" in caplog.text
    assert store.modality_episodes("image") == {"a": 40, "b": 40, "only-image": 10}


def test_rerun_skips_stored_episodes_and_adds_new_parts(tmp_path):
    write(tmp_path, [make_episode("a", 10), make_episode("b", 10)], episodes_per_part=1)
    writer = write(tmp_path, [make_episode("b", 10), make_episode("c", 10)], episodes_per_part=1)
    assert writer.skipped == ["b"] and writer.written == ["c"]
    assert sorted(p.name for p in (tmp_path / "image").iterdir()) == ["part-0", "part-1", "part-2"]
    store = TrajectoryStore(tmp_path)
    assert list(store.episodes) == ["a", "b", "c"]
    assert store.duplicates == {"image": [], "action": [], "segmentation": []}


def test_interrupted_write_leaves_no_visible_part_and_resumes(tmp_path):
    writer = DatasetWriter(tmp_path, episodes_per_part=2)
    writer.write(make_episode("a", 10))
    writer.write(make_episode("b", 10))  # completes part-0
    writer.write(make_episode("c", 10))  # part-1 still under construction
    # simulate a kill: the writer is never closed
    assert [p.name for p in (tmp_path / "image").iterdir()] == ["part-0"]
    assert TrajectoryStore(tmp_path).episodes == {"a": 10, "b": 10}
    del writer
    resumed = write(tmp_path, [make_episode(n, 10) for n in "abcd"], episodes_per_part=2)
    assert resumed.skipped == ["a", "b"] and resumed.written == ["c", "d"]
    assert TrajectoryStore(tmp_path).episodes == {n: 10 for n in "abcd"}


def test_an_exception_inside_the_block_still_commits_complete_episodes(tmp_path):
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path) as writer:
        writer.write(make_episode("a", 10))
        raise RuntimeError("boom")
    assert TrajectoryStore(tmp_path).episodes == {"a": 10}


def test_episode_validation_names_the_episode_and_keys():
    with pytest.raises(DataError, match=r"episode e: action arrays have unequal lengths \(.*attack=3.*\)"):
        Episode("e", action={"attack": np.zeros(3), "camera": np.zeros((4, 2))})
    with pytest.raises(DataError, match=r"episode e: .*image=4, action=3"):
        Episode("e", image=np.zeros((4, 8, 8, 3), np.uint8), action={"attack": np.zeros(3)})
    with pytest.raises(DataError, match=r"action keys \['attack'\] hold scalars"):
        Episode("e", action={"attack": np.int64(1)})
    with pytest.raises(DataError, match="uint8"):
        Episode("e", image=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match="no frames"):
        Episode("e", meta_info=[])
    with pytest.raises(DataError, match=r"episode e: unknown modalities \['video'\]"):
        Episode("e", video=np.zeros((4, 8, 8, 3), np.uint8))


def test_a_modality_replaced_on_an_episode_is_checked_and_written(tmp_path):
    episode = make_episode("a", 10)
    frames = np.full_like(episode.image, 200)
    episode.image = frames  # as benchmarks swap in other frames
    with pytest.raises(
        DataError, match=r"episode a: modalities have different numbers of frames \(.*image=3"
    ):
        episode.image = frames[:3]
    episode.meta_info = None
    assert "meta_info" not in episode.modalities and episode.meta_info is None
    write(tmp_path, [episode])
    store = TrajectoryStore(tmp_path)
    assert np.abs(store.read("a", "image", 0, 10).astype(int) - 200).max() <= 3


def test_missing_empty_and_incomplete_dirs_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TrajectoryStore(tmp_path / "nope")
    with pytest.raises(DataError, match="is empty"):
        TrajectoryStore(tmp_path)
    write(tmp_path, [make_episode("a", 10, modalities=("image", "action"))])
    with pytest.raises(DataError, match="no segmentation/ or segment/ folder"):
        TrajectoryStore(tmp_path)
    assert TrajectoryStore([tmp_path], modalities=("image", "action")).episodes == {"a": 10}
    with pytest.raises(ConfigError):
        TrajectoryStore(tmp_path, modalities=("depth",))


def corrupt_chunk(part, key, transform):
    env = lmdb.open(str(part))
    with env.begin(write=True) as txn:
        value = txn.get(key)
        if transform is None:
            txn.delete(key)
        else:
            txn.put(key, transform(value))
    env.close()


@pytest.mark.parametrize(
    ("modality", "transform", "message"),
    [
        ("image", lambda v: v[: len(v) // 2], "MP4 chunk does not decode"),
        ("image", None, "chunk is missing"),
        (
            "image",
            lambda v: encode_video(np.zeros((5, 16, 16, 3), np.uint8)),
            "ends after 5 frames, expected 32",
        ),
        ("action", lambda v: v[:10], "does not unpickle"),
        ("segmentation", lambda v: pickle.dumps([{}]), "does not hold 32 frames"),
    ],
)
def test_bad_chunks_are_one_line_errors_naming_where(tmp_path, modality, transform, message):
    write(tmp_path, [make_episode("a", 70)])
    corrupt_chunk(tmp_path / modality / "part-0", chunk_key(0, 32), transform)
    store = TrajectoryStore(tmp_path)
    store.read("a", modality, 0, 32)  # other chunks still read
    with pytest.raises(DataError) as info:
        store.read("a", modality, 20, 40)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert all(part in text for part in (str(tmp_path), modality, "part-0", "episode a", "(0, 32)"))


def test_bad_range_and_unknown_episode_are_data_errors(tmp_path):
    write(tmp_path, [make_episode("a", 10)])
    store = TrajectoryStore(tmp_path)
    with pytest.raises(DataError, match="outside"):
        store.read("a", "action", 5, 11)
    with pytest.raises(DataError, match="not in the image modality"):
        store.read("zz", "image", 0, 1)


def test_reference_folder_aliases_are_read(tmp_path):
    write(tmp_path, [make_episode("a", 10)])
    (tmp_path / "image").rename(tmp_path / "video")
    (tmp_path / "segmentation").rename(tmp_path / "segment")
    assert TrajectoryStore(tmp_path).episodes == {"a": 10}


def _read_in_child(store, queue):
    queue.put(store.read("a", "image", 0, 10).shape)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_store_used_in_the_parent_works_in_a_worker(tmp_path, method):
    write(tmp_path, [make_episode("a", 10)])
    store = TrajectoryStore(tmp_path)
    store.read("a", "image", 0, 10)  # the parent holds an open handle now
    second = TrajectoryStore(tmp_path)  # another store on the same parts in the same process
    assert second.read("a", "action", 0, 2)["attack"].shape == (2,)
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(store, queue))
    child.start()
    assert queue.get(timeout=60) == (10, 16, 16, 3)
    child.join(timeout=60)
    assert child.exitcode == 0


def test_stale_incomplete_dir_is_removed_and_never_read(tmp_path):
    write(tmp_path, [make_episode("a", 10)])
    stale = tmp_path / ".incomplete" / "image" / "part-1"
    stale.mkdir(parents=True)
    (stale / "data.mdb").write_bytes(b"half")
    assert TrajectoryStore(tmp_path).episodes == {"a": 10}
    write(tmp_path, [make_episode("b", 10)])
    assert not (tmp_path / ".incomplete").exists()
    shutil.rmtree(tmp_path / "meta_info")
    assert TrajectoryStore(tmp_path).episodes == {"a": 10, "b": 10}
