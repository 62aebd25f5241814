"""Checkpoint files are replaced atomically and unreadable ones fail with one clear line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minetrain.errors import CheckpointError
from minetrain.offline.checkpoint_io import MineCheckpointIO, remove_stale_temps

WRITER = """
import sys, torch
from minetrain.offline.checkpoint_io import MineCheckpointIO
io, path, i = MineCheckpointIO(), sys.argv[1], 0
print("ready", flush=True)
while True:
    i += 1
    io.save_checkpoint({"state_dict": {"w": torch.full((4_000_000,), float(i))}, "i": i}, path)
"""


def test_killed_writer_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.ckpt"
    for delay in (0.25, 0.6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if target.exists():
            loaded = MineCheckpointIO().load_checkpoint(target)
            assert torch.all(loaded["state_dict"]["w"] == loaded["i"])
    assert target.exists()
    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.ckpt"]


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt.ckpt"
    io = MineCheckpointIO()
    io.save_checkpoint({"state_dict": {}, "version": 1}, target)

    def broken_save(obj: object, path: Path) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match=r"ckpt.ckpt failed \(disk full\); nothing was written"):
        io.save_checkpoint({"state_dict": {}, "version": 2}, target)
    monkeypatch.undo()
    assert io.load_checkpoint(target)["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.ckpt"]


def test_load_errors(tmp_path: Path) -> None:
    io = MineCheckpointIO()
    with pytest.raises(CheckpointError, match="does not exist"):
        io.load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="cannot be read"):
        io.load_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"weights": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        io.load_checkpoint(tmp_path / "plain.pt")
