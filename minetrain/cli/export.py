"""``minetrain export SRC OUT [--format F] [--ema]``: a checkpoint's policy in a form another program loads.

Formats: ``minetrain`` (default) a ``from_pretrained`` directory (``model.safetensors`` +
``config.json``), for any policy; ``minestudio`` a ``.ckpt`` file the reference library's
``load_rocket_policy(OUT)`` loads strictly; ``minestudio-hub`` a directory its
``RocketPolicy.from_pretrained(OUT)`` loads strictly (both ROCKET-1 only).
``OUT`` is built under a temporary name beside it and renamed into place, so it is either absent,
the previous export, or the complete new one.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from minetrain.cli.checkpoints import open_checkpoint
from minetrain.errors import CheckpointError, ConfigError
from minetrain.files import fsync_directory, temp_path
from minetrain.models import Policy
from minetrain.models.rocket_formats import save_reference_checkpoint, save_reference_pretrained

# How to load each format, shown after the export ({out} is the path written).
_LOAD_HINTS = {
    "minetrain": "from minetrain.models import load_policy; load_policy({out!r})",
    "minestudio": "from minestudio.models import load_rocket_policy; load_rocket_policy({out!r})",
    "minestudio-hub": "from minestudio.models import RocketPolicy; RocketPolicy.from_pretrained({out!r})",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a checkpoint's policy for from_pretrained or for MineStudio",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        metavar="SRC",
        help="a .ckpt file, a from_pretrained dir or a checkpoints dir",
    )
    parser.add_argument(
        "out", type=Path, metavar="OUT", help="directory to create (file for --format minestudio)"
    )
    parser.add_argument(
        "--format",
        choices=tuple(_LOAD_HINTS),
        default="minetrain",
        help="minetrain: from_pretrained dir (default); minestudio: .ckpt for MineStudio's "
        "load_rocket_policy; minestudio-hub: dir for MineStudio's RocketPolicy.from_pretrained",
    )
    parser.add_argument(
        "--ema", action="store_true", help="export the EMA weights instead of the trained ones"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace OUT if it exists (a dir: and is not empty)"
    )
    parser.set_defaults(func=run)


# The formats of the reference library, whose loaders build its RocketPolicy only.
ROCKET_ONLY_FORMATS = ("minestudio", "minestudio-hub")


def _save_pretrained(policy: Policy, directory: Path) -> None:
    policy.save_pretrained(directory)


def export_directory(
    policy: Policy,
    out_dir: Path,
    force: bool = False,
    write: Callable[[Policy, Path], None] = _save_pretrained,
) -> Path:
    """Write ``write(policy, dir)`` output to ``out_dir`` atomically (a rename of a finished dir)."""
    out_dir = out_dir.absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory; choose another OUT")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ConfigError(f"{out_dir} exists and is not empty; pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_path(out_dir)
    previous = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(policy, staging)
        if out_dir.exists():
            os.replace(out_dir, previous)
        try:
            os.replace(staging, out_dir)
        except OSError:
            if previous.exists():
                os.replace(previous, out_dir)
            raise
        fsync_directory(out_dir.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
    return out_dir


def export_file(policy: Policy, out: Path, force: bool = False) -> Path:
    """Write ``policy`` as a reference-library ``.ckpt`` at ``out`` (temp file + rename)."""
    out = out.absolute()
    if out.is_dir():
        raise ConfigError(
            f"{out} is a directory; --format minestudio writes a file, e.g. {out / 'model.ckpt'}"
        )
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_reference_checkpoint(policy, out)
    return out


def run(args: argparse.Namespace) -> int:
    loaded = open_checkpoint(args.checkpoint)
    if args.format in ROCKET_ONLY_FORMATS and loaded.policy_name != "rocket":
        raise ConfigError(
            f"{loaded.source} holds a {loaded.policy_name!r} policy; --format {args.format} is for ROCKET-1 "
            "policies only (MineStudio's RocketPolicy loaders); use --format minetrain"
        )
    if args.ema and loaded.ema is None:
        raise CheckpointError(
            f"{loaded.source} has no EMA weights (no ema_state_dict and no -EMA file beside it); "
            "export without --ema"
        )
    policy = loaded.ema if args.ema else loaded.original
    if args.format == "minestudio":
        out = export_file(policy, args.out, force=args.force)
    elif args.format == "minestudio-hub":
        out = export_directory(policy, args.out, force=args.force, write=save_reference_pretrained)
    else:
        out = export_directory(policy, args.out, force=args.force)
    which = "EMA" if args.ema else "trained"
    console = Console()
    console.print(f"exported the {which} weights of {loaded.source} to {out} ({args.format})", soft_wrap=True)
    console.print(f"load with: {_LOAD_HINTS[args.format].format(out=str(out))}", soft_wrap=True)
    return 0
