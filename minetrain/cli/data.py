"""``minetrain data ...``: build, convert, inspect, verify and look at trajectory datasets.

Batch commands (``verify``, ``convert``) report every bad item and carry on, then exit 1 if any
item failed; a bad argument or an unreadable dataset is one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from minetrain.cli import data_episodes, data_events, data_sample
from minetrain.cli.arguments import count, frame_size, int_at_least, non_negative
from minetrain.cli.progress import progress_bar
from minetrain.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="create, convert, inspect and verify datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    synth = sub.add_parser("synth", help="write a deterministic synthetic dataset (all modalities)")
    synth.add_argument("out", type=Path, help="output dataset dir")
    synth.add_argument("--episodes", type=count, default=8)
    synth.add_argument("--frames", type=count, default=300, help="mean frames per episode (+-25%%)")
    synth.add_argument(
        "--size", type=int_at_least(16), default=64, help="frame side in pixels, >= 16 (square frames)"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--chunk-size", type=count, default=32)
    synth.set_defaults(func=_synth)

    inspect = sub.add_parser(
        "inspect",
        help="summarise one or more dataset dirs",
        description=(
            "Summarise from the parts' bookkeeping keys and the first image chunk of each part (for "
            "resolutions): seconds even at the published 160 M frames. --interactions also reads every "
            "segmentation chunk to count interaction types (minutes at that scale; use --jobs)."
        ),
    )
    inspect.add_argument("dirs", nargs="+", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.add_argument(
        "--interactions", action="store_true", help="count interaction types from every segmentation chunk"
    )
    inspect.add_argument("--jobs", type=count, default=1, help="worker processes for --interactions")
    inspect.set_defaults(func=_inspect)

    verify = sub.add_parser("verify", help="decode every chunk; exit 1 if any is missing or corrupt")
    verify.add_argument("dirs", nargs="+", type=Path)
    verify.add_argument("--jobs", type=count, default=1, help="worker processes")
    verify.add_argument(
        "--require",
        action="append",
        default=[],
        choices=("segmentation", "meta_info"),
        help="a missing folder of this modality is an error, not a warning (repeatable)",
    )
    verify.set_defaults(func=_verify)

    view = sub.add_parser("view", help="render an episode with masks, interaction types and actions")
    view.add_argument("dir", type=Path)
    view.add_argument("--episode", required=True)
    view.add_argument("--start", type=non_negative, default=0)
    view.add_argument("--frames", type=count, default=16)
    view.add_argument("--out", type=Path, required=True, help="a .png (grid) or .mp4 (clip)")
    view.add_argument("--columns", type=count, default=4, help="grid columns (png)")
    view.set_defaults(func=_view)

    convert = sub.add_parser("convert", help="convert raw recordings or annotations into the store")
    conv_sub = convert.add_subparsers(dest="convert_command", metavar="SOURCE", required=True)
    vpt = conv_sub.add_parser(
        "vpt",
        help="OpenAI VPT contractor recordings (<name>.mp4 + <name>.jsonl)",
        description=(
            "Convert VPT contractor recordings with VPT's published rules (key bindings, camera "
            "360/2400 deg per mouse unit, attack-stuck fix, hotbar changes, cursor drawn while a GUI is "
            "open, ESC with a GUI open = inventory). Every frame is kept by default: the store must stay "
            "frame-aligned with the video for memory-based policies and for the segmentation "
            "annotations; --skip-null-actions drops no-op frames as VPT's training loader did. Broken "
            "recordings are skipped and listed with the reason; reruns skip episodes already stored."
        ),
    )
    vpt.add_argument(
        "src", type=Path, help="dir with <name>.mp4 and <name>.jsonl pairs (searched recursively)"
    )
    vpt.add_argument("out", type=Path, help="output dataset dir (created or extended)")
    vpt.add_argument("--size", type=frame_size, default=(224, 224), help="frame size S or WxH (default 224)")
    vpt.add_argument("--jobs", type=count, default=max(1, min(4, os.cpu_count() or 1)))
    vpt.add_argument("--chunk-size", type=count, default=32)
    vpt.add_argument(
        "--crf", type=int, default=23, help="H.264 quality of the stored chunks (lower = better)"
    )
    vpt.add_argument(
        "--skip-null-actions", action="store_true", help="drop frames with no button and no camera move"
    )
    vpt.set_defaults(func=_convert_vpt)

    segments = conv_sub.add_parser(
        "segments",
        help="attach per-episode interaction annotations as the segmentation modality",
        description="Read <episode>.json annotation files (format: minetrain.data.convert.segments).",
    )
    segments.add_argument("seg_dir", type=Path, help="dir with one <episode>.json per episode")
    segments.add_argument("dataset", type=Path, help="dataset dir whose episodes get the annotations")
    segments.set_defaults(func=_convert_segments)

    data_episodes.register(sub)
    data_events.register(sub)
    data_sample.register(sub)


def _synth(args: argparse.Namespace) -> int:
    from minetrain.data.synth import episode_lengths, write_synthetic_episodes

    if args.size < 16:
        raise ConfigError(f"--size must be >= 16 so the button lamps stay visible, got {args.size}")
    lengths = episode_lengths(args.episodes, args.frames, args.seed)
    written, skipped = write_synthetic_episodes(
        args.out, lengths, size=args.size, seed=args.seed, chunk_size=args.chunk_size
    )
    size = f"{args.size}x{args.size}"
    line = f"wrote {len(written)} episodes, {sum(written.values())} frames at {size} to {args.out}"
    if skipped:
        line += f"; skipped {len(skipped)} already stored"
    print(line)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from minetrain.data.summary import summarise

    if args.jobs > 1 and not args.interactions:
        raise ConfigError(
            "--jobs only speeds up --interactions (the default reads no chunks); add --interactions"
        )
    with progress_bar(Console(stderr=True)) as progress:
        task = progress.add_task("reading segmentation", total=None, visible=args.interactions)
        summary = summarise(
            args.dirs,
            interactions=args.interactions,
            jobs=args.jobs,
            on_plan=lambda n: progress.update(task, total=n),
            on_episode=lambda: progress.advance(task),
        )
    if args.json:
        events = data_events.events_by_dir(args.dirs)
        print(json.dumps({**dataclasses.asdict(summary), "events": events}, indent=2))
        return 0
    console = Console()
    table = Table(title=", ".join(summary.dirs), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    sizes = ", ".join(f"{size} ({n} parts)" for size, n in summary.resolutions.items())
    resolution = f"{sizes}; read from the first episode of each part" if sizes else "-"
    rows = [
        ("usable episodes", f"{summary.episodes}"),
        ("usable frames", f"{summary.frames:,}"),
        ("hours at 20 fps", f"{summary.hours:.3f}"),
        ("resolution (WxH)", resolution),
        ("chunk size", ", ".join(map(str, summary.chunk_sizes))),
        ("modalities", ", ".join(summary.modalities)),
    ]
    for modality in summary.modalities:
        missing = summary.missing[modality]
        counts = summary.episodes_per_modality[modality], summary.frames_per_modality[modality]
        detail = f"{counts[0]} episodes, {counts[1]:,} frames"
        if missing:
            detail += (
                f"; missing {len(missing)}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        rows.append((f"  {modality}", detail))
    if summary.interaction_frames:
        hist = ", ".join(
            f"{name} {summary.interactions.get(name, 0)} ({n:,} frames)"
            for name, n in summary.interaction_frames.items()
        )
        rows.append(("interactions", hist))
    if summary.length_mismatches:
        rows.append(
            (
                "length mismatches",
                f"{len(summary.length_mismatches)} episodes (training uses the shortest modality)",
            )
        )
        for name, lengths in summary.length_mismatches.items():
            rows.append(("", f"{name}: " + ", ".join(f"{m} {n}" for m, n in lengths.items())))
    if summary.unreadable_chunks:
        rows.append(("unreadable chunks", f"{summary.unreadable_chunks} (run `minetrain data verify`)"))
    rows.extend(data_events.event_rows(args.dirs))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from minetrain.data.verify import verify_datasets

    console = Console(stderr=True)
    with progress_bar(console) as progress:
        task = progress.add_task("verifying", total=None)
        report = verify_datasets(
            args.dirs,
            jobs=args.jobs,
            on_plan=lambda n: progress.update(task, total=n),
            on_episode=lambda: progress.advance(task),
            require=args.require,
        )
    for warning in report.warnings:
        print(f"WARN {warning}")
    for problem in report.problems:
        print(f"BAD {problem.line()}")
    status = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
    print(f"verified {report.chunks} chunks of {report.episodes} episodes in {report.parts} parts: {status}")
    return 0 if report.ok else 1


def _view(args: argparse.Namespace) -> int:
    from minetrain.data.view import render_episode

    suffix = args.out.suffix.lower()
    if suffix not in (".png", ".mp4"):
        raise ConfigError(f"--out must end in .png (grid) or .mp4 (clip), got {args.out}")
    path = render_episode(args.dir, args.episode, args.start, args.frames, args.out, columns=args.columns)
    print(f"wrote {path}")
    return 0


def _run_batch(console: Console, description: str, runner: Callable) -> object:
    with progress_bar(console) as progress:
        task = progress.add_task(description, total=None)
        return runner(
            on_plan=lambda n: progress.update(task, total=n),
            on_item=lambda name: progress.update(task, advance=1, description=f"{description} {name}"),
        )


def _print_conversion(report: object) -> int:
    for name, reason in report.failed:
        print(f"SKIPPED {name}: {reason}")
    print(
        f"converted {len(report.converted)} episodes ({report.frames:,} frames), "
        f"{len(report.already_stored)} already stored, {len(report.failed)} skipped as broken"
    )
    return 1 if report.failed else 0


def _convert_vpt(args: argparse.Namespace) -> int:
    from minetrain.data.convert.vpt import VptOptions, convert_vpt

    options = VptOptions(
        size=args.size, chunk_size=args.chunk_size, crf=args.crf, skip_null_actions=args.skip_null_actions
    )
    console = Console(stderr=True)
    report = _run_batch(
        console,
        "converting",
        lambda **callbacks: convert_vpt(args.src, args.out, options, jobs=args.jobs, **callbacks),
    )
    return _print_conversion(report)


def _convert_segments(args: argparse.Namespace) -> int:
    from minetrain.data.convert.segments import attach_segments

    console = Console(stderr=True)
    report = _run_batch(
        console, "attaching", lambda **callbacks: attach_segments(args.seg_dir, args.dataset, **callbacks)
    )
    return _print_conversion(report)
