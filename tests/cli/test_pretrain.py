"""`minetrain pretrain`: the demo end to end (shortened), resume=auto, and the tutorial example script."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
# The demo, made smaller: tiny frames, model and dataset, a few steps, no worker processes.
SMALL = [
    "demo_data.episodes=6",
    "demo_data.frames=150",
    "demo_data.size=32",
    "data.frame_width=32",
    "data.frame_height=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "model.timesteps=8",
    "model.mem_len=8",
    "optim.learning_rate=0.003",
    "trainer.val_check_interval=15",
    "trainer.limit_val_batches=4",
    "save_freq=15",
    "optim.warmup_steps=5",
]


T = TypeVar("T")


def side_by_side(*calls: Callable[[], T]) -> list[T]:
    """The results of independent calls that each run a command, run at once: a command is mostly
    Python start-up on one core, so two take about as long as one on the CI's two cores."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def run_cli(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINETRAIN_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "minetrain.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_demo_trains_writes_checkpoints_and_resumes(tmp_path: Path):
    cache = tmp_path / "cache"
    first = run_cli(["pretrain", *SMALL, "trainer.max_steps=30"], tmp_path, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "demo").iterdir()
    full = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    weights = sorted((run_dir / "weights").glob("*.ckpt"))
    assert any(p.name == "last.ckpt" for p in full)
    assert any(p.name.endswith("-EMA.ckpt") for p in full) and any(
        p.name.endswith("-EMA.ckpt") for p in weights
    )
    assert {p.name for p in weights} >= {"weight-epoch=0-step=15.ckpt", "weight-epoch=0-step=30.ckpt"}
    assert "train loss" in first.stdout and "Resume:" in first.stdout
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 30 and "optimizer_states" in ckpt

    # The loss fell: the summary's train row reads "start end".
    train_row = next(line for line in first.stdout.splitlines() if "train loss" in line)
    start, end = (float(x) for x in train_row.replace("│", " ").split()[-2:])
    assert end < 0.8 * start, train_row

    second = run_cli(["pretrain", *SMALL, "trainer.max_steps=40", "resume=auto"], tmp_path, cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in second.stderr + second.stdout
    resumed_dir = max((tmp_path / "outputs" / "demo").iterdir())
    assert resumed_dir != run_dir
    resumed = torch.load(resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 40


def test_bad_override_and_missing_dataset_give_one_line_errors(tmp_path: Path):
    missing, unknown = side_by_side(
        partial(
            run_cli,
            ["pretrain", "data.dataset_dirs=[/no/such/dir]", "trainer.max_steps=1"],
            tmp_path,
            tmp_path,
        ),
        partial(run_cli, ["pretrain", "trainer.no_such_option=1"], tmp_path, tmp_path),
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error:") and "/no/such/dir" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert (
        unknown.returncode != 0 and "no_such_option" in unknown.stderr and "Traceback" not in unknown.stderr
    )


@pytest.mark.slow
def test_tutorial_example_runs_small(tmp_path: Path):
    from minetrain.data.synth import write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(data, episodes=4, frames=100, size=32, seed=1)
    overrides = [
        f"dataset_dirs=[{data}]",
        "model.backbone=test_efficientnet",
        "model.hiddim=32",
        "model.num_heads=2",
        "model.num_layers=1",
        "model.timesteps=8",
        "model.mem_len=8",
        "frame_size=32",
        "win_len=8",
        "batch_size=2",
        "num_workers=0",
        "devices=1",
        "precision=32",
        "max_steps=6",
        "save_freq=3",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pretrain_rocket1.py"), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "weights" / "weight-epoch=0-step=6.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "ckpt-epoch=0-step=4.ckpt").is_file()


def test_dataset_without_segmentation_and_full_disk_give_one_line_errors(tmp_path: Path):
    from minetrain.data.synth import write_synthetic_dataset

    data, no_segmentation = tmp_path / "data", tmp_path / "no-segmentation"
    write_synthetic_dataset(data, episodes=4, frames=60, size=32, seed=2)
    shutil.copytree(data, no_segmentation)
    shutil.rmtree(no_segmentation / "segmentation")
    small = [*SMALL[3:], "trainer.max_steps=2", "save_freq=1"]

    full_disk = (
        "import errno, sys, torch\n"
        "def no_space(*args, **kwargs):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "torch.save = no_space\n"
        "from minetrain.cli.main import main\n"
        f"sys.exit(main({['pretrain', f'data.dataset_dirs=[{data}]', *small]!r}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    for cwd in ("full-disk", "no-segmentation-run"):
        (tmp_path / cwd).mkdir()
    result, no_segments = side_by_side(
        partial(
            subprocess.run,
            [sys.executable, "-c", full_disk],
            cwd=tmp_path / "full-disk",
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        ),
        partial(
            run_cli,
            ["pretrain", f"data.dataset_dirs=[{no_segmentation}]", *small],
            tmp_path / "no-segmentation-run",
            tmp_path,
        ),
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: writing checkpoint") and "No space left on device" in last
    assert "Traceback" not in result.stderr
    written = [p.name for p in (tmp_path / "full-disk" / "outputs").rglob("*.ckpt")]
    assert written == [], written

    assert no_segments.returncode == 2
    last = no_segments.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "segmentation" in last and "Traceback" not in no_segments.stderr


def test_demo_trains_in_bf16_mixed(tmp_path: Path):
    """bf16-mixed, the flagship precision, trains on CPU with the lean backbone layers under autocast."""
    run = run_cli(
        ["pretrain", *SMALL, "trainer.precision=bf16-mixed", "trainer.max_steps=2", "save_freq=1"],
        tmp_path,
        tmp_path / "cache",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "demo").iterdir()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2


# A tiny model on conftest's eval_dataset, one worker process.
TINY_WORKER_RUN = [
    "name=shm",
    "model.hiddim=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "model.timesteps=8",
    "model.mem_len=8",
    "data.frame_width=32",
    "data.frame_height=32",
    "data.batch_size=2",
    "data.split_ratio=0.7",
    "data.num_workers=1",
    "trainer.limit_val_batches=1",
    "optim.warmup_steps=1",
]


@pytest.mark.slow  # two runs of the CLI
def test_pretrain_trains_with_torchs_own_shared_memory_hand_over(tmp_path: Path, eval_dataset: Path):
    """``data.shared_batch_ring=false``: workers hand batches over the way torch's collate path does."""
    dataset = f"data.dataset_dirs=[{eval_dataset}]"
    run = [
        "pretrain",
        dataset,
        *TINY_WORKER_RUN,
        "data.shared_batch_ring=false",
        "trainer.max_steps=3",
        "save_freq=3",
    ]
    # More than /dev/shm holds: one error line before any worker starts.
    too_much_args = ["pretrain", dataset, *TINY_WORKER_RUN, "data.prefetch_factor=100000000"]
    (tmp_path / "too-much").mkdir()
    result, too_much = side_by_side(
        partial(run_cli, run, tmp_path, tmp_path / "cache"),
        partial(run_cli, too_much_args, tmp_path / "too-much", tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "shm").iterdir()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3

    assert too_much.returncode == 2, too_much.stderr[-3000:]
    last = too_much.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the ") and "/dev/shm" in last and "--shm-size=" in last
    assert "Traceback" not in too_much.stderr
