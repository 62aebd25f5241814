"""A corrupt chunk stops `minetrain pretrain` with one `error:` line, with or without loader workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from minetrain.data import RawDataset
from minetrain.data.loader import WindowLoader, collate_windows
from minetrain.data.sampler import EpisodeContinuousBatchSampler
from minetrain.data.store.layout import chunk_key
from minetrain.data.synth import write_synthetic_dataset
from minetrain.errors import DataError

SMALL = [
    "data.frame_width=32",
    "data.frame_height=32",
    "data.batch_size=2",
    "model.hiddim=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "model.timesteps=8",
    "model.mem_len=8",
    "trainer.max_steps=40",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "logger=none",
]


@pytest.fixture(scope="module")
def corrupt_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 episodes of 40 frames; every episode's image chunk (i, 0) is not an MP4 any more."""
    data = write_synthetic_dataset(
        tmp_path_factory.mktemp("worker-errors") / "d", episodes=4, frames=40, size=32
    )
    part = data / "image" / "part-0"
    with lmdb.open(str(part), subdir=part.is_dir()) as env, env.begin(write=True) as txn:
        for episode_idx in range(4):
            txn.put(chunk_key(episode_idx, 0), b"not an mp4")
    return data


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_chunk_is_one_error_line(corrupt_dataset, tmp_path, workers):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "minetrain.cli.main",
            "pretrain",
            f"data.dataset_dirs=[{corrupt_dataset}]",
            f"data.num_workers={workers}",
            *SMALL,
        ],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Caught" not in result.stderr, result.stderr[-3000:]
    assert last.startswith(f"error: {corrupt_dataset}: image part-0 episode "), last
    assert "MP4 chunk does not decode" in last and " chunk (" in last, last


def test_the_loader_raises_the_workers_own_error(corrupt_dataset):
    """Same class, same message as in the main process (no "Caught ... Original Traceback")."""
    dataset = RawDataset(dataset_dirs=[corrupt_dataset], frame_width=32, frame_height=32, win_len=8)
    sampler = EpisodeContinuousBatchSampler(dataset.window_counts, 2, 1, 0, shuffle=False)
    errors = []
    for workers in (0, 1):
        loader = WindowLoader(dataset, batch_sampler=sampler, collate_fn=collate_windows, num_workers=workers)
        with pytest.raises(DataError) as caught:
            next(iter(loader))
        errors.append(caught.value)
    assert [type(err) for err in errors] == [DataError, DataError]
    assert str(errors[1]) == str(errors[0]) and "\n" not in str(errors[1])
