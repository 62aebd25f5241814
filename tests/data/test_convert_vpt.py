import numpy as np
import pytest
from fake_vpt import frame_colour, step, write_recording

from minetrain.cli.main import main
from minetrain.data.convert.vpt import VptOptions, convert_vpt
from minetrain.data.convert.vpt_actions import steps_to_actions
from minetrain.data.store import TrajectoryStore
from minetrain.errors import DataError

W = "key.keyboard.w"


def test_key_bindings_camera_and_extras():
    steps = [
        step(keys=(W, "key.keyboard.left.control", "key.keyboard.3", "key.keyboard.f"), dx=3, dy=-2),
        step(keys=("key.keyboard.space", "key.keyboard.left.shift", "key.keyboard.q"), buttons=(1, 2)),
    ]
    action, null, meta = steps_to_actions(steps)
    assert action["forward"].tolist() == [1, 0] and action["sprint"].tolist() == [1, 0]
    assert action["hotbar.3"].tolist() == [1, 0]
    assert action["jump"].tolist() == [0, 1] and action["sneak"].tolist() == [0, 1]
    assert action["drop"].tolist() == [0, 1] and action["use"].tolist() == [0, 1]
    np.testing.assert_allclose(action["camera"][0], [-2 * 0.15, 3 * 0.15])
    assert action["camera"].dtype == np.float64
    assert meta[0]["swapHands"] == 1 and meta[1]["pickItem"] == 1
    assert "swapHands" not in action and "pickItem" not in action and "ESC" not in action
    assert null.tolist() == [False, False]


def test_attack_stuck_until_newly_pressed():
    steps = [
        step(buttons=(0,), new_buttons=(0,)),
        step(buttons=(0,)),
        step(buttons=(0,), new_buttons=(0,)),
        step(buttons=(0,)),
    ]
    action, null, _ = steps_to_actions(steps)
    assert action["attack"].tolist() == [0, 0, 1, 1]
    assert null.tolist() == [True, True, False, False]


def test_hotbar_change_and_escape_with_gui():
    steps = [
        step(),
        step(hotbar=4),
        step(hotbar=4),
        step(keys=("key.keyboard.escape",), gui=True, hotbar=4),
        step(keys=("key.keyboard.escape",), hotbar=4),
    ]
    action, null, meta = steps_to_actions(steps)
    assert action["hotbar.5"].tolist() == [0, 1, 0, 0, 0]
    assert action["inventory"].tolist() == [0, 0, 0, 1, 0]
    assert meta[4]["ESC"] == 1
    assert null.tolist() == [True, False, True, False, True]


def test_missing_field_names_file_and_line(tmp_path):
    bad = step()
    del bad["mouse"]["dx"]
    with pytest.raises(DataError, match=r"x.jsonl: line 2 has no mouse.dx field"):
        steps_to_actions([step(), bad], tmp_path / "x.jsonl")


def test_convert_keeps_tails_draws_cursor_and_is_resumable(tmp_path):
    steps = [step(keys=(W,), dx=i % 3) if i != 5 else step(gui=True, x=20, y=20) for i in range(45)]
    write_recording(tmp_path / "src", "a", steps)
    write_recording(tmp_path / "src", "b", steps[:33], frames=34)  # one extra video frame is allowed
    options = VptOptions(size=(64, 36), chunk_size=16)
    report = convert_vpt(tmp_path / "src", tmp_path / "out", options)
    assert report.ok and sorted(report.converted) == ["a", "b"] and report.frames == 78
    store = TrajectoryStore(tmp_path / "out", modalities=("image", "action", "meta_info"))
    assert store.episodes == {"a": 45, "b": 33}
    frames = store.read("a", "image", 0, 45).astype(int)
    plain = np.abs(frames[4] - np.array(frame_colour(4))).max(axis=-1)
    assert plain.max() < 40
    # Cursor tip at (20, 20) * 36/720 = (1, 1): a white arrow over a coloured frame.
    cursor = np.abs(frames[5] - np.array(frame_colour(5))).max(axis=-1)
    assert cursor[1:8, 1:4].max() > 60 and cursor[20:, 20:].max() < 40
    assert store.read("a", "action", 40, 45)["forward"].tolist() == [1] * 5

    again = convert_vpt(tmp_path / "src", tmp_path / "out", options)
    assert again.converted == [] and sorted(again.already_stored) == ["a", "b"]
    assert TrajectoryStore(tmp_path / "out", modalities=("image",)).duplicates["image"] == []


def test_parallel_conversion_matches_serial(tmp_path):
    for i in range(4):
        write_recording(tmp_path / "src", f"ep{i}", [step(keys=(W,), dx=j % 5) for j in range(20 + i)])
    options = VptOptions(size=(32, 32))
    serial = convert_vpt(tmp_path / "src", tmp_path / "one", options, jobs=1)
    parallel = convert_vpt(tmp_path / "src", tmp_path / "two", options, jobs=2)
    assert sorted(serial.converted) == sorted(parallel.converted) == [f"ep{i}" for i in range(4)]
    one = TrajectoryStore(tmp_path / "one", modalities=("image", "action"))
    two = TrajectoryStore(tmp_path / "two", modalities=("image", "action"))
    assert one.episodes == two.episodes
    for name, n in one.episodes.items():
        assert np.array_equal(
            one.read(name, "action", 0, n)["camera"], two.read(name, "action", 0, n)["camera"]
        )
        assert np.array_equal(one.read(name, "image", 0, n), two.read(name, "image", 0, n))
    assert not (tmp_path / "two" / ".staging").exists()


def test_skip_null_actions_is_opt_in(tmp_path):
    steps = [step(keys=(W,)) if i % 2 else step() for i in range(10)]
    write_recording(tmp_path / "src", "a", steps)
    kept = convert_vpt(tmp_path / "src", tmp_path / "all", VptOptions(size=(32, 32)))
    skipped = convert_vpt(
        tmp_path / "src", tmp_path / "some", VptOptions(size=(32, 32), skip_null_actions=True)
    )
    assert kept.frames == 10 and skipped.frames == 5
    meta = TrajectoryStore(tmp_path / "some", modalities=("meta_info",)).read("a", "meta_info", 0, 5)
    assert [m["source_frame"] for m in meta] == [1, 3, 5, 7, 9]


def test_broken_recordings_are_skipped_with_reasons(tmp_path, capsys):
    src = tmp_path / "src"
    good = [step(keys=(W,)) for _ in range(12)]
    write_recording(src, "good", good)
    write_recording(src, "mismatch", good, frames=8)
    video, jsonl = write_recording(src, "badline", good)
    jsonl.write_text(jsonl.read_text().replace("\n", "\n{oops\n", 1))
    video, _ = write_recording(src, "truncated", good)
    video.write_bytes(video.read_bytes()[:300])
    (src / "lonely.mp4").write_bytes(video.read_bytes())
    (src / "orphan.jsonl").write_text("{}\n")
    report = convert_vpt(src, tmp_path / "out", VptOptions(size=(32, 32)))
    reasons = dict(report.failed)
    assert report.converted == ["good"]
    assert "line 2 is not valid JSON" in reasons["badline"]
    assert "video has 8 frames, jsonl has 12 steps" in reasons["mismatch"]
    assert "truncated.mp4" in reasons["truncated"]
    assert "missing lonely.jsonl" in reasons["lonely"]
    assert "missing orphan.mp4" in reasons["orphan"]

    code = main(["data", "convert", "vpt", str(src), str(tmp_path / "out2"), "--size", "32", "--jobs", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.count("SKIPPED") == 5 and "converted 1 episodes" in out


def test_cli_bad_source_is_one_error_line(tmp_path, capsys):
    assert main(["data", "convert", "vpt", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert main(["data", "convert", "vpt", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "no <name>.mp4" in capsys.readouterr().err
