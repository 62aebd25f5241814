"""Shared fixtures of the CLI tests: a tiny synthetic dataset, a tiny policy trained for a few steps, and
`minetrain` run in this process."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from minetrain.data.synth import write_synthetic_dataset

TINY_MODEL = dict(backbone="test_efficientnet", hiddim=32, num_heads=2, num_layers=1, timesteps=8, mem_len=8)
TINY_DATA = dict(
    frame_width=32, frame_height=32, win_len=8, split_ratio=0.5, shuffle_episodes=True, enable_segment=True
)


@pytest.fixture(scope="session")
def eval_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 episodes of ~40 frames at 32x32."""
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("eval-data") / "synth", episodes=6, frames=40, size=32
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, eval_dataset: Path) -> Path:
    """A run dir as `minetrain pretrain` leaves it: checkpoints/ (full, with EMA) and weights/, 4 steps."""
    from minetrain.data import MineDataModule
    from minetrain.models import RocketPolicy
    from minetrain.offline import MineLightning
    from minetrain.offline.lightning_callbacks import EMA, SmartCheckpointCallback
    from minetrain.offline.mine_callbacks import BehaviorCloneCallback

    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    module = MineLightning(
        mine_policy=RocketPolicy(**TINY_MODEL),
        callbacks=[BehaviorCloneCallback()],
        hyperparameters={"model": TINY_MODEL, "data": TINY_DATA},
        learning_rate=1e-3,
        warmup_steps=0,
        seed=0,
    )
    data = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(eval_dataset)],
            frame_width=32,
            frame_height=32,
            win_len=8,
            enable_segment=True,
        ),
        batch_size=2,
        split_ratio=TINY_DATA["split_ratio"],
        shuffle_episodes=True,
        episode_continuous_batch=True,
    )
    callbacks = [
        SmartCheckpointCallback(
            dirpath=out / "weights", filename="weight-{epoch}-{step}", save_top_k=-1,
            every_n_train_steps=2, save_weights_only=True,
        ),
        SmartCheckpointCallback(
            dirpath=out / "checkpoints", filename="ckpt-{epoch}-{step}", save_top_k=1,
            every_n_train_steps=2, save_weights_only=False,
        ),
        EMA(decay=0.9, every_n_steps=1),
    ]  # fmt: skip
    trainer = L.Trainer(
        default_root_dir=out,
        logger=False,
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,
        callbacks=callbacks,
        max_steps=4,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    return out


@pytest.fixture(scope="session")
def full_checkpoint(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "ckpt-epoch=0-step=4.ckpt"


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `minetrain ...` in this process (cheaper than a new Python) from ``tmp_path``; Hydra's job
    logging setup is undone afterwards."""
    import logging

    from minetrain.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINETRAIN_CACHE", str(tmp_path / "cache"))
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield main
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
