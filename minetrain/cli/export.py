"""``minetrain export CKPT OUT_DIR [--ema]``: a checkpoint as a ``from_pretrained`` directory.

The directory (``model.safetensors`` + ``config.json``) is built under a temporary name beside
``OUT_DIR`` and renamed into place, so ``OUT_DIR`` is either absent, the previous export, or the
complete new one.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from rich.console import Console

from minetrain.cli.checkpoints import load_checkpoint
from minetrain.errors import CheckpointError, ConfigError
from minetrain.models import RocketPolicy


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a checkpoint's policy as a from_pretrained directory (safetensors + config)",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        metavar="CKPT",
        help="a .ckpt file, a from_pretrained dir or a checkpoints dir",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="directory to create")
    parser.add_argument(
        "--ema", action="store_true", help="export the EMA weights instead of the trained ones"
    )
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists and is not empty")
    parser.set_defaults(func=run)


def export_directory(policy: RocketPolicy, out_dir: Path, force: bool = False) -> Path:
    """Write ``policy.save_pretrained`` output to ``out_dir`` atomically (a rename of a finished dir)."""
    out_dir = out_dir.absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory; choose another OUT_DIR")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ConfigError(f"{out_dir} exists and is not empty; pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    previous = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        policy.save_pretrained(staging)
        if out_dir.exists():
            os.replace(out_dir, previous)
        try:
            os.replace(staging, out_dir)
        except OSError:
            if previous.exists():
                os.replace(previous, out_dir)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
    return out_dir


def run(args: argparse.Namespace) -> int:
    loaded = load_checkpoint(args.checkpoint)
    if args.ema and loaded.ema is None:
        raise CheckpointError(
            f"{loaded.source} has no EMA weights (no ema_state_dict and no -EMA file beside it); "
            "export without --ema"
        )
    policy = loaded.ema if args.ema else loaded.original
    out = export_directory(policy, args.out_dir, force=args.force)
    which = "EMA" if args.ema else "trained"
    console = Console()
    console.print(f"exported the {which} weights of {loaded.source} to {out}", soft_wrap=True)
    console.print(f"load with: RocketPolicy.from_pretrained({str(out)!r})", soft_wrap=True)
    return 0
