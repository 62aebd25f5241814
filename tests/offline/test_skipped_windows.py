"""``on_error='skip'``: windows dropped for a corrupt chunk are counted and reported per epoch and per run."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import lmdb
import pytest
from offline_support import run
from run_training import build

from minetrain.data.store.layout import CHUNK_INFOS_KEY, chunk_key


def corrupt_first_chunk(dataset: Path, episode: str) -> int:
    """Overwrite the first image chunk of ``episode`` with bytes that are no video; its episode index."""
    part = next((dataset / "image").iterdir())
    env = lmdb.open(str(part), subdir=part.is_dir())
    try:
        with env.begin(write=True) as txn:
            infos = pickle.loads(txn.get(CHUNK_INFOS_KEY))
            index = next(info["episode_idx"] for info in infos if info["episode"] == episode)
            txn.put(chunk_key(index, 0), b"not an mp4")
    finally:
        env.close()
    return index


@pytest.mark.slow
def test_skipped_windows_are_reported_per_epoch_and_per_run(tiny_dataset: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(tiny_dataset, data)
    cfg = {"data": str(data), "out": str(out), "on_error": "skip", "max_steps": -1, "max_epochs": 2}
    datamodule = build(cfg)[1]
    datamodule.setup()
    episode = datamodule.train_dataset.episodes[0]
    index = corrupt_first_chunk(data, episode)

    output = run({**cfg, "num_workers": 0, "save_freq": 100})
    named = re.findall(rf"skipping window (\d) of episode {episode}: .*chunk \({index}, 0\)", output)
    assert named, output[-3000:]
    per_epoch = [
        (int(epoch), int(count))
        for epoch, count in re.findall(
            rf"epoch (\d): (\d+) training window\(s\) skipped because of bad data \(on_error='skip'\), "
            rf"in episodes {episode} \(\d+\)",
            output,
        )
    ]
    assert [epoch for epoch, _ in per_epoch] == [0, 1], output[-3000:]
    assert sum(count for _, count in per_epoch) == len(named)
    total = f"this run skipped {len(named)} training and 0 validation window(s) because of bad data"
    assert total in output, output[-3000:]
