"""The seed tutorial's training block, verbatim but for a tiny model, generated data, CPU and a step limit."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from minetrain.data import MineDataModule
from minetrain.models import RocketPolicy
from minetrain.offline import MineLightning
from minetrain.offline.lightning_callbacks import EMA, SmartCheckpointCallback, SpeedMonitorCallback
from minetrain.offline.mine_callbacks import BehaviorCloneCallback
from minetrain.offline.utils import convert_to_normal


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_seed_training_block(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    monkeypatch.chdir(tmp_path)
    args = OmegaConf.create({"objective_weight": 1.0, "save_freq": 3, "episode_continuous_batch": True})
    episode_continuous_batch = args.episode_continuous_batch
    ckpt_path = None

    rocket_policy = RocketPolicy(
        backbone="test_efficientnet.r160_in1k",
        hiddim=32,
        num_heads=2,
        num_layers=1,
        timesteps=8,
        mem_len=8,
    )
    mine_lightning = MineLightning(
        mine_policy=rocket_policy,
        log_freq=20,
        learning_rate=0.00004,
        weight_decay=0.001,
        warmup_steps=2000,
        callbacks=[
            BehaviorCloneCallback(weight=args.objective_weight),
        ],
        hyperparameters=convert_to_normal(args),
    )
    mine_data = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[
                str(tiny_dataset),
            ],
            frame_width=32,
            frame_height=32,
            win_len=8,
            enable_segment=True,
        ),
        batch_size=2,
        num_workers=1,
        prefetch_factor=4,
        split_ratio=0.75,
        shuffle_episodes=True,
        episode_continuous_batch=True,
    )
    callbacks = [
        LearningRateMonitor(logging_interval="step"),
        SpeedMonitorCallback(),
        SmartCheckpointCallback(
            dirpath="./weights",
            filename="weight-{epoch}-{step}",
            save_top_k=-1,
            every_n_train_steps=args.save_freq,
            save_weights_only=True,
        ),
        SmartCheckpointCallback(
            dirpath="./checkpoints",
            filename="ckpt-{epoch}-{step}",
            save_top_k=1,
            every_n_train_steps=args.save_freq + 1,
            save_weights_only=False,
        ),
        EMA(
            decay=0.999,
            validate_original_weights=True,
            every_n_steps=8,
            cpu_offload=False,
        ),
    ]
    L.Trainer(
        logger=CSVLogger("logs"),
        devices=1,
        precision=precision,
        strategy="ddp_find_unused_parameters_true",
        use_distributed_sampler=not episode_continuous_batch,
        callbacks=callbacks,
        gradient_clip_val=1.0,
        accelerator="cpu",
        max_steps=6,
        enable_progress_bar=False,
    ).fit(
        model=mine_lightning,
        datamodule=mine_data,
        ckpt_path=ckpt_path,
    )

    weights = sorted(p.name for p in Path("weights").iterdir())
    assert weights == [f"weight-epoch=0-step={s}{e}.ckpt" for s in (3, 6) for e in ("-EMA", "")]
    assert sorted(p.name for p in Path("checkpoints").iterdir()) == [
        "ckpt-epoch=0-step=4-EMA.ckpt",
        "ckpt-epoch=0-step=4.ckpt",
    ]
    full = torch.load("checkpoints/ckpt-epoch=0-step=4.ckpt", weights_only=False)
    assert full["hyper_parameters"]["objective_weight"] == 1.0
    assert full["hyper_parameters"]["mine_lightning"]["learning_rate"] == 0.00004
    assert "optimizer_states" in full and "ema_state_dict" in full
    # The EMA file holds loadable policy weights (updated once, after step 1 of every 8).
    ema = torch.load("weights/weight-epoch=0-step=6-EMA.ckpt", weights_only=False)["state_dict"]
    policy = {k.removeprefix("mine_policy."): v for k, v in ema.items()}
    RocketPolicy(
        backbone="test_efficientnet.r160_in1k", hiddim=32, num_heads=2, num_layers=1, timesteps=8, mem_len=8
    ).load_state_dict(policy)
    trained = torch.load("weights/weight-epoch=0-step=6.ckpt", weights_only=False)["state_dict"]
    assert not torch.equal(ema["mine_policy.updim.weight"], trained["mine_policy.updim.weight"])
    with open(next(Path("logs").rglob("metrics.csv"))) as handle:
        rows = list(csv.DictReader(handle))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"train/loss", "train/bc/loss", "train/bc/buttons_nll", "train/bc/camera_move_precision"} <= logged
    # The reference's names too.
    assert {"train/camera_loss", "train/button_loss", "train/entropy", "train/bc_weight"} <= logged
