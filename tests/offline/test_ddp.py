"""DDP with two CPU processes (gloo): disjoint windows, synchronised weights, one writer, exact resume,
and every gradient in its parameter's layout (no "Grad strides do not match bucket view strides"), in
fp32 and bf16-mixed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from offline_support import assert_same_state, load_final, read_batches, run

from minetrain.data.synth import write_synthetic_dataset

N = 3


@pytest.fixture(scope="module")
def frames_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 episodes of ~40 frames at 64x64: the backbone's last feature map is 2x2, where a gradient can
    take another layout than its parameter (at 32x32 it is 1x1 and every layout looks the same)."""
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("data64") / "synth", episodes=8, frames=40, size=64
    )


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
@pytest.mark.parametrize(
    ("strategy", "precision"), [("ddp_find_unused_parameters_true", "bf16-mixed"), ("ddp", "32")]
)
def test_ddp_two_processes(frames_64: Path, tmp_path: Path, strategy: str, precision: str) -> None:
    common = {
        "data": str(frames_64),
        "frame_size": 64,
        "devices": 2,
        "strategy": strategy,
        "precision": precision,
        "save_freq": N,
        "max_steps": 2 * N,
    }
    straight = tmp_path / "straight"
    output = run({**common, "out": str(straight), "ckpt_top_k": -1}, python_warnings="default")
    assert "Grad strides do not match" not in output, output[-3000:]
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
