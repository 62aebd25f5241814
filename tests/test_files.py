"""The one atomic write: all or nothing under the final name, umask modes, fsynced, stale temps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minetrain.files import TEMP_PREFIX, atomic_path, atomic_write_bytes, remove_stale_temps, temp_path


def test_exception_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_success_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert not list(target.parent.glob(f"{TEMP_PREFIX}*"))


def test_mode_follows_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_file_and_directory_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else False)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    atomic_write_bytes(tmp_path / "f", b"x")
    assert len(synced) == 2
    if os.path.exists("/proc/self/fd"):
        assert synced == [False, True]


def test_remove_stale_temps_keeps_live_writers(tmp_path: Path) -> None:
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    dead = tmp_path / f"{TEMP_PREFIX}last.ckpt.{dead_pid.pid}"
    live = temp_path(tmp_path / "last.ckpt")
    dead.write_bytes(b"")
    live.write_bytes(b"")
    assert remove_stale_temps(tmp_path) == [dead]
    assert live.exists()
