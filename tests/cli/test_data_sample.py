import numpy as np
from PIL import Image

from minetrain.cli.main import main
from minetrain.data.synth import write_synthetic_dataset


def test_sample_draws_one_row_per_slot(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "d", episodes=4, frames=40, size=32, seed=2)
    out = tmp_path / "preview.png"
    argv = ["data", "sample", str(data), "--out", str(out), "--batch-size", "2", "--win-len", "16"]
    assert main([*argv, "--frames", "4", "--size", "32", "--split-ratio", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("row ") == 2 and "wrote" in printed
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[1] > grid.shape[0]  # 2 rows of 4 frames


def test_sample_rejects_a_batch_past_the_epoch(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "d", episodes=2, frames=20, size=32, seed=2)
    argv = ["data", "sample", str(data), "--out", str(tmp_path / "p.png"), "--batch-index", "99"]
    assert main([*argv, "--size", "32", "--split-ratio", "1"]) == 2
    assert "--batch-index must be below" in capsys.readouterr().err
