"""Checkpoint files are replaced atomically and unreadable ones fail with one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import torch
from checkpoint_damage import flip_tensor_bytes

from minetrain.errors import CheckpointError
from minetrain.files import remove_stale_temps
from minetrain.offline.checkpoint_io import MineCheckpointIO, newest_intact_checkpoint

WRITER = """
import sys, torch
from minetrain.offline.checkpoint_io import MineCheckpointIO
io, path, i = MineCheckpointIO(), sys.argv[1], 0
print("ready", flush=True)
sys.stdin.readline()  # the go-ahead
while True:
    i += 1
    io.save_checkpoint({"state_dict": {"w": torch.full((4_000_000,), float(i))}, "i": i}, path)
"""


def test_killed_writer_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.ckpt"
    # Both writers start at once (start-up is most of their time); each writes when told, in turn.
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for writer, delay in zip(writers, (0.25, 0.6), strict=True):
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
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

    def broken_save(obj: object, handle: IO[bytes]) -> None:
        handle.write(b"partial")
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


def test_writer_runtime_error_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save reports a failed write (a full disk) as a RuntimeError; the cause is named when known."""
    target = tmp_path / "ckpt.ckpt"
    io = MineCheckpointIO()
    io.save_checkpoint({"state_dict": {}, "version": 1}, target)

    def writer_fails(obj: object, handle: IO[bytes]) -> None:
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    def disk_full(obj: object, handle: IO[bytes]) -> None:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
            ) from None

    monkeypatch.setattr(torch, "save", writer_fails)
    with pytest.raises(
        CheckpointError, match=r"ckpt.ckpt failed \(\[enforce fail .* nothing was written"
    ) as err:
        io.save_checkpoint({"state_dict": {}, "version": 2}, target)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"ckpt.ckpt failed \(No space left on device\)"):
        io.save_checkpoint({"state_dict": {}, "version": 2}, target)
    monkeypatch.undo()
    assert io.load_checkpoint(target)["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.ckpt"]


def optimizer_checkpoint(step: int) -> dict:
    generator = torch.Generator().manual_seed(step)
    return {
        "state_dict": {"w": torch.randn(64, 64, generator=generator)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(64, 64, generator=generator)}}}],
        "global_step": step,
    }


def test_bit_rot_in_an_optimizer_tensor_is_detected(tmp_path: Path) -> None:
    io = MineCheckpointIO()
    older, newer = tmp_path / "ckpt-step=2.ckpt", tmp_path / "last.ckpt"
    io.save_checkpoint(optimizer_checkpoint(2), older)
    io.save_checkpoint(optimizer_checkpoint(4), newer)
    os.utime(older, (1_000_000, 1_000_000))
    assert newest_intact_checkpoint([older, newer]) == newer

    flip_tensor_bytes(newer, optimizer_checkpoint(4)["optimizer_states"][0]["state"][0]["exp_avg"])
    # torch.load alone does not notice.
    assert torch.load(newer, weights_only=False)["global_step"] == 4
    with pytest.raises(CheckpointError, match=r"last\.ckpt is corrupt \(Bad CRC-32 .*data/\d+") as err:
        io.load_checkpoint(newer)
    assert "\n" not in str(err.value)
    skipped: list[tuple[Path, str]] = []
    assert newest_intact_checkpoint([older, newer], lambda p, why: skipped.append((p, why))) == older
    assert [p for p, _ in skipped] == [newer] and "corrupt" in skipped[0][1]
    # A candidate removed meanwhile (another run's top-k) is passed over too.
    gone = tmp_path / "gone.ckpt"
    assert newest_intact_checkpoint([gone, newer, older]) == older
    assert newest_intact_checkpoint([gone], lambda p, why: skipped.append((p, why))) is None
    assert skipped[-1][0] == gone and "cannot be read (No such file or directory)" in skipped[-1][1]


def test_checkpoints_without_checksums_still_load(tmp_path: Path) -> None:
    io = MineCheckpointIO()
    legacy = tmp_path / "legacy.ckpt"
    torch.save(optimizer_checkpoint(1), legacy, _use_new_zipfile_serialization=False)
    unchecked = tmp_path / "unchecked.ckpt"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(optimizer_checkpoint(2), unchecked)
    finally:
        torch.serialization.set_crc32_options(True)
    assert io.load_checkpoint(legacy)["global_step"] == 1
    assert io.load_checkpoint(unchecked)["global_step"] == 2
    assert newest_intact_checkpoint([legacy, unchecked]) in (legacy, unchecked)


def test_only_temps_of_finished_writers_are_removed(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = tmp_path / f".tmp-last.ckpt.{finished.pid}"
    live = tmp_path / f".tmp-last.ckpt.{os.getpid()}"
    for temp in (dead, live):
        temp.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == [dead]
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def test_a_verified_checkpoint_is_read_once_and_a_replaced_one_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume=auto verifies its pick, then the load verifies it: one full read, not two."""
    from minetrain.offline import checkpoint_io

    path = tmp_path / "ckpt.ckpt"
    io = MineCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(1000.0)}}, path)
    opened: list[Path] = []
    real_zipfile = checkpoint_io.zipfile.ZipFile

    def counting_zipfile(file: Path, *args: object) -> object:
        opened.append(Path(file))
        return real_zipfile(file, *args)

    monkeypatch.setattr(checkpoint_io.zipfile, "ZipFile", counting_zipfile)
    assert newest_intact_checkpoint([path]) == path
    assert io.load_checkpoint(path)["state_dict"]["w"].sum() == torch.arange(1000.0).sum()
    assert opened.count(path) == 1
    io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, path)
    assert newest_intact_checkpoint([path]) == path
    assert opened.count(path) == 2
