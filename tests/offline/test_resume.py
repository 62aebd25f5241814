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


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop", [{"max_steps": 6}, {"max_steps": 12, "stop_at_step": 6}], ids=["max_steps", "request"]
)
def test_run_stopped_and_extended_matches_straight_run(
    tiny_dataset: Path, tmp_path: Path, stop: dict[str, int]
) -> None:
    """6 steps, then ``resume=auto``'s pick (the newest full checkpoint: ``last.ckpt``, written when
    training stopped at max_steps, or on a stop request as ``max_time`` makes) extended to 12 steps
    == 12 steps straight, bitwise."""
    common = {"data": str(tiny_dataset), "save_freq": 4, "save_last": True}
    straight, runs = tmp_path / "straight", tmp_path / "runs"
    first, second = runs / "first", runs / "second"
    for directory in (straight, first, second):
        directory.mkdir(parents=True)
    both = [
        launch({**common, "out": str(straight), "max_steps": 12}),
        launch({**common, "out": str(first), **stop}),
    ]
    for process in both:
        code, output = finish(process)
        assert code == 0, output[-4000:]

    checkpoint = latest_checkpoint(runs)
    assert checkpoint == first / "checkpoints" / "last.ckpt"
    run({**common, "out": str(second), "max_steps": 12, "ckpt_path": str(checkpoint)})

    expected = read_batches(straight / "batches-rank0.jsonl")
    assert (
        read_batches(first / "batches-rank0.jsonl") + read_batches(second / "batches-rank0.jsonl") == expected
    )
    assert [row["epoch"] for row in expected] == [0] * 12
    losses = read_batches(first / "losses-rank0.jsonl") + read_batches(second / "losses-rank0.jsonl")
    assert losses == read_batches(straight / "losses-rank0.jsonl")
    assert_same_state(load_final(straight / "final-rank0.pt"), load_final(second / "final-rank0.pt"))
