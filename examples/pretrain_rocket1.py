"""The seed tutorial "Pre-Training ROCKET-1 from Scratch", with `minestudio` replaced by `minetrain`.

Run it as the tutorial does (8 GPUs, the contractor datasets), or small on CPU:
    python examples/pretrain_rocket1.py dataset_dirs=[/path/to/data] devices=1 precision=32 ...
The inline values of the tutorial live in pretrain_rocket1.yaml beside this file.
"""

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger

from minetrain.data import MineDataModule
from minetrain.models import RocketPolicy
from minetrain.offline import MineLightning
from minetrain.offline.lightning_callbacks import EMA, SmartCheckpointCallback, SpeedMonitorCallback
from minetrain.offline.mine_callbacks import BehaviorCloneCallback
from minetrain.offline.utils import convert_to_normal


@hydra.main(config_path=".", config_name="pretrain_rocket1", version_base=None)
def main(args):
    rocket_policy = RocketPolicy(
        backbone=args.model.backbone,
        hiddim=args.model.hiddim,
        num_heads=args.model.num_heads,
        num_layers=args.model.num_layers,
        timesteps=args.model.timesteps,
        mem_len=args.model.mem_len,
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

    episode_continuous_batch = args.episode_continuous_batch
    mine_data = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=list(args.dataset_dirs),
            frame_width=args.frame_size,
            frame_height=args.frame_size,
            win_len=args.win_len,
            enable_segment=True,
        ),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        prefetch_factor=args.prefetch_factor,
        split_ratio=0.95,
        shuffle_episodes=True,
        episode_continuous_batch=episode_continuous_batch,
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
        logger=WandbLogger(project=args.wandb_project, offline=True),
        devices=args.devices,
        precision=args.precision,
        strategy="ddp_find_unused_parameters_true",
        use_distributed_sampler=not episode_continuous_batch,
        callbacks=callbacks,
        gradient_clip_val=1.0,
        max_steps=args.max_steps,
    ).fit(
        model=mine_lightning,
        datamodule=mine_data,
        ckpt_path=args.ckpt_path,
    )


if __name__ == "__main__":
    main()
