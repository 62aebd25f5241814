"""``minetrain pretrain [hydra overrides]``: the main job, a Hydra app around the seed's training block.

With no arguments it runs the embedded demo (``configs/pretrain.yaml``): a cached synthetic dataset, a
tiny RocketPolicy on CPU. ``--config-name rocket1`` is the seed tutorial's configuration. Everything
under ``trainer`` goes to ``lightning.Trainer`` as is, so devices, nodes, precision and strategy use
Lightning's own launchers (SLURM, torchrun, or its local DDP spawner).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, RichProgressBar
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from minetrain.errors import ConfigError, MinetrainError
from minetrain.offline.lightning_callbacks.smart_checkpoint import EMA_SUFFIX
from minetrain.offline.utils import convert_to_normal

LOGGERS = ("csv", "tensorboard", "wandb", "none")
CHECKPOINT_DIR = "checkpoints"
WEIGHTS_DIR = "weights"


def demo_dataset(cfg: DictConfig) -> Path:
    """The synthetic demo dataset, generated once per set of parameters and reused."""
    from minetrain.data.synth import write_synthetic_dataset

    params = {k: cfg.demo_data[k] for k in ("episodes", "frames", "size", "seed")}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(to_absolute_path(cfg.demo_data.cache_dir)) / f"synth-{digest}"
    if not (out / "image").is_dir():
        Console(stderr=True).print(f"Generating the demo dataset in {out} (once) ...")
        write_synthetic_dataset(out, **params)
    return out


def dataset_dirs(cfg: DictConfig) -> list[str]:
    dirs = list(cfg.data.dataset_dirs or [])
    if not dirs and cfg.demo:
        return [str(demo_dataset(cfg))]
    if not dirs:
        raise ConfigError("data.dataset_dirs is empty: give data.dataset_dirs=[DIR,...] on the command line")
    return [to_absolute_path(str(d)) for d in dirs]


def latest_checkpoint(outputs_root: Path) -> Path | None:
    """The newest intact full checkpoint of any earlier run under ``outputs_root`` (one experiment name).

    A newer one whose checksums fail (bit rot, a damaged copy) is named on stderr and passed over.
    """
    from minetrain.offline.checkpoint_io import newest_intact_checkpoint

    def skipped(path: Path, reason: str) -> None:
        print(f"resume=auto: passing over {path}: {reason}", file=sys.stderr)

    candidates = [
        p
        for p in outputs_root.glob(f"*/{CHECKPOINT_DIR}/*.ckpt")
        if p.is_file() and not p.stem.endswith(EMA_SUFFIX)
    ]
    return newest_intact_checkpoint(candidates, skipped)


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    if cfg.ckpt_path and cfg.resume:
        raise ConfigError("set either ckpt_path=... or resume=auto, not both")
    if cfg.ckpt_path:
        path = Path(to_absolute_path(str(cfg.ckpt_path)))
        if not path.is_file():
            raise ConfigError(f"ckpt_path {path} does not exist; give a full checkpoint (.ckpt) file")
        return str(path)
    if cfg.resume is None:
        return None
    if cfg.resume != "auto":
        raise ConfigError(f"resume={cfg.resume!r} is not understood; use resume=auto or ckpt_path=FILE")
    found = latest_checkpoint(run_dir.parent)
    if found is None:
        Console(stderr=True).print(
            f"resume=auto: no intact checkpoint under {run_dir.parent}, starting fresh"
        )
        return None
    return str(found)


def build_logger(cfg: DictConfig, run_dir: Path) -> Any:
    kind = str(cfg.logger)
    if kind not in LOGGERS:
        raise ConfigError(f"logger={kind!r} is not one of {', '.join(LOGGERS)}")
    if kind == "none":
        return False
    if kind == "csv":
        return L.pytorch.loggers.CSVLogger(run_dir, name="logs")
    if kind == "tensorboard":
        return L.pytorch.loggers.TensorBoardLogger(run_dir, name="logs")
    # wandb: offline unless the user has set WANDB_MODE (or logged in and set it to online).
    os.environ.setdefault("WANDB_MODE", "offline")
    return L.pytorch.loggers.WandbLogger(project="minetrain", name=cfg.name, save_dir=str(run_dir))


class LossSummary(Callback):
    """The train loss averaged over the first and the last steps, and the first and last val losses."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self.train_first: list[float] = []
        self.train_last: deque[float] = deque(maxlen=window)
        self.val: list[float] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = float(outputs["loss"])
        if len(self.train_first) < self.window:
            self.train_first.append(loss)
        self.train_last.append(loss)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            self.val.append(float(trainer.callback_metrics["val/loss"]))

    def rows(self) -> list[tuple[str, float, float]]:
        rows = []
        if self.train_first:
            n = len(self.train_first)
            rows.append(
                (
                    f"train loss (mean of {n} steps)",
                    sum(self.train_first) / n,
                    sum(self.train_last) / len(self.train_last),
                )
            )
        if self.val:
            rows.append(("val loss", self.val[0], self.val[-1]))
        return rows


def build_training(cfg: DictConfig, run_dir: Path) -> tuple[Any, Any, list[Callback], LossSummary]:
    """The seed tutorial's objects, from the config."""
    from minetrain.data import MineDataModule
    from minetrain.models import RocketPolicy
    from minetrain.offline import MineLightning
    from minetrain.offline.lightning_callbacks import EMA, SmartCheckpointCallback, SpeedMonitorCallback
    from minetrain.offline.mine_callbacks import BehaviorCloneCallback

    if cfg.data.win_len != cfg.model.timesteps:
        raise ConfigError(f"data.win_len={cfg.data.win_len} must equal model.timesteps={cfg.model.timesteps}")
    policy = RocketPolicy(**cfg.model)
    module = MineLightning(
        mine_policy=policy,
        callbacks=[BehaviorCloneCallback(weight=cfg.objective_weight)],
        hyperparameters=convert_to_normal(cfg),
        **cfg.optim,
    )
    loader_keys = (
        "batch_size",
        "num_workers",
        "prefetch_factor",
        "split_ratio",
        "shuffle_episodes",
        "episode_continuous_batch",
    )
    data_params = {k: v for k, v in convert_to_normal(cfg.data).items() if k not in loader_keys}
    data_params["dataset_dirs"] = dataset_dirs(cfg)
    datamodule = MineDataModule(data_params=data_params, **{k: cfg.data[k] for k in loader_keys})
    summary = LossSummary()
    callbacks: list[Callback] = [
        LearningRateMonitor(logging_interval="step"),
        SpeedMonitorCallback(),
        SmartCheckpointCallback(
            dirpath=str(run_dir / WEIGHTS_DIR),
            filename="weight-{epoch}-{step}",
            save_top_k=-1,
            every_n_train_steps=cfg.save_freq,
            save_weights_only=True,
        ),
        SmartCheckpointCallback(
            dirpath=str(run_dir / CHECKPOINT_DIR),
            filename="ckpt-{epoch}-{step}",
            save_top_k=1,
            every_n_train_steps=cfg.save_freq + 1,
            save_weights_only=False,
            save_last=True,
        ),
        EMA(**cfg.ema),
        RichProgressBar(),
        summary,
    ]
    return module, datamodule, callbacks, summary


def print_summary(run_dir: Path, summary: LossSummary, trainer: L.Trainer, cfg: DictConfig) -> None:
    console = Console()
    table = Table(title=f"minetrain pretrain: {cfg.name} finished at step {trainer.global_step}")
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    for name, start, end in summary.rows():
        table.add_row(name, f"{start:.4f}", f"{end:.4f}")
    console.print(table)
    files = sorted(p for p in run_dir.rglob("*") if p.suffix in (".ckpt", ".safetensors") and p.is_file())
    for path in files:
        console.print(f"  wrote {path}", soft_wrap=True)
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "ckpt_path="))]
    resume = ["minetrain pretrain", "--config-name", hydra_cfg.job.config_name, *overrides, "resume=auto"]
    console.print(f"Resume:   {' '.join(resume)}", soft_wrap=True)
    console.print(
        f"Evaluate: minetrain evaluate {run_dir / CHECKPOINT_DIR} {' '.join(dataset_dirs(cfg))}",
        soft_wrap=True,
    )


def train(cfg: DictConfig) -> L.Trainer:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg, run_dir)
    module, datamodule, callbacks, summary = build_training(cfg, run_dir)
    trainer_kwargs = convert_to_normal(cfg.trainer)
    trainer = L.Trainer(
        logger=build_logger(cfg, run_dir),
        callbacks=callbacks,
        use_distributed_sampler=not cfg.data.episode_continuous_batch,
        default_root_dir=str(run_dir),
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        print_summary(run_dir, summary, trainer, cfg)
    return trainer


@hydra.main(config_path="../configs", config_name="pretrain", version_base=None)
def _hydra_entry(cfg: DictConfig) -> None:
    # Hydra reports exceptions with a traceback; a user error is one line and exit code 2 instead.
    try:
        train(cfg)
    except MinetrainError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def run(argv: Sequence[str]) -> int:
    """Run the Hydra app with ``argv`` as its overrides and return its exit code."""
    saved = sys.argv
    sys.argv = ["minetrain pretrain", *argv]
    try:
        _hydra_entry()
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    finally:
        sys.argv = saved
    return 0
