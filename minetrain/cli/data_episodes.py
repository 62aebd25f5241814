"""``minetrain data episodes DIR... [--json]``: the names ``data view --episode`` takes, with their lengths.

Registered by ``minetrain.cli.data``. Only bookkeeping is read, so it is quick on any dataset size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from rich.console import Console
from rich.table import Table

from minetrain.cli.arguments import dataset_command


def register(data_subparsers: argparse._SubParsersAction) -> None:
    parser = dataset_command(data_subparsers, "episodes", _episodes)
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _episodes(args: argparse.Namespace) -> int:
    """List episode names with their frame count per modality.

    One row per episode of each DIR: its name (for `data view --episode`), frames per modality ('-'
    where the modality lacks it) and whether training can use it (every modality has it). Lengths that
    disagree between modalities are marked with *; training uses the shortest."""
    from minetrain.data.store import MODALITY_SPECS
    from minetrain.data.summary import episode_rows

    rows = episode_rows(args.dirs)
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
        return 0
    modalities = [m for m in MODALITY_SPECS if any(m in row.lengths for row in rows)]
    table = Table(title=", ".join(map(str, args.dirs)))
    table.add_column("episode", no_wrap=True)
    if len(args.dirs) > 1:
        table.add_column("dataset")
    for modality in modalities:
        table.add_column(modality, justify="right")
    table.add_column("usable")
    for row in rows:
        cells = [row.episode] + ([row.dataset] if len(args.dirs) > 1 else [])
        cells += [str(row.lengths[m]) if m in row.lengths else "-" for m in modalities]
        mismatch = len(set(row.lengths.values())) > 1
        cells.append(("yes" if row.usable else "no") + ("*" if mismatch else ""))
        table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print(f"{len(rows)} episodes, {sum(row.usable for row in rows)} usable")
    if any(len(set(row.lengths.values())) > 1 for row in rows):
        console.print("* modalities disagree on the episode's length; training uses the shortest")
    return 0
