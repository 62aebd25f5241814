"""Killing `data convert vpt --jobs 2` mid-way takes its worker processes with it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_vpt import step, write_recording

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="reads /proc; the parent-death signal is Linux's"
)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, from /proc; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_converter_leaves_no_workers(tmp_path, sig):
    steps = [step(keys=("key.keyboard.w",), dx=i % 5) for i in range(300)]
    for i in range(8):
        write_recording(tmp_path / "src", f"rec{i}", steps)
    main = subprocess.Popen(
        [sys.executable, "-m", "minetrain.cli.main", "data", "convert", "vpt", str(tmp_path / "src"),
         str(tmp_path / "out"), "--jobs", "2", "--size", "64x36"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and main.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = [pid for pid in _children(main.pid) if _alive(pid)]
        assert len(workers) == 2 and main.poll() is None, "the converter ended before its workers were seen"
        os.kill(main.pid, sig)
        main.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)]
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if main.poll() is None:
            main.kill()
