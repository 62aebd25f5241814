"""``minetrain pretrain [hydra overrides]``: the main job, a Hydra app around the seed's training block.

With no arguments it runs the embedded demo (``configs/pretrain.yaml``): a cached synthetic dataset, a
tiny RocketPolicy on CPU. ``--config-name rocket1`` is the seed tutorial's configuration,
``--config-name vpt`` / ``vpt_event`` MineStudio's VPT fine-tuning tutorial's; ``model.name`` picks the
policy from the registry (``minetrain.models.registry``). Everything
under ``trainer`` goes to ``lightning.Trainer`` as is, so devices, nodes, precision and strategy use
Lightning's own launchers (SLURM, torchrun, or its local DDP spawner).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.utils import get_original_cwd
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.strategies.launchers import subprocess_script
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from minetrain.cli.pretrain_config import (
    MODEL_COMPILE,
    check_config,
    hydra_error,
    hydra_quote,
    model_arguments,
    prepare_overrides,
)
from minetrain.cli.pretrain_data import dataset_dirs
from minetrain.cli.pretrain_run import (
    CHECKPOINT_DIR,
    WEIGHTS_DIR,
    app_args,
    print_next_commands,
    resolve_ckpt_path,
)
from minetrain.errors import ConfigError, MinetrainError
from minetrain.offline.utils import convert_to_normal

# The Trainer arguments minetrain sets itself (not from trainer.*).
TRAINER_OWN = ("logger", "callbacks", "default_root_dir", "use_distributed_sampler")


def build_logger(cfg: DictConfig, run_dir: Path) -> Any:
    kind = str(cfg.logger)
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
    """The train loss averaged over the first and the last steps, and the first and last val losses.

    Train losses are kept as they come (device tensors on a GPU) and read only for the summary: reading
    one after each step would wait for the device to finish that step."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self.train_first: list[Any] = []
        self.train_last: deque[Any] = deque(maxlen=window)
        self.val: list[float] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"].detach()
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
                    sum(map(float, self.train_first)) / n,
                    sum(map(float, self.train_last)) / len(self.train_last),
                )
            )
        if self.val:
            rows.append(("val loss", self.val[0], self.val[-1]))
        return rows


def ema_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The EMA callback's arguments: the ``ema`` section without its ``enabled`` switch."""
    return {key: value for key, value in cfg.ema.items() if key != "enabled"}


def resumed_policy(name: str, kwargs: dict[str, Any], ckpt_path: str) -> Any:
    """The policy a run resumed from ``ckpt_path`` trains, for a class built through a ``from_config`` hook
    (files to initialise from, e.g. VPT's ``model_path`` / ``weights_path``): constructed from the
    architecture the checkpoint records, the command's constructor arguments (e.g. ``checkpoint_cnn``)
    winning, since Lightning restores the weights anyway; those files are not read again. Other classes
    are built from the config as on a fresh start."""
    import inspect

    from minetrain.models import build_policy, policy_class
    from minetrain.models.checkpoint import checkpoint_kwargs
    from minetrain.models.loading import read_checkpoint_dict, recorded_policy

    cls = policy_class(name)
    hyper = read_checkpoint_dict(Path(ckpt_path)).get("hyper_parameters")
    recorded, config = recorded_policy(hyper) if isinstance(hyper, dict) else (None, None)
    if not hasattr(cls, "from_config") or config is None:
        return build_policy(name, **kwargs)
    if recorded not in (None, name):
        raise ConfigError(f"ckpt_path {ckpt_path} holds a {recorded!r} policy, not model.name={name}")
    own = set(inspect.signature(cls.__init__).parameters)
    arguments = checkpoint_kwargs(cls, {}, config, ckpt_path)
    arguments.update({key: value for key, value in kwargs.items() if key in own})
    try:
        return cls(**arguments)
    except TypeError as exc:
        raise ConfigError(f"cannot build {cls.__name__} from {ckpt_path}: {exc}") from None


def build_training(
    cfg: DictConfig, run_dir: Path, ckpt_path: str | None = None
) -> tuple[Any, Any, list[Callback], LossSummary]:
    """The seed tutorial's objects, from the config (the policy's architecture from ``ckpt_path`` when
    resuming, see ``resumed_policy``)."""
    from minetrain.data import MineDataModule
    from minetrain.data.datamodule import LOADER_PARAMS
    from minetrain.models import build_policy
    from minetrain.models.compiled import DEFAULT_BACKEND, compile_policy
    from minetrain.offline import MineLightning
    from minetrain.offline.lightning_callbacks import (
        EMA,
        SmartCheckpointCallback,
        SparseMetricsProgressBar,
        SpeedMonitorCallback,
    )
    from minetrain.offline.mine_callbacks import BehaviorCloneCallback

    timesteps = cfg.model.get("timesteps")
    if timesteps is not None and cfg.data.win_len != timesteps:
        raise ConfigError(f"data.win_len={cfg.data.win_len} must equal model.timesteps={timesteps}")
    name, kwargs = model_arguments(cfg)
    backend = kwargs.pop(MODEL_COMPILE, False)
    policy = resumed_policy(name, kwargs, ckpt_path) if ckpt_path else build_policy(name, **kwargs)
    image_size = policy.config.get("img_shape", [cfg.data.frame_height, cfg.data.frame_width])[:2]
    if list(image_size) != [cfg.data.frame_height, cfg.data.frame_width]:
        raise ConfigError(
            f"the {name} policy takes {image_size[0]}x{image_size[1]} frames (its img_shape) but "
            f"data.frame_height={cfg.data.frame_height} data.frame_width={cfg.data.frame_width}; "
            f"set data.frame_height={image_size[0]} data.frame_width={image_size[1]}"
        )
    if backend:
        compile_policy(policy, DEFAULT_BACKEND if backend is True else backend)
    module = MineLightning(
        mine_policy=policy,
        callbacks=[BehaviorCloneCallback(weight=cfg.objective_weight, reduction=cfg.objective_reduction)],
        hyperparameters=convert_to_normal(cfg),
        **cfg.optim,
    )
    loader_keys = LOADER_PARAMS
    data_params = {k: v for k, v in convert_to_normal(cfg.data).items() if k not in loader_keys}
    data_params["dataset_dirs"] = dataset_dirs(cfg)
    datamodule = MineDataModule(data_params=data_params, **{k: cfg.data[k] for k in loader_keys})
    summary = LossSummary()
    # The learning-rate monitor logs to the logger; without one Lightning refuses it.
    lr_monitor = [LearningRateMonitor(logging_interval="step")] if cfg.logger != "none" else []
    callbacks: list[Callback] = [
        *lr_monitor,
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
        *([EMA(**ema_arguments(cfg))] if cfg.ema.enabled else []),
        SparseMetricsProgressBar(metrics_every=cfg.optim.log_freq),
        summary,
    ]
    return module, datamodule, callbacks, summary


def print_summary(run_dir: Path, summary: LossSummary, trainer: L.Trainer, cfg: DictConfig) -> None:
    console = Console()
    table = Table(title=escape(f"minetrain pretrain: {cfg.name} finished at step {trainer.global_step}"))
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    for name, start, end in summary.rows():
        table.add_row(name, f"{start:.4f}", f"{end:.4f}")
    console.print(table)
    # Paths are printed as they are: rich would read "[/data/x]" as markup.
    files = sorted(p for p in run_dir.rglob("*") if p.suffix in (".ckpt", ".safetensors") and p.is_file())
    for path in files:
        console.print(f"  wrote {path}", soft_wrap=True, markup=False, highlight=False)
    print_next_commands(console, run_dir, trainer, cfg)


def ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """What Lightning runs for local ranks 1..N-1: this app, with the same config and overrides and the same
    run dir, as ``python -m minetrain.cli.pretrain`` (Lightning would re-run ``sys.argv``, which the
    ``minetrain`` console script does not reproduce)."""
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "minetrain.cli.pretrain", *app_args(), *hydra_cfg.overrides.task]
    command += [
        f"hydra.run.dir={hydra_quote(str(hydra_cfg.runtime.output_dir))}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


@contextmanager
def children_run_this_app() -> Iterator[None]:
    """Make Lightning's local DDP launcher start ranks with ``ddp_child_command``."""
    saved = subprocess_script._hydra_subprocess_cmd
    subprocess_script._hydra_subprocess_cmd = ddp_child_command
    try:
        yield
    finally:
        subprocess_script._hydra_subprocess_cmd = saved


def train(cfg: DictConfig) -> L.Trainer:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    check_config(cfg, TRAINER_OWN)
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg, run_dir)
    module, datamodule, callbacks, summary = build_training(cfg, run_dir, ckpt_path)
    trainer_kwargs = convert_to_normal(cfg.trainer)
    try:
        trainer = L.Trainer(
            logger=build_logger(cfg, run_dir),
            callbacks=callbacks,
            use_distributed_sampler=not cfg.data.episode_continuous_batch,
            default_root_dir=str(run_dir),
            **trainer_kwargs,
        )
    except (MisconfigurationException, ValueError, TypeError) as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"lightning.Trainer rejects the trainer.* settings: {reason}") from None
    with children_run_this_app():
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


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def silence_library_notices() -> None:
    """Drop what Lightning prints on every run that a minetrain user cannot act on: its advertising tips
    and torch's deprecation of ``LeafSpec``, which Lightning's own code uses."""
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.",
    )
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTips) for f in log.filters):
            log.addFilter(_DropLightningTips())


def run(argv: Sequence[str]) -> int:
    """Run the Hydra app with ``argv`` as its overrides and return its exit code.

    Hydra prints its own errors over several lines; with ``HYDRA_FULL_ERROR`` set it raises them instead,
    and they are printed here as one line (unless the user set ``HYDRA_FULL_ERROR`` to debug)."""
    try:
        overrides = prepare_overrides(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0" and "hydra.output_subdir=null" not in overrides:
        # Another rank of an externally launched run writes the run dir's .hydra/ files.
        overrides.append("hydra.output_subdir=null")
    silence_library_notices()
    saved_argv, user_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["minetrain pretrain", *overrides]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _hydra_entry()
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except (HydraException, OmegaConfBaseException) as err:
        if user_full_error:
            raise
        print(f"error: {hydra_error(err)}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
        if user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    return 0


if __name__ == "__main__":
    # `python -m minetrain.cli.pretrain OVERRIDES`: how DDP ranks and torchrun start this app, as
    # `minetrain pretrain` does: from the imported module, not from this second copy named __main__.
    from minetrain.cli.pretrain import run as run_imported

    sys.exit(run_imported(sys.argv[1:]))
