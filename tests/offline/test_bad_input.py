"""Bad input stops training with one clear line, never a silent run or a deep traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from run_training import TINY_POLICY, build

from minetrain.errors import CheckpointError, ConfigError, TrainingError
from minetrain.models import RocketPolicy
from minetrain.offline import MineLightning
from minetrain.offline.lightning_callbacks import EMA
from minetrain.offline.mine_callbacks import BehaviorCloneCallback


def fit(data: Path, out: Path, ckpt_path: str | None = None, **cfg: Any) -> MineLightning:
    module, datamodule, trainer = build(
        {"data": str(data), "out": str(out), "strategy": "auto", "num_workers": 0, "max_steps": 2, **cfg}
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module


def test_missing_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.ckpt does not exist"):
        fit(tiny_dataset, tmp_path, ckpt_path=str(tmp_path / "nope.ckpt"))


def test_unreadable_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"bad\.ckpt cannot be read"):
        fit(tiny_dataset, tmp_path, ckpt_path=str(bad))


def test_checkpoint_of_another_model_and_weights_only_file(tiny_dataset: Path, tmp_path: Path) -> None:
    fit(tiny_dataset, tmp_path / "first", save_freq=2)
    full = next((tmp_path / "first" / "checkpoints").glob("ckpt-*[0-9].ckpt"))
    weights = next((tmp_path / "first" / "weights").glob("weight-*[0-9].ckpt"))
    with pytest.raises(CheckpointError, match="holds weights only"):
        fit(tiny_dataset, tmp_path / "second", ckpt_path=str(weights), max_steps=4)
    # A wider policy (timesteps unchanged) cannot resume from the tiny one's checkpoint.
    module, datamodule, trainer = build(
        {"data": str(tiny_dataset), "out": str(tmp_path / "third"), "strategy": "auto", "num_workers": 0}
    )
    module.mine_policy = RocketPolicy(**{**TINY_POLICY, "hiddim": 64}, timesteps=8)
    with pytest.raises(
        CheckpointError,
        match=r"does not fit MineLightning: .*shape mismatches: mine_policy\..*; resume with a checkpoint",
    ):
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(full))


def test_window_length_must_match_timesteps(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"windows of 8 frames .* timesteps=16; set data_params win_len"):
        fit(tiny_dataset, tmp_path, timesteps=16)


def test_batch_size_problems(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        fit(tiny_dataset, tmp_path, batch_size=0)
    with pytest.raises(ConfigError, match="too few for batch_size 64"):
        fit(tiny_dataset, tmp_path, batch_size=64)


def test_objectives_are_required_and_must_be_objectives() -> None:
    policy = RocketPolicy(**TINY_POLICY, timesteps=8)
    with pytest.raises(ConfigError, match="no objectives"):
        MineLightning(mine_policy=policy, callbacks=[])
    with pytest.raises(ConfigError, match="got EMA; Lightning callbacks"):
        MineLightning(mine_policy=policy, callbacks=[BehaviorCloneCallback(), EMA(0.9)])


class NanAt(BehaviorCloneCallback):
    """BC whose loss turns NaN at one batch index."""

    def __init__(self, batch_idx: int) -> None:
        super().__init__()
        self.bad = batch_idx

    def __call__(self, batch, batch_idx, step_name, latents, mine_policy):  # type: ignore[no-untyped-def]
        out = super().__call__(batch, batch_idx, step_name, latents, mine_policy)
        if step_name == "train" and batch_idx == self.bad:
            out["loss"] = out["loss"] * torch.tensor(float("nan"))
        return out


def test_nan_loss_stops_with_step_and_batch(tiny_dataset: Path, tmp_path: Path) -> None:
    module, datamodule, trainer = build(
        {
            "data": str(tiny_dataset),
            "out": str(tmp_path),
            "strategy": "auto",
            "num_workers": 0,
            "max_steps": 5,
        }
    )
    module.objectives = [NanAt(2)]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(TrainingError, match=r"loss is nan .* global step 2 \(epoch 0, batch 2, episodes \["):
        trainer.fit(module, datamodule=datamodule)
    # Stopped before the NaN reached the weights.
    assert trainer.global_step == 2
    assert all(torch.isfinite(v).all() for v in module.state_dict().values() if v.is_floating_point())
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_bad_hyperparameters() -> None:
    policy = RocketPolicy(**TINY_POLICY, timesteps=8)
    objectives = [BehaviorCloneCallback()]
    for kwargs in ({"learning_rate": 0}, {"warmup_steps": -1}, {"lr_schedule": "step"}, {"log_freq": 0}):
        with pytest.raises(ConfigError):
            MineLightning(mine_policy=policy, callbacks=objectives, **kwargs)
    for kwargs in ({"decay": 1.5}, {"decay": 0.9, "every_n_steps": 0}):
        with pytest.raises(ConfigError):
            EMA(**kwargs)
    with pytest.raises(ConfigError):
        BehaviorCloneCallback(weight=-1)
