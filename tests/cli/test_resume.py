"""`minetrain pretrain` when checkpointing goes wrong: a full disk, bit rot, stale temp files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pretrain import SMALL

from minetrain.data.synth import write_synthetic_dataset
from minetrain.offline.checkpoint_io import MineCheckpointIO

# Every step writes weights, every 2nd step a full checkpoint and last.ckpt, with EMA files beside.
STEPS = [
    *SMALL[3:],
    "model.hiddim=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "save_freq=1",
    "trainer.val_check_interval=100",
    "logger=csv",
]

# Runs `minetrain pretrain` with the filesystem of the run filled up just before `last.ckpt` of global
# step FULL_AT is written, so that write, and the loggers after it, meet a real ENOSPC.
FILL_DISK_AT = """
import errno, os, sys
from minetrain.offline import checkpoint_io
save, filler = checkpoint_io.MineCheckpointIO.save_checkpoint, os.path.abspath("filler")
def save_on_full_disk(self, checkpoint, path, storage_options=None):
    full = checkpoint.get("global_step") == {full_at} and os.path.basename(path) == "last.ckpt"
    if full and not os.path.exists(filler):
        with open(filler, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(bytes(1 << 16))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    save(self, checkpoint, path, storage_options)
checkpoint_io.MineCheckpointIO.save_checkpoint = save_on_full_disk
from minetrain.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def pretrain(args: list[str], cwd: Path, script: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = ["-c", script] if script else ["-m", "minetrain.cli.main"]
    return subprocess.run(
        [sys.executable, *command, "pretrain", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and all(fragment in last for fragment in fragments), last
    return last


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", episodes=4, frames=60, size=32)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 MB tmpfs, so a write can meet a real ENOSPC; skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256M", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(
    dataset: Path, small_disk: Path
) -> None:
    args = [f"data.dataset_dirs=[{dataset}]", *STEPS, "trainer.max_steps=6"]
    result = pretrain(args, small_disk, FILL_DISK_AT.replace("{full_at}", "4"))
    assert_one_error_line(result, "writing checkpoint", "last.ckpt failed (No space left on device)")

    # The step-4 checkpoint was written before the disk filled up; last.ckpt and its EMA file still
    # hold step 2, intact.
    (run_dir,) = (small_disk / "outputs" / "demo").iterdir()
    checkpoints = run_dir / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["ckpt-epoch=0-step=4-EMA.ckpt", "ckpt-epoch=0-step=4.ckpt", "last-EMA.ckpt", "last.ckpt"]
    io = MineCheckpointIO()
    for name, step in (("ckpt-epoch=0-step=4", 4), ("last", 2)):
        assert io.load_checkpoint(checkpoints / f"{name}.ckpt")["global_step"] == step
        ema = io.load_checkpoint(checkpoints / f"{name}-EMA.ckpt")
        assert ema["global_step"] == step and "optimizer_states" not in ema
    assert not list(run_dir.rglob(".tmp-*"))
