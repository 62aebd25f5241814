"""Exact resume: 2N steps straight == N steps, SIGKILL, resume from the step-N checkpoint for N more."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from offline_support import assert_same_state, finish, launch, load_final, read_batches, run

from minetrain.cli.pretrain_run import latest_checkpoint

N = 4


@pytest.mark.slow
def test_killed_and_resumed_run_matches_straight_run(tiny_dataset: Path, tmp_path: Path) -> None:
    common = {
        "data": str(tiny_dataset),
        "max_steps": 2 * N,
        "save_freq": N,
        "val_check_interval": 3,
        "ema_validate_original": False,
    }
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir()
    killed.mkdir()
    # The straight run and the run that gets killed are independent: run them side by side.
    first = launch({**common, "out": str(straight)})
    second = launch({**common, "out": str(killed), "kill_at_step": N})
    code, output = finish(first)
    assert code == 0, output[-4000:]
    code, output = finish(second)
    assert code == -signal.SIGKILL, output[-4000:]

    checkpoint = killed / "checkpoints" / f"ckpt-epoch=0-step={N}.ckpt"
    assert checkpoint.is_file()
    assert (killed / "checkpoints" / f"ckpt-epoch=0-step={N}-EMA.ckpt").is_file()
    assert not (killed / "final-rank0.pt").exists()
    run({**common, "out": str(killed), "ckpt_path": str(checkpoint)})

    expected = read_batches(straight / "batches-rank0.jsonl")
    assert [row["step"] for row in expected] == list(range(2 * N))
    # The killed run recorded steps 0..N-1, the resumed one N..2N-1: together, the same batches.
    assert read_batches(killed / "batches-rank0.jsonl") == expected
    # Mid-epoch: steps N-1 and N belong to the same epoch.
    assert expected[N - 1]["epoch"] == expected[N]["epoch"]
    assert_same_state(load_final(straight / "final-rank0.pt"), load_final(killed / "final-rank0.pt"))


# How the first run of a stopped-and-extended run ends: at its max_steps, or on a stop request.
STOPS = {"max_steps": {"max_steps": 6}, "request": {"max_steps": 12, "stop_at_step": 6}}


@pytest.mark.slow
def test_run_stopped_and_extended_matches_straight_run(tiny_dataset: Path, tmp_path: Path) -> None:
    """6 steps, then ``resume=auto``'s pick (the newest full checkpoint: ``last.ckpt``, written when
    training stopped at max_steps, or on a stop request as ``max_time`` makes) extended to 12 steps
    == 12 steps straight, bitwise; for each way of stopping, against one straight run."""
    common = {"data": str(tiny_dataset), "save_freq": 4, "save_last": True}
    straight = tmp_path / "straight"
    runs = {stop: (tmp_path / stop / "first", tmp_path / stop / "second") for stop in STOPS}
    for directory in (straight, *(d for pair in runs.values() for d in pair)):
        directory.mkdir(parents=True)
    # The straight run and the first runs are independent: run them side by side, then the extensions.
    firsts = {stop: launch({**common, "out": str(first), **STOPS[stop]}) for stop, (first, _) in runs.items()}
    for process in [launch({**common, "out": str(straight), "max_steps": 12}), *firsts.values()]:
        code, output = finish(process)
        assert code == 0, output[-4000:]

    seconds = {}
    for stop, (first, second) in runs.items():
        checkpoint = latest_checkpoint(first.parent)
        assert checkpoint == first / "checkpoints" / "last.ckpt", stop
        seconds[stop] = launch({**common, "out": str(second), "max_steps": 12, "ckpt_path": str(checkpoint)})
    for stop, process in seconds.items():
        code, output = finish(process)
        assert code == 0, (stop, output[-4000:])

    expected = read_batches(straight / "batches-rank0.jsonl")
    assert [row["epoch"] for row in expected] == [0] * 12
    for stop, (first, second) in runs.items():
        batches = read_batches(first / "batches-rank0.jsonl") + read_batches(second / "batches-rank0.jsonl")
        assert batches == expected, stop
        losses = read_batches(first / "losses-rank0.jsonl") + read_batches(second / "losses-rank0.jsonl")
        assert losses == read_batches(straight / "losses-rank0.jsonl"), stop
        assert_same_state(load_final(straight / "final-rank0.pt"), load_final(second / "final-rank0.pt"))
