"""`data episodes` lists names and lengths; `data inspect` shows part resolutions and length mismatches."""

import json
import logging

import pytest

from minetrain.cli.main import main
from minetrain.data import MineDataModule
from minetrain.data.store import DatasetWriter, Episode, reader
from minetrain.data.synth import synth_episode, write_synthetic_dataset


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """2 episodes at 32x32, 1 at 16x16, and "short" whose actions stop 5 frames before its frames do."""
    out = write_synthetic_dataset(tmp_path_factory.mktemp("mixed") / "ds", episodes=2, frames=40, size=32)
    write_synthetic_dataset(out, episodes=1, frames=40, size=16, seed=5)
    full = synth_episode(0, 40, size=32, seed=9)
    with DatasetWriter(out) as writer:
        writer.write(
            Episode("short", image=full.image, segmentation=full.segmentation, meta_info=full.meta_info)
        )
        writer.write(Episode("short", action={key: value[:35] for key, value in full.action.items()}))
    return out


def test_episodes_lists_names_lengths_and_usability(mixed, tmp_path, capsys):
    with DatasetWriter(tmp_path / "partial") as writer:
        writer.write(Episode("only-actions", action=synth_episode(0, 20, size=16).action))
    assert main(["data", "episodes", str(mixed), str(tmp_path / "partial"), "--json"]) == 0
    rows = {row["episode"]: row for row in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == ["only-actions", "short", "synth0-0000", "synth0-0001", "synth5-0000"]
    assert rows["short"] == {
        "episode": "short",
        "dataset": str(mixed),
        "lengths": {"image": 40, "action": 35, "segmentation": 40, "meta_info": 40},
        "usable": True,
    }
    assert rows["only-actions"]["lengths"] == {"action": 20} and rows["only-actions"]["usable"] is True
    assert main(["data", "episodes", str(mixed)]) == 0
    out = capsys.readouterr().out
    assert "synth5-0000" in out and "yes*" in out and "4 episodes, 4 usable" in out


def test_inspect_reports_each_resolution_and_length_mismatches(mixed, capsys):
    assert main(["data", "inspect", str(mixed), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # Three writes, three parts: the 32x32 pair, the 16x16 episode, then "short" at 32x32.
    assert summary["resolutions"] == {"32x32": 2, "16x16": 1} and summary["resolution"] == [32, 32]
    assert summary["length_mismatches"] == {
        "short": {"image": 40, "action": 35, "segmentation": 40, "meta_info": 40}
    }
    assert main(["data", "inspect", str(mixed)]) == 0
    out = capsys.readouterr().out
    assert "32x32 (2 parts), 16x16 (1 parts); read from the first" in out
    assert "1 episodes (training uses the" in out and "short: image 40, action 35, segmentation 40" in out


def test_training_setup_warns_once_per_mismatched_episode(mixed, caplog, monkeypatch):
    monkeypatch.setattr(reader, "_warned_lengths", set())  # the other tests' stores warned already
    module = MineDataModule(
        data_params=dict(dataset_dirs=[str(mixed)], frame_width=16, frame_height=16, win_len=8),
        batch_size=1,
        split_ratio=0.5,
    )
    with caplog.at_level(logging.WARNING):
        module.setup()
    lines = [r.getMessage() for r in caplog.records if "disagree" in r.getMessage()]
    assert lines == [
        f"{mixed}: episode short: modalities disagree on its length (image 40, action 35, segmentation 40); "
        "training uses the first 35"
    ]
