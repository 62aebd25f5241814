"""A tiny RocketPolicy learns the synthetic actions: validation BC loss falls well below its start."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_training import build

from minetrain.data.synth import write_synthetic_dataset


@pytest.mark.slow
def test_validation_bc_loss_drops(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", episodes=24, frames=64, size=32, seed=1)
    cfg = {
        "data": str(data),
        "out": str(tmp_path / "run"),
        "strategy": "auto",
        "max_steps": 200,
        "learning_rate": 1e-3,
        "warmup_steps": 10,
        "limit_val_batches": 8,
        "save_freq": 1000,
        "num_workers": 0,
    }
    module, datamodule, trainer = build(cfg)
    start = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/bc/loss"]
    trainer.fit(module, datamodule=datamodule)
    end = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/bc/loss"]
    assert end < 0.6 * start, (start, end)
