"""The ``minetrain`` command: one entry point, one module per command group.

Each command module exposes ``register(subparsers)`` which adds its parser and sets ``func`` (a
callable taking the parsed namespace and returning an exit code). A ``MinetrainError`` raised by a
command is printed as a single ``error:`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from minetrain.errors import MinetrainError

# Modules under minetrain.cli that each register one top-level command.
COMMAND_MODULES: tuple[str, ...] = ("data", "evaluate", "export", "rollout")


def build_parser(commands: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The parser of ``commands`` (all by default; one is enough to run it)."""
    parser = argparse.ArgumentParser(
        prog="minetrain",
        description="Offline pre-training of Minecraft agents (ROCKET-1) by behaviour cloning.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subparsers.add_parser(
        "pretrain", help="train a policy (Hydra app; `minetrain pretrain --help` lists its config)"
    )
    for name in commands:
        importlib.import_module(f"minetrain.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pretrain"]:
        # Hydra owns the command line of the main job: its overrides are not argparse options.
        from minetrain.cli.pretrain import run

        return run(argv[1:])
    # A command named like its module imports only that module (the others import torch and timm:
    # seconds of start-up); any other word gets the full parser, and its help or error.
    named = argv[:1] if argv[:1] and argv[0] in COMMAND_MODULES else COMMAND_MODULES
    args = build_parser(named).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MinetrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
