import av
import numpy as np
from PIL import Image

from minetrain.cli.main import main
from minetrain.data.store import TrajectoryStore


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


def _decode(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _episode(dataset, index=0):
    return sorted(TrajectoryStore(dataset).episodes)[index]


def test_rollout_preview_writes_a_clip_and_a_grid(trained_run, eval_dataset, tmp_path, capsys):
    episode = _episode(eval_dataset)
    out, png = tmp_path / "clip.mp4", tmp_path / "clip.png"
    args = ["rollout-preview", str(trained_run / "checkpoints"), str(eval_dataset), "--episode", episode]
    assert main([*args, "--out", str(out), "--start", "3", "--frames", "12", "--png", str(png)]) == 0
    frames = _decode(out)
    assert len(frames) == 12
    height, width = frames[0].shape[:2]
    assert width == 256 and height > 256  # the 32x32 frame upscaled, with captions and the policy panel
    assert np.std(frames[0]) > 10, "the frame has content"
    grid = np.asarray(Image.open(png))
    assert grid.shape[1] > 2 * width
    printed = capsys.readouterr().out
    assert f"frames 3..14 of {episode}" in printed and "matches the recording" in printed


def test_rollout_preview_with_ema_clips_at_the_episode_end(full_checkpoint, eval_dataset, tmp_path):
    episode = _episode(eval_dataset, 1)
    length = TrajectoryStore(eval_dataset).episodes[episode]
    out = tmp_path / "tail.mp4"
    args = ["rollout-preview", str(full_checkpoint), str(eval_dataset), "--episode", episode, "--ema"]
    assert main([*args, "--out", str(out), "--start", str(length - 5), "--frames", "50"]) == 0
    assert len(_decode(out)) == 5


def test_rollout_preview_bad_input_is_one_line(full_checkpoint, eval_dataset, tmp_path, capsys):
    out = str(tmp_path / "clip.mp4")
    base = ["rollout-preview", str(full_checkpoint)]
    assert main([*base, str(eval_dataset), "--episode", "no-such-episode", "--out", out]) == 2
    assert "episode no-such-episode is not in" in _error_line(capsys)
    assert main([*base, str(tmp_path / "nodata"), "--episode", "x", "--out", out]) == 2
    assert "dataset dir does not exist" in _error_line(capsys)
    episode = _episode(eval_dataset)
    assert main([*base, str(eval_dataset), "--episode", episode, "--out", out, "--start", "100000"]) == 2
    assert "--start 100000 is outside" in _error_line(capsys)
    assert main([*base, str(eval_dataset), "--episode", episode, "--out", str(tmp_path / "clip.gif")]) == 2
    assert "must end in .mp4" in _error_line(capsys)
    missing = ["rollout-preview", str(tmp_path / "none.ckpt"), str(eval_dataset), "--episode", episode]
    assert main([*missing, "--out", out]) == 2
    assert "none.ckpt does not exist" in _error_line(capsys)
    assert not (tmp_path / "clip.mp4").exists()
