"""``minetrain data index-events DIR...``: build or update the event index beside each dataset.

Registered by ``minetrain.cli.data``; ``event_rows`` gives ``minetrain data inspect`` its event lines.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from minetrain.cli.arguments import dataset_command
from minetrain.cli.progress import progress_bar

TOP_EVENTS = 10


def register(data_subparsers: argparse._SubParsersAction) -> None:
    parser = dataset_command(data_subparsers, "index-events", _index_events)
    parser.add_argument("--rebuild", action="store_true", help="index every episode again from scratch")


def _index_events(args: argparse.Namespace) -> int:
    """Index where each event happens (for data_params mode='event').

    Write <DIR>/event_index.npz: for every event name, its occurrences (episode, frame), from the
    meta_info 'events' field and the segmentation interactions. Reruns index only the episodes (or
    modalities) added since; unreadable episodes are listed and retried next time."""
    from minetrain.data.events import index_events

    console = Console(stderr=True)
    failed = 0
    for dataset_dir in args.dirs:
        progress = progress_bar(console)
        with progress:
            task = progress.add_task(f"indexing {dataset_dir}", total=None)
            report = index_events(
                dataset_dir,
                rebuild=args.rebuild,
                on_plan=lambda n, task=task, progress=progress: progress.update(task, total=n),
                on_item=lambda _, task=task, progress=progress: progress.advance(task),
            )
        for name, reason in report.failed:
            print(f"FAILED {name}: {reason}")
        failed += len(report.failed)
        print(
            f"{dataset_dir}: indexed {len(report.indexed)} episode(s) ({report.occurrences:,} occurrences), "
            f"{report.already_indexed} already indexed, {len(report.failed)} failed; "
            f"{report.events} event names in {report.path.name}"
        )
    return 1 if failed else 0


def events_by_dir(dirs: Sequence[Path]) -> dict[str, dict[str, int] | None]:
    """Occurrences per event name of each dir (None for a dir without an index)."""
    from minetrain.data.events import event_counts

    return {str(d): event_counts(d) for d in dirs}


def event_rows(dirs: Sequence[Path]) -> list[tuple[str, str]]:
    """Table rows for ``minetrain data inspect``: the most frequent events over all dirs."""
    from minetrain.data.events import BUILD_COMMAND

    per_dir = events_by_dir(dirs)
    unindexed = [d for d, counts in per_dir.items() if counts is None]
    totals: dict[str, int] = {}
    for counts in per_dir.values():
        for name, n in (counts or {}).items():
            totals[name] = totals.get(name, 0) + n
    rows = []
    if totals:
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        rows.append(("events", f"{len(totals)} names, {sum(totals.values()):,} occurrences"))
        width = len(f"{ranked[0][1]:,}")
        rows.extend(("", f"{n:>{width},}  {name}") for name, n in ranked[:TOP_EVENTS])
        if len(ranked) > TOP_EVENTS:
            rows.append(("", f"... {len(ranked) - TOP_EVENTS} more"))
    if unindexed:
        rows.append(("events", f"not indexed in {', '.join(unindexed)} (run `{BUILD_COMMAND} DIR`)"))
    return rows
