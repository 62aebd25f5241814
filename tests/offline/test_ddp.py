"""DDP with two CPU processes (gloo): disjoint windows, synchronised weights, one writer, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from offline_support import assert_same_state, load_final, read_batches, run

N = 3


def check_ranks(out: Path, steps: int) -> None:
    rank0, rank1 = read_batches(out / "batches-rank0.jsonl"), read_batches(out / "batches-rank1.jsonl")
    assert [row["step"] for row in rank0] == [row["step"] for row in rank1] == list(range(steps))
    windows0 = {w for row in rank0 for w in zip(row["episode"], row["timestamp"], strict=True)}
    windows1 = {w for row in rank1 for w in zip(row["episode"], row["timestamp"], strict=True)}
    assert windows0 and windows1 and not windows0 & windows1
    # Gradients are all-reduced: both ranks end with the same weights, EMA and optimizer state.
    assert_same_state(load_final(out / "final-rank0.pt"), load_final(out / "final-rank1.pt"), buffers=False)
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp_find_unused_parameters_true", "ddp"])
def test_ddp_two_processes(tiny_dataset: Path, tmp_path: Path, strategy: str) -> None:
    common = {
        "data": str(tiny_dataset),
        "devices": 2,
        "strategy": strategy,
        "save_freq": N,
        "max_steps": 2 * N,
    }
    straight = tmp_path / "straight"
    run({**common, "out": str(straight), "ckpt_top_k": -1})
    check_ranks(straight, 2 * N)
    names = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert names == [f"ckpt-epoch=0-step={s}{e}.ckpt" for s in (N, 2 * N) for e in ("-EMA", "")]
    weights = sorted(p.name for p in (straight / "weights").iterdir())
    assert weights == [f"weight-epoch=0-step={s}{e}.ckpt" for s in (N, 2 * N) for e in ("-EMA", "")]
    # Rank 0 wrote the recurrent memory of both ranks into the full checkpoint.
    half_way = straight / "checkpoints" / f"ckpt-epoch=0-step={N}.ckpt"
    saved = torch.load(half_way, weights_only=False)["minetrain"]
    assert saved["world_size"] == 2 and len(saved["ranks"]) == 2
    if strategy != "ddp":
        return
    # Resuming from the step-N checkpoint reaches the same end state with the same batches.
    resumed = tmp_path / "resumed"
    run({**common, "out": str(resumed), "ckpt_path": str(half_way)})
    for rank in (0, 1):
        rows = read_batches(resumed / f"batches-rank{rank}.jsonl")
        assert rows == read_batches(straight / f"batches-rank{rank}.jsonl")[N:]
    assert_same_state(load_final(resumed / "final-rank0.pt"), load_final(straight / "final-rank0.pt"))
    assert_same_state(load_final(resumed / "final-rank1.pt"), load_final(straight / "final-rank1.pt"))
