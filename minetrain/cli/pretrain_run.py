"""A ``minetrain pretrain`` run's directory: its name, resuming from it, and the commands that continue it.

Run dirs are ``outputs/<name>/<run id>`` (``configs/pretrain.yaml``); ``resume=auto`` takes the newest
intact full checkpoint of any run of the same name; a finished run prints the Resume, Evaluate and Export
commands, which must run verbatim when pasted.
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from minetrain.cli.pretrain_config import absolute_file_override, hydra_quote
from minetrain.cli.pretrain_data import dataset_dirs
from minetrain.errors import ConfigError
from minetrain.models.checkpoint import full_checkpoints

CHECKPOINT_DIR = "checkpoints"
WEIGHTS_DIR = "weights"
# A run id every process of one distributed run sees, so that all ranks share one run dir (see README).
RUN_ID_VARIABLES = ("MINETRAIN_RUN_ID", "TORCHELASTIC_RUN_ID")


def run_id() -> str:
    """The run dir's name: the launcher's run id when it gives one (torchrun --rdzv-id, a SLURM job step),
    else the start time, which differs between processes started separately."""
    for name in RUN_ID_VARIABLES:
        value = os.environ.get(name, "")
        if value and value != "none":
            return value
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_STEP_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


if not OmegaConf.has_resolver("minetrain_run_id"):
    OmegaConf.register_new_resolver("minetrain_run_id", run_id, use_cache=True)


def latest_checkpoint(outputs_root: Path) -> Path | None:
    """The newest intact full checkpoint of any earlier run under ``outputs_root`` (one experiment name).

    A newer one whose checksums fail (bit rot, a damaged copy) is named on stderr and passed over.
    """
    from minetrain.offline.checkpoint_io import newest_intact_checkpoint

    def skipped(path: Path, reason: str) -> None:
        print(f"resume=auto: passing over {path}: {reason}", file=sys.stderr)

    candidates = full_checkpoints(outputs_root.glob(f"*/{CHECKPOINT_DIR}/*.ckpt"))
    return newest_intact_checkpoint(candidates, skipped)


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint the run resumes from: ``ckpt_path``, the newest one with ``resume=auto``, or None."""
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


def app_args() -> list[str]:
    """The config name (and a user config dir) this Hydra app was started with."""
    hydra_cfg = HydraConfig.get()
    args = ["--config-name", str(hydra_cfg.job.config_name)]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":
            args += ["--config-dir", str(source.path).removeprefix("file://")]
    return args


def _override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def last_full_checkpoint(run_dir: Path) -> Path | None:
    """``last.ckpt`` of the run, else its newest full checkpoint."""
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if last.is_file():
        return last
    full = full_checkpoints((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    return max(full, key=lambda p: p.stat().st_mtime, default=None)


def next_commands(run_dir: Path, trainer: L.Trainer, cfg: DictConfig) -> dict[str, list[str]]:
    """The commands that continue, evaluate and export this run, as argv lists that work from any directory:
    paths absolute, path values quoted for Hydra, and a finished run extended rather than resumed to a
    no-op."""
    checkpoint = last_full_checkpoint(run_dir)
    if checkpoint is None:
        return {}
    extend: dict[str, int] = {}
    max_steps, max_epochs = cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_epochs", -1)
    if max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps:
        extend["trainer.max_steps"] = 2 * max_steps
    elif max_epochs is not None and max_epochs > 0 and trainer.current_epoch >= max_epochs:
        extend["trainer.max_epochs"] = 2 * max_epochs
    dropped = ("resume", "ckpt_path", "data.dataset_dirs", *extend)
    task = HydraConfig.get().overrides.task
    overrides = [absolute_file_override(o) for o in task if _override_key(o) not in dropped]
    data_dirs = dataset_dirs(cfg)
    if cfg.data.dataset_dirs:
        overrides.append(f"data.dataset_dirs=[{','.join(hydra_quote(d) for d in data_dirs)}]")
    overrides += [f"{key}={value}" for key, value in extend.items()]
    resume = ["minetrain", "pretrain", *app_args(), *overrides, f"ckpt_path={hydra_quote(str(checkpoint))}"]
    return {
        "Resume": resume,
        "Evaluate": ["minetrain", "evaluate", str(checkpoint.parent), *data_dirs],
        "Export": ["minetrain", "export", str(checkpoint), str(run_dir / "export")]
        + (["--ema"] if cfg.ema.enabled else []),
    }


def print_next_commands(console: Console, run_dir: Path, trainer: L.Trainer, cfg: DictConfig) -> None:
    """One ``Label: command`` line per ``next_commands`` entry, printed as is (rich would read "[/data/x]"
    as markup) and unwrapped, so that it pastes."""
    for label, command in next_commands(run_dir, trainer, cfg).items():
        console.print(f"{label + ':':9} {shlex.join(command)}", soft_wrap=True, markup=False, highlight=False)
