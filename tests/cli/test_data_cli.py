import json
import pickle
import shutil
import subprocess
import sys

import lmdb
import numpy as np
import pytest
from PIL import Image

from minetrain.cli.main import main
from minetrain.data.convert.segments import attach_segments
from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import iter_video_frames, rle_decode
from minetrain.data.synth import write_synthetic_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("ds") / "ds", episodes=3, frames=50, size=32, seed=3
    )


def _copy(dataset, tmp_path):
    return shutil.copytree(dataset, tmp_path / "copy")


def _put(dataset_dir, modality, key, value):
    part = next((dataset_dir / modality).iterdir())
    env = lmdb.open(str(part), map_size=1 << 28)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


def test_synth_inspect_verify_view(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", str(out), "--episodes", "2", "--frames", "40", "--size", "32"]) == 0
    assert main(["data", "inspect", str(out), "--json", "--interactions"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert summary["episodes"] == 2 and summary["resolution"] == [32, 32] and summary["chunk_sizes"] == [32]
    assert summary["modalities"] == ["image", "action", "segmentation", "meta_info"]
    assert summary["interaction_frames"] and summary["hours"] == pytest.approx(summary["frames"] / 72000)
    assert main(["data", "inspect", str(out)]) == 0
    assert "usable episodes" in capsys.readouterr().out
    assert main(["data", "verify", str(out), "--jobs", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    name = TrajectoryStore(out).episodes.popitem()[0]
    grid, clip = tmp_path / "grid.png", tmp_path / "clip.mp4"
    assert main(["data", "view", str(out), "--episode", name, "--frames", "6", "--out", str(grid)]) == 0
    with Image.open(grid) as image:
        assert image.width >= 4 * 256
    assert main(["data", "view", str(out), "--episode", name, "--start", "30", "--out", str(clip)]) == 0
    assert clip.stat().st_size > 0


# A hang kills the session with every thread's stack in seconds; the workers die with it.
@pytest.mark.timeout(60, method="thread")
def test_verify_jobs_after_the_command_process_decoded_with_threads(dataset, capsys):
    store = TrajectoryStore(dataset)
    name = sorted(store.episodes)[0]
    chunk = store.raw_chunk(name, "image", store.chunk_starts(name, "image")[0])
    assert len(list(iter_video_frames(chunk, threads=2))) > 0
    assert main(["data", "verify", str(dataset), "--jobs", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")


def test_inspect_reports_episodes_missing_a_modality(dataset, tmp_path, capsys):
    copy = _copy(dataset, tmp_path)
    with DatasetWriter(copy) as writer:
        writer.write(Episode("extra", action={"forward": np.zeros(5, dtype=np.int64)}))
    assert main(["data", "inspect", str(copy), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 3 and summary["missing"]["image"] == ["extra"]


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_missing_empty_and_foreign_dirs(tmp_path, capsys, command):
    assert main(["data", "inspect", str(tmp_path / "nope")]) == 2
    assert "does not exist" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["data", "inspect", str(tmp_path / "empty")]) == 2
    assert "empty" in _error_line(capsys)
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    code = main(["data", command, str(tmp_path / "other")])
    if command == "inspect":
        assert code == 2 and "no modality folder" in _error_line(capsys)
    else:
        assert code == 1 and "no modality folder" in capsys.readouterr().out


def test_view_needs_an_image_modality_and_a_known_episode(dataset, tmp_path, capsys):
    copy = _copy(dataset, tmp_path)
    shutil.rmtree(copy / "image")
    assert main(["data", "view", str(copy), "--episode", "x", "--out", str(tmp_path / "a.png")]) == 2
    assert "no image modality" in _error_line(capsys)
    assert main(["data", "view", str(dataset), "--episode", "nope", "--out", str(tmp_path / "a.png")]) == 2
    assert "episode nope" in _error_line(capsys)
    assert main(["data", "view", str(dataset), "--episode", "nope", "--out", str(tmp_path / "a.gif")]) == 2
    _error_line(capsys)


def test_verify_reports_each_corrupt_chunk_and_view_fails_cleanly(dataset, tmp_path, capsys):
    copy = _copy(dataset, tmp_path)
    store = TrajectoryStore(dataset)  # read the original: the copy must not be open while it is edited
    name = sorted(store.episodes)[0]
    location = store.locate(name, "image")
    image_key = str((location.episode_idx, 32)).encode()
    _put(copy, "image", image_key, store.raw_chunk(name, "image", 32)[:200])
    _put(copy, "action", str((location.episode_idx, 0)).encode(), b"\x80\x04not a pickle")
    bad_actions = store.read(name, "action", 32, location.num_frames)
    bad_actions["forward"] = bad_actions["forward"][:-1]
    _put(copy, "action", str((location.episode_idx, 32)).encode(), pickle.dumps(bad_actions))
    segments = store.read(name, "segmentation", 0, 32)
    segments[0] = {("0", "x"): {"obj_id": 2, "rle_mask": "230400 5", "event": "x"}}
    _put(copy, "segmentation", str((location.episode_idx, 0)).encode(), pickle.dumps(segments))
    del store

    assert main(["data", "verify", str(copy)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    bad = [line for line in lines if line.startswith("BAD")]
    assert len(bad) == 4
    assert all(f"episode {name}" in line for line in bad)
    assert any("image" in line and "(0, 32)" in line and "decode" in line for line in bad)
    assert any("action" in line and "(0, 0)" in line and "unpickle" in line for line in bad)
    assert any("action" in line and "forward=" in line for line in bad)
    assert any("segmentation" in line and "outside" in line for line in bad)
    assert lines[-1].endswith("FAILED: 4 problem(s)")

    out = tmp_path / "v.png"
    assert main(["data", "view", str(copy), "--episode", name, "--start", "32", "--out", str(out)]) == 2
    assert "(0, 32)" in _error_line(capsys)


def test_attach_segments_from_rle_and_png(dataset, tmp_path, capsys):
    copy = _copy(dataset, tmp_path)
    shutil.rmtree(copy / "segmentation")
    names = sorted(TrajectoryStore(copy, modalities=("image",)).episodes)
    seg_dir = tmp_path / "seg"
    (seg_dir / "masks").mkdir(parents=True)
    png = np.zeros((36, 64), dtype=np.uint8)
    png[9:18, 16:32] = 255
    Image.fromarray(png).save(seg_dir / "masks" / "m.png")
    item = {
        "event": "minecraft.mine_block:minecraft:stone",
        "obj_id": 2,
        "point": [100, 200],
        "frame_range": [2, 3],
    }
    annotation = {"frames": {"2": [dict(item, rle_mask="641 10")], "3": [dict(item, mask_png="masks/m.png")]}}
    (seg_dir / f"{names[0]}.json").write_text(json.dumps(annotation))
    bad = {"frames": {"1": [dict(item, rle_mask="230400 5")]}}
    (seg_dir / f"{names[1]}.json").write_text(json.dumps(bad))
    (seg_dir / "ghost.json").write_text(json.dumps(annotation))

    report = attach_segments(seg_dir, copy)
    assert report.converted == [names[0]]
    reasons = dict(report.failed)
    assert "frame 1" in reasons[names[1]] and "outside" in reasons[names[1]]
    assert "not in" in reasons["ghost"]
    frames = TrajectoryStore(copy, modalities=("segmentation",)).read(names[0], "segmentation", 0, 4)
    assert frames[0] == {} and frames[1] == {}
    key = ("2-3", "minecraft.mine_block:minecraft:stone")
    assert list(frames[2]) == [key] and list(frames[3]) == [key]
    assert rle_decode(frames[2][key]["rle_mask"]).sum() == 10
    assert rle_decode(frames[3][key]["rle_mask"])[90:180, 160:320].all()
    assert frames[3][key]["frame_id"] == 3 and frames[3][key]["frame_range"] == (2, 3)

    assert main(["data", "convert", "segments", str(seg_dir), str(copy)]) == 1
    out = capsys.readouterr().out
    assert "1 already stored" in out and out.count("SKIPPED") == 2
    assert main(["data", "convert", "segments", str(tmp_path / "none"), str(copy)]) == 2
    _error_line(capsys)


def test_console_script_runs(tmp_path):
    script = shutil.which("minetrain") or f"{sys.executable} -m minetrain.cli.main"
    out = tmp_path / "ds"
    result = subprocess.run(
        [*script.split(), "data", "synth", str(out), "--episodes", "1", "--frames", "20", "--size", "16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [*script.split(), "data", "verify", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert result.returncode == 1 and "does not exist" in result.stdout


def test_data_commands_do_not_import_torch(dataset):
    """The store, the converters and ``minetrain data`` read with numpy and PyAV: starting them does
    not pay torch's import (most of a second and a half here)."""
    probe = (
        "import sys\n"
        "from minetrain.cli.main import main\n"
        "for argv in (['inspect', DATA], ['verify', DATA], ['episodes', DATA], ['convert', '--help']):\n"
        "    sys.argv = ['minetrain', 'data', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, (argv, exit.code)\n"
        "import minetrain.data.store, minetrain.data.convert, minetrain.actions\n"
        "print('torch' in sys.modules)\n"
    ).replace("DATA", repr(str(dataset)))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"
