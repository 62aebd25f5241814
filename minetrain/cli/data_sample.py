"""``minetrain data sample DIR... --out preview.png``: draw one batch exactly as the loader yields it.

Rows are the batch slots (one window each), columns evenly spaced frames of the window; every
frame shows its conditioning mask in the interaction type's colour and a caption with the frame's
timestamp, interaction, event and env action. Padded frames are drawn as they come (black, no
condition) with ``padding`` as their event, so padding mistakes are visible too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from minetrain.cli.arguments import count, dataset_command, non_negative
from minetrain.errors import ConfigError


def register(data_subparsers: argparse._SubParsersAction) -> None:
    parser = dataset_command(data_subparsers, "sample", _sample)
    parser.add_argument("--out", type=Path, required=True, help="output .png")
    parser.add_argument("--batch-size", type=count, default=4)
    parser.add_argument("--win-len", type=count, default=16)
    parser.add_argument("--skip-frame", type=count, default=1)
    parser.add_argument("--size", type=count, default=128, help="frame side the loader resizes to")
    parser.add_argument("--frames", type=count, default=8, help="frames drawn per window")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--split-ratio", type=float, default=0.95)
    parser.add_argument("--epoch", type=non_negative, default=0)
    parser.add_argument("--batch-index", type=non_negative, default=0)
    parser.add_argument("--condition-dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)


def _batch(args: argparse.Namespace) -> dict[str, Any]:
    from minetrain.data import MineDataModule

    module = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(d) for d in args.dirs],
            frame_width=args.size,
            frame_height=args.size,
            win_len=args.win_len,
            skip_frame=args.skip_frame,
            enable_segment=True,
            condition_dropout=args.condition_dropout,
            seed=args.seed,
        ),
        batch_size=args.batch_size,
        split_ratio=args.split_ratio,
        shuffle_episodes=True,
        episode_continuous_batch=True,
    )
    loader = module.train_dataloader() if args.split == "train" else module.val_dataloader()
    if not loader:
        raise ConfigError(f"the {args.split} split is empty; lower --split-ratio or pick the other split")
    loader.batch_sampler.set_epoch(args.epoch)
    for index, batch in enumerate(loader):
        if index == args.batch_index:
            return batch
    raise ConfigError(
        f"the {args.split} split has {len(loader)} batches of {args.batch_size} in epoch {args.epoch}; "
        f"--batch-index must be below that"
    )


def draw_batch(batch: dict[str, Any], frames: int) -> np.ndarray:
    """The preview grid of a loader batch: one row per slot, ``frames`` columns."""
    from minetrain.data.render import annotate_frame, make_grid

    slots, length = batch["mask"].shape
    columns = np.unique(np.linspace(0, length - 1, min(frames, length)).round().astype(int))
    segment = batch["segment"]
    tiles = []
    for slot in range(slots):
        for t in columns:
            obj_id = int(segment["obj_id"][slot, t])
            masks = [(segment["obj_mask"][slot, t].numpy(), obj_id)] if obj_id != -1 else []
            real = bool(batch["mask"][slot, t])
            event = segment["event"][slot][t] if real else "padding"
            action = {key: value[slot, t].numpy() for key, value in batch["env_action"].items()}
            tiles.append(
                annotate_frame(
                    batch["image"][slot, t].numpy(),
                    index=int(batch["timestamp"][slot, t]),
                    masks=masks,
                    events=[event] if event else [],
                    action=action,
                )
            )
    return make_grid(tiles, columns=len(columns))


def _sample(args: argparse.Namespace) -> int:
    """Write a preview image of one batch as the training loader produces it.

    Build MineDataModule over DIR... (episode-continuous batches, as in the seed) and draw batch
    --batch-index of the chosen split and epoch: frames, conditioning masks, interaction types, events
    and actions."""
    from minetrain.data.render import save_png

    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {args.out}")
    batch = _batch(args)
    path = save_png(draw_batch(batch, args.frames), args.out)
    for slot, episode in enumerate(batch["episode"]):
        stamps = batch["timestamp"][slot][batch["mask"][slot] == 1]
        span = f"frames {int(stamps[0])}-{int(stamps[-1])}" if len(stamps) else "skipped (bad data)"
        conditioned = int((batch["segment"]["obj_id"][slot] != -1).sum())
        print(f"row {slot}: {episode} {span}, {conditioned}/{len(stamps)} frames conditioned")
    print(f"wrote {path}")
    return 0
