"""EMA, SmartCheckpointCallback and SpeedMonitorCallback on a toy LightningModule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from minetrain.offline.lightning_callbacks import EMA, SmartCheckpointCallback, SpeedMonitorCallback


class Toy(L.LightningModule):
    """A linear model that records its weights after each step and during validation."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.after_step: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    def weights(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.parameters()]).clone()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.layer(batch["x"]) - 1).pow(2).mean()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.after_step.append(self.weights())

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if batch_idx == 0:
            self.validated.append(self.weights())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    items = [
        {"x": torch.randn(4, 3), "image": torch.zeros(4, 2, 1, 1, 3), "mask": torch.ones(4, 2)}
        for _ in range(6)
    ]
    return DataLoader(items, batch_size=None)


def trainer(tmp_path: Path, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    options = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    return L.Trainer(**(options | kwargs))


@pytest.mark.parametrize(("validate_original", "first_update"), [(False, "blend"), (True, "copy")])
def test_ema_updates_every_n_steps_and_validates_as_asked(
    tmp_path: Path, validate_original: bool, first_update: str
) -> None:
    torch.manual_seed(0)
    model = Toy()
    initial = model.weights()
    ema = EMA(
        decay=0.5, validate_original_weights=validate_original, every_n_steps=2, first_update=first_update
    )
    trainer(tmp_path, [ema], max_steps=5, val_check_interval=5).fit(model, loader(), loader())
    w = model.after_step
    # Updates after optimizer steps 1, 3 and 5; the first one blends with the initial weights (the
    # reference's EMA) or copies the trained ones.
    first = 0.5 * initial + 0.5 * w[0] if first_update == "blend" else w[0]
    expected = 0.5 * (0.5 * first + 0.5 * w[2]) + 0.5 * w[4]
    got = torch.cat([v.flatten() for v in ema.ema_state_dict().values()])
    assert torch.allclose(got, expected)
    assert torch.equal(model.validated[0], w[4] if validate_original else expected)
    assert torch.equal(model.weights(), w[4])  # the trained weights stay in the module


def test_smart_checkpoint_writes_and_removes_ema_copies(tmp_path: Path) -> None:
    ema = EMA(decay=0.9)
    checkpoint = SmartCheckpointCallback(
        dirpath=tmp_path / "ckpt", filename="c-{step}", save_top_k=1, every_n_train_steps=2
    )
    model = Toy()
    trainer(tmp_path, [ema, checkpoint], max_steps=6, limit_val_batches=0).fit(model, loader())
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    # Steps 2 and 4 were written, then removed together with their EMA copies.
    assert names == ["c-step=6-EMA.ckpt", "c-step=6.ckpt"]
    ema_file = torch.load(tmp_path / "ckpt" / "c-step=6-EMA.ckpt", weights_only=False)
    assert "optimizer_states" not in ema_file
    for key, value in ema.ema_state_dict().items():
        assert torch.equal(ema_file["state_dict"][key], value)
    full = torch.load(tmp_path / "ckpt" / "c-step=6.ckpt", weights_only=False)
    assert torch.equal(full["state_dict"]["layer.weight"], model.layer.weight)


def test_speed_monitor_logs_throughput(tmp_path: Path) -> None:
    class Collect(L.pytorch.loggers.Logger):
        name, version = "collect", 0

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, float]] = []

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.rows.append(metrics)

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    logger = Collect()
    trainer(
        tmp_path, [SpeedMonitorCallback(interval=2)], max_steps=6, limit_val_batches=0, logger=logger
    ).fit(Toy(), loader())
    speed = [row for row in logger.rows if "speed/steps_per_sec" in row]
    assert len(speed) == 3
    for row in speed:
        assert row["speed/samples_per_sec"] == pytest.approx(4 * row["speed/steps_per_sec"])
        assert row["speed/frames_per_sec"] == pytest.approx(8 * row["speed/steps_per_sec"])
        assert 0 <= row["speed/data_wait"] < 1 and row["speed/step_time"] > 0
