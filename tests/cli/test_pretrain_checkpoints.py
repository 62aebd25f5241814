"""`minetrain pretrain` when checkpointing goes wrong: a full disk, bit rot, stale temp files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from checkpoint_damage import flip_tensor_bytes
from test_pretrain import SMALL, side_by_side

from minetrain.offline.checkpoint_io import MineCheckpointIO

# Every step writes weights, every 2nd step a full checkpoint and last.ckpt, with EMA files beside.
STEPS = [
    *SMALL,
    "model.hiddim=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "save_freq=1",
    "trainer.val_check_interval=100",
    "logger=csv",
]

# Runs `minetrain pretrain` with the write of `last.ckpt` at global step 4 failing: MODE "fill" fills
# the run's filesystem up just before, so that write, and the loggers after it, meet a real ENOSPC;
# MODE "raise" makes torch's writer raise the RuntimeError it raises on a failed write, after a few bytes.
FAIL_LAST_AT_STEP_4 = """
import errno, os, sys, torch
from minetrain.offline import checkpoint_io
save, filler = checkpoint_io.MineCheckpointIO.save_checkpoint, os.path.abspath("filler")
def writer_fails(obj, target):
    with open(target, "wb") if isinstance(target, (str, os.PathLike)) else target as handle:
        handle.write(b"partial")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
def failing_save(self, checkpoint, path, storage_options=None):
    if checkpoint.get("global_step") != 4 or os.path.basename(path) != "last.ckpt":
        return save(self, checkpoint, path, storage_options)
    if MODE == "raise":
        torch.save = writer_fails
    else:
        with open(filler, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(bytes(1 << 16))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    save(self, checkpoint, path, storage_options)
checkpoint_io.MineCheckpointIO.save_checkpoint = failing_save
from minetrain.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def pretrain(
    args: list[str], cwd: Path, cache: Path, script: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINETRAIN_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
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
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache the demo dataset (SMALL's) is generated in, once for this module."""
    return tmp_path_factory.mktemp("cache")


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


def assert_previous_checkpoint_kept(cwd: Path) -> None:
    """The step-4 checkpoint was written before the failure; last.ckpt and its EMA file still hold step 2."""
    (run_dir,) = (cwd / "outputs" / "demo").iterdir()
    checkpoints = run_dir / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["ckpt-epoch=0-step=4-EMA.ckpt", "ckpt-epoch=0-step=4.ckpt", "last-EMA.ckpt", "last.ckpt"]
    io = MineCheckpointIO()
    for name, step in (("ckpt-epoch=0-step=4", 4), ("last", 2)):
        assert io.load_checkpoint(checkpoints / f"{name}.ckpt")["global_step"] == step
        ema = io.load_checkpoint(checkpoints / f"{name}-EMA.ckpt")
        assert ema["global_step"] == step and "optimizer_states" not in ema
    assert not list(run_dir.rglob(".tmp-*"))


@pytest.mark.slow
def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(
    cache: Path, small_disk: Path
) -> None:
    script = f"MODE = 'fill'\n{FAIL_LAST_AT_STEP_4}"
    result = pretrain([*STEPS, "trainer.max_steps=6"], small_disk, cache, script)
    assert_one_error_line(result, "writing checkpoint", "last.ckpt failed (No space left on device)")
    assert_previous_checkpoint_kept(small_disk)


@pytest.mark.slow
def test_writer_runtime_error_is_one_line_and_keeps_the_previous_checkpoint(
    cache: Path, tmp_path: Path
) -> None:
    script = f"MODE = 'raise'\n{FAIL_LAST_AT_STEP_4}"
    result = pretrain([*STEPS, "trainer.max_steps=6"], tmp_path, cache, script)
    assert_one_error_line(result, "writing checkpoint", "last.ckpt failed ([enforce fail at inline_container")
    assert_previous_checkpoint_kept(tmp_path)


@pytest.mark.slow
def test_resume_passes_over_a_bit_rotted_checkpoint_and_removes_stale_temps(
    cache: Path, tmp_path: Path
) -> None:
    args = STEPS
    first = pretrain([*args, "trainer.max_steps=4"], tmp_path, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "demo").iterdir()
    checkpoints = run_dir / "checkpoints"
    last, previous = checkpoints / "last.ckpt", checkpoints / "ckpt-epoch=0-step=4.ckpt"
    assert last.stat().st_mtime > previous.stat().st_mtime

    # Bit rot in an optimizer tensor of the newest checkpoint.
    state = MineCheckpointIO().load_checkpoint(last)["optimizer_states"][0]["state"]
    flip_tensor_bytes(last, max((s["exp_avg"] for s in state.values()), key=lambda t: t.numel()))

    # Temps of killed writers go when a run resumes from their directory; a live writer's stay.
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    stale, live = (
        checkpoints / f".tmp-last.ckpt.{finished.pid}",
        checkpoints / f".tmp-last.ckpt.{os.getpid()}",
    )
    for temp in (stale, live):
        temp.write_bytes(b"partial")
    # The explicit resume fails before it trains and names no run of this directory: run both at once,
    # the explicit one from a directory of its own (run dirs are named by the second they start).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    explicit, auto = side_by_side(
        partial(pretrain, [*args, "trainer.max_steps=6", f"ckpt_path={last}"], elsewhere, cache),
        partial(pretrain, [*args, "trainer.max_steps=6", "resume=auto"], tmp_path, cache),
    )
    assert_one_error_line(explicit, f"checkpoint {last} is corrupt (Bad CRC-32")
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert f"resume=auto: passing over {last}: checkpoint {last} is corrupt" in auto.stderr
    assert f"Restoring states from the checkpoint path at {previous}" in auto.stdout + auto.stderr
    assert not stale.exists() and live.exists()
    resumed_dir = max((tmp_path / "outputs" / "demo").iterdir())
    assert MineCheckpointIO().load_checkpoint(resumed_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
