"""The CLI's argument types, one per meaning, so every command agrees on what it accepts.

- ``count``: how many of something (episodes, frames, workers that must exist, batch size): >= 1.
- ``non_negative``: a position or an optional amount (first frame, epoch, worker processes): >= 0.
- ``frame_size``: ``S`` or ``WxH`` in pixels, each side >= 1 (the loader resizes to and the store
  encodes any such size; a policy's own limit is checked by the policy).
- ``device``: a torch device that exists here.

``dataset_command`` adds a ``minetrain data`` subcommand over dataset dirs, the positional every such
command takes the same way, documented by the docstring of the function that runs it.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


count = int_at_least(1)
non_negative = int_at_least(0)


def frame_size(text: str) -> tuple[int, int]:
    """``S`` or ``WxH`` -> (width, height)."""
    try:
        width, _, height = text.lower().partition("x")
        size = (int(width), int(height or width))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected S or WxH, got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"each side must be >= 1 pixel, got {text!r}")
    return size


def device(text: str) -> str:
    import torch  # only the commands that take a device need it; ``minetrain data`` does not

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available here; use cpu")
    return text


def dataset_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` over one or more dataset dirs (``args.dirs``), run by ``run``,
    whose docstring's first line is the command's one-line help and the rest its description."""
    summary, _, details = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    # A docstring's sentence, in the style of the other commands' help: lower case, no full stop.
    one_line = summary[:1].lower() + summary[1:].removesuffix(".")
    parser = subparsers.add_parser(name, help=one_line, description=details or summary)
    parser.add_argument("dirs", nargs="+", type=Path, help="dataset dirs")
    parser.set_defaults(func=run)
    return parser
