"""``minetrain evaluate CKPT_OR_DIR DATA_DIR...``: offline BC metrics of a checkpoint on recorded episodes.

Runs the original and (when the checkpoint has them) the EMA weights over the validation split
(or every episode) with memory carried across the windows of each episode, then writes
``report.json`` and ``report.png`` and prints a table per weights set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from minetrain.cli.arguments import count, device, frame_size, non_negative
from minetrain.cli.checkpoints import data_settings, open_checkpoint
from minetrain.cli.progress import progress_bar
from minetrain.errors import ConfigError
from minetrain.files import atomic_write_text

# Used when the checkpoint does not record its data settings (reference checkpoints): the seed's.
DATA_DEFAULTS: dict[str, Any] = {
    "frame_width": 224,
    "frame_height": 224,
    "skip_frame": 1,
    "enable_segment": True,
    "split_ratio": 0.8,
    "shuffle_episodes": False,
    "seed": 0,
}
REPORT_NAME = "report.json"
PLOT_NAME = "report.png"
COLUMNS = (
    ("frames", "frames", "{:d}"),
    ("loss", "loss", "{:.2f}"),
    ("buttons_nll", "btn nll", "{:.2f}"),
    ("buttons_acc", "btn acc", "{:.1%}"),
    ("camera_nll", "cam nll", "{:.2f}"),
    ("camera_acc", "cam acc", "{:.1%}"),
    ("camera_move_precision", "move prec", "{:.1%}"),
    ("camera_angle_error_deg", "cam err°", "{:.2f}"),
)
CAPTION = (
    "cam nll/acc: frames whose camera moved; move prec: predicted moves that were real; cam err in degrees"
)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options that override the data settings a checkpoint recorded."""
    parser.add_argument(
        "--frame-size",
        type=frame_size,
        metavar="WxH",
        help="frame size fed to the policy (default: what the checkpoint was trained with, else 224x224; "
        "128x128 for VPT)",
    )
    parser.add_argument(
        "--device",
        type=device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: %(default)s)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="BC loss and action metrics of a checkpoint on recorded episodes (JSON report, plot, table)",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        metavar="CKPT_OR_DIR",
        help="a .ckpt file, a from_pretrained dir, or a run's checkpoints dir (newest checkpoint)",
    )
    parser.add_argument("data_dirs", type=Path, nargs="+", metavar="DATA_DIR", help="dataset dirs")
    parser.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="episodes to evaluate: the validation split training used, or all (default: %(default)s)",
    )
    parser.add_argument("--batches", type=count, help="evaluate at most this many batches")
    parser.add_argument(
        "--batch-size",
        type=count,
        default=4,
        help="episodes evaluated side by side (default: %(default)s)",
    )
    parser.add_argument(
        "--split-ratio", type=float, help="share of episodes in the train split (default: the checkpoint's)"
    )
    parser.add_argument(
        "--workers", type=non_negative, default=0, help="DataLoader worker processes (default: 0)"
    )
    parser.add_argument("--out", type=Path, help="report directory (default: ./eval-<checkpoint name>)")
    add_data_options(parser)
    parser.set_defaults(func=run)


def _dataset(args: argparse.Namespace, settings: dict[str, Any]) -> Any:
    from minetrain.data.dataset import RawDataset

    split_ratio = 1.0 if args.split == "all" else float(settings["split_ratio"])
    if not 0.0 <= split_ratio <= 1.0:
        raise ConfigError(f"--split-ratio {split_ratio} is outside [0, 1]")
    dataset = RawDataset(
        [str(d) for d in args.data_dirs],
        frame_width=int(settings["frame_width"]),
        frame_height=int(settings["frame_height"]),
        win_len=int(settings["win_len"]),
        skip_frame=int(settings["skip_frame"]),
        enable_segment=bool(settings["enable_segment"]),
        condition_dropout=0.0,
        split="train" if args.split == "all" else "val",
        split_ratio=split_ratio,
        shuffle_episodes=bool(settings["shuffle_episodes"]),
        seed=int(settings["seed"]),
    )
    if len(dataset) == 0:
        raise ConfigError(
            f"the {args.split} split of {', '.join(map(str, args.data_dirs))} has no episodes "
            f"(split_ratio={split_ratio}); use --split all or a lower --split-ratio"
        )
    return dataset


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def _table(name: str, results: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=f"{name} weights", caption=CAPTION)
    table.add_column("interaction", no_wrap=True)
    for _, title, _ in COLUMNS:
        table.add_column(title, justify="right")
    for group, metrics in results.items():
        cells = ["-" if metrics[key] is None else fmt.format(metrics[key]) for key, _, fmt in COLUMNS]
        table.add_row(group, *cells)
    return table


def run(args: argparse.Namespace) -> int:
    from minetrain.data.render import save_png
    from minetrain.evaluation import evaluate_policies, plot_report

    console = Console()
    loaded = open_checkpoint(args.checkpoint)
    overrides = {"split_ratio": args.split_ratio}
    if args.frame_size is not None:
        overrides.update(frame_width=args.frame_size[0], frame_height=args.frame_size[1])
    settings = data_settings(loaded, overrides, DATA_DEFAULTS)
    dataset = _dataset(args, settings)
    policies = {name: policy.to(args.device) for name, policy in loaded.weights().items()}
    console.print(
        f"Evaluating {loaded.source} ({', '.join(policies)} weights) on {len(dataset.episodes)} "
        f"{args.split} episode(s), {len(dataset)} windows of {settings['win_len']} frames"
    )
    with progress_bar(console) as progress:
        task = progress.add_task("evaluate")
        results = evaluate_policies(
            policies,
            dataset,
            dataset.window_counts,
            lanes=args.batch_size,
            max_batches=args.batches,
            num_workers=args.workers,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out = args.out or Path(f"eval-{loaded.source.stem}")
    report = {
        "checkpoint": str(loaded.source.absolute()),
        "dataset_dirs": [str(d.absolute()) for d in args.data_dirs],
        "split": args.split,
        "episodes": list(dataset.episodes),
        "max_batches": args.batches,
        "data": {key: settings[key] for key in sorted(settings)},
        "policy": loaded.policy_name,
        "model": loaded.original.config,
        "results": results,
    }
    write_json(out / REPORT_NAME, report)
    save_png(plot_report(results), out / PLOT_NAME)
    for name, per_group in results.items():
        console.print(_table(name, per_group))
    console.print(f"wrote {out / REPORT_NAME} and {out / PLOT_NAME}", soft_wrap=True)
    return 0
