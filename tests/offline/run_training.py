"""The seed tutorial's training block with a tiny RocketPolicy, runnable in-process or as a script.

As a script (``python run_training.py '<json config>'``) it is the subprocess the resume and DDP
tests launch: it records every training batch (episode and first timestamp per slot) and loss and,
at the end, the final training state, so runs can be compared; ``kill_at_step`` SIGKILLs the process at
the start of that step, i.e. right after the checkpoint written at the end of the previous step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor

from minetrain.data import MineDataModule
from minetrain.models import RocketPolicy
from minetrain.offline import MineLightning
from minetrain.offline.lightning_callbacks import EMA, SmartCheckpointCallback, SpeedMonitorCallback
from minetrain.offline.mine_callbacks import BehaviorCloneCallback
from minetrain.offline.utils import convert_to_normal

TINY_POLICY = dict(backbone="test_efficientnet.r160_in1k", hiddim=32, num_heads=2, num_layers=1, mem_len=8)

DEFAULTS: dict[str, Any] = {
    "data": None,
    "out": None,
    "max_steps": 8,
    "max_epochs": -1,
    "ckpt_path": None,
    "devices": 1,
    "strategy": "ddp_find_unused_parameters_true",
    "precision": "32",
    "save_freq": 4,
    "save_last": False,
    "ckpt_top_k": 1,
    "batch_size": 2,
    "win_len": 8,
    "timesteps": 8,
    "frame_size": 32,
    "num_workers": 1,
    "learning_rate": 1e-3,
    "warmup_steps": 4,
    "val_check_interval": None,
    "limit_val_batches": 2,
    "kill_at_step": None,
    "stop_at_step": None,
    "ema_validate_original": True,
    "seed": 0,
    "on_error": "raise",
}


class BatchRecorder(L.Callback):
    """Appends (global step, episode and first timestamp of each slot) of every training batch to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        row = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "episode": list(batch["episode"]),
            "timestamp": batch["timestamp"][:, 0].tolist(),
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


class LossRecorder(L.Callback):
    """Appends (global step, training loss as an exact hex float) of every training step to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        row = {"step": trainer.global_step - 1, "loss": float(outputs["loss"]).hex()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


class KillAt(L.Callback):
    """SIGKILLs this process when training is about to run ``step`` (its checkpoint is already on disk)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class StopAt(L.Callback):
    """Asks training to stop after ``step`` steps, as ``max_time`` or early stopping do."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


def build(cfg: dict[str, Any]) -> tuple[MineLightning, MineDataModule, L.Trainer]:
    """The seed's objects, with a tiny model, a generated dataset and CPU settings."""
    cfg = {**DEFAULTS, **cfg}
    # Tiny models on a shared 2-core machine: one thread avoids OpenMP contention.
    torch.set_num_threads(1)
    out = Path(cfg["out"])
    L.seed_everything(cfg["seed"], verbose=False)
    rocket_policy = RocketPolicy(**TINY_POLICY, timesteps=cfg["timesteps"])
    mine_lightning = MineLightning(
        mine_policy=rocket_policy,
        log_freq=2,
        learning_rate=cfg["learning_rate"],
        weight_decay=0.001,
        warmup_steps=cfg["warmup_steps"],
        callbacks=[BehaviorCloneCallback(weight=1.0)],
        hyperparameters=convert_to_normal(cfg),
    )
    mine_data = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[cfg["data"]],
            frame_width=cfg["frame_size"],
            frame_height=cfg["frame_size"],
            win_len=cfg["win_len"],
            enable_segment=True,
            on_error=cfg["on_error"],
        ),
        batch_size=cfg["batch_size"],
        num_workers=cfg["num_workers"],
        prefetch_factor=2 if cfg["num_workers"] else None,
        split_ratio=0.75,
        shuffle_episodes=True,
        episode_continuous_batch=True,
    )
    callbacks: list[L.Callback] = []
    if cfg["kill_at_step"] is not None:
        callbacks.append(KillAt(cfg["kill_at_step"]))
    if cfg["stop_at_step"] is not None:
        callbacks.append(StopAt(cfg["stop_at_step"]))
    rank = os.environ.get("LOCAL_RANK", "0")
    callbacks += [
        BatchRecorder(out / f"batches-rank{rank}.jsonl"),
        LossRecorder(out / f"losses-rank{rank}.jsonl"),
        LearningRateMonitor(logging_interval="step"),
        SpeedMonitorCallback(),
        SmartCheckpointCallback(
            dirpath=out / "weights",
            filename="weight-{epoch}-{step}",
            save_top_k=-1,
            every_n_train_steps=cfg["save_freq"],
            save_weights_only=True,
        ),
        SmartCheckpointCallback(
            dirpath=out / "checkpoints",
            filename="ckpt-{epoch}-{step}",
            save_top_k=cfg["ckpt_top_k"],
            every_n_train_steps=cfg["save_freq"],
            save_weights_only=False,
            save_last=cfg["save_last"],
        ),
        EMA(
            decay=0.9,
            validate_original_weights=cfg["ema_validate_original"],
            every_n_steps=2,
            cpu_offload=False,
        ),
    ]
    trainer = L.Trainer(
        default_root_dir=out,
        logger=L.pytorch.loggers.CSVLogger(out / "logs"),
        accelerator="cpu",
        devices=cfg["devices"],
        precision=cfg["precision"],
        strategy=cfg["strategy"],
        use_distributed_sampler=False,
        callbacks=callbacks,
        gradient_clip_val=1.0,
        max_steps=cfg["max_steps"],
        max_epochs=cfg["max_epochs"],
        limit_val_batches=cfg["limit_val_batches"],
        val_check_interval=cfg["val_check_interval"],
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    return mine_lightning, mine_data, trainer


def final_state(module: MineLightning, trainer: L.Trainer) -> dict[str, Any]:
    """What must match between runs: weights, EMA weights, optimizer state, LR and step."""
    ema = next(cb for cb in trainer.callbacks if isinstance(cb, EMA))
    optimizer = trainer.optimizers[0]
    return {
        "params": {k: v.detach().clone() for k, v in module.named_parameters()},
        "buffers": {k: v.detach().clone() for k, v in module.named_buffers()},
        "ema": {k: v.clone() for k, v in ema.ema_state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "lr": [group["lr"] for group in optimizer.param_groups],
        "global_step": trainer.global_step,
    }


def main(cfg: dict[str, Any]) -> None:
    torch.use_deterministic_algorithms(True)
    module, data, trainer = build(cfg)
    trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
    torch.save(final_state(module, trainer), Path(cfg["out"]) / f"final-rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
