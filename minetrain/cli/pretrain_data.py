"""The datasets a ``minetrain pretrain`` run reads: ``data.dataset_dirs``, or the demo's synthetic dataset."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from rich.console import Console

from minetrain.errors import ConfigError


def demo_dataset(cfg: DictConfig) -> Path:
    """The synthetic demo dataset, generated once per set of parameters and reused."""
    from minetrain.data.synth import write_synthetic_dataset

    params = {k: cfg.demo_data[k] for k in ("episodes", "frames", "size", "seed")}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(to_absolute_path(cfg.demo_data.cache_dir)) / f"synth-{digest}"
    if not (out / "image").is_dir():
        Console(stderr=True).print(f"Generating the demo dataset in {out} (once) ...", markup=False)
        # Written aside and renamed into place: every rank of a torchrun/SLURM run may get here at once,
        # and an interrupted generation must not be taken for a dataset.
        staging = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        write_synthetic_dataset(staging, **params)
        try:
            os.replace(staging, out)
        except OSError:
            # Another process put its (identical) copy in place first.
            shutil.rmtree(staging, ignore_errors=True)
    return out


def dataset_dirs(cfg: DictConfig) -> list[str]:
    """The run's dataset dirs as absolute paths (the demo dataset when none is given and ``demo`` is set)."""
    raw = cfg.data.dataset_dirs
    dirs = [raw] if isinstance(raw, str) else list(raw or [])
    if not dirs and cfg.demo:
        return [str(demo_dataset(cfg))]
    if not dirs:
        raise ConfigError("data.dataset_dirs is empty: give data.dataset_dirs=[DIR,...] on the command line")
    return [to_absolute_path(str(d)) for d in dirs]
