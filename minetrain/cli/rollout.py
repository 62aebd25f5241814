"""``minetrain rollout-preview CKPT DATA_DIR --episode E --out clip.mp4``: watch a policy act on a recording.

The policy is run one frame at a time, as it would run in the game (``get_action`` with its memory
carried from step to step, starting empty at ``--start``), on the recorded frames and the
interaction they are conditioned on. Each output frame shows the recording (frame, condition mask,
recorded action) and underneath the policy's most likely action, coloured by whether it agrees
with the recording, beside a (yaw, pitch) plot of the recorded (ring) and predicted (dot) camera
move.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console

from minetrain.actions import BUTTONS, CAMERA_KEY, CAMERA_MAXVAL, env_to_agent
from minetrain.cli.arguments import count, non_negative
from minetrain.cli.checkpoints import data_settings, open_checkpoint
from minetrain.cli.evaluate import DATA_DEFAULTS, add_data_options
from minetrain.errors import CheckpointError, ConfigError, DataError

AGREE, DIFFER, NEUTRAL = (90, 220, 110), (255, 120, 80), (230, 230, 230)
PANEL_LINES = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rollout-preview",
        help="run a policy step by step over a recorded episode and draw predicted vs recorded actions",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        metavar="CKPT",
        help="a .ckpt file, a from_pretrained dir or a checkpoints dir",
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="dataset dir holding the episode")
    parser.add_argument("--episode", required=True, help="episode name (see `minetrain data inspect`)")
    parser.add_argument("--out", type=Path, required=True, help="output video (.mp4)")
    parser.add_argument("--start", type=non_negative, default=0, help="first frame (default: 0)")
    parser.add_argument("--frames", type=count, default=200, help="number of frames (default: 200)")
    parser.add_argument("--fps", type=count, default=20, help="frames per second of the clip (default: 20)")
    parser.add_argument("--ema", action="store_true", help="run the EMA weights")
    parser.add_argument("--png", type=Path, help="also write a PNG grid of 8 frames spread over the clip")
    add_data_options(parser)
    parser.set_defaults(func=run)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def prediction_panel(
    width: int,
    predicted: Mapping[str, Any],
    recorded: Mapping[str, Any] | None,
    agree: tuple[bool, bool] | None,
) -> np.ndarray:
    """A strip with the predicted action (green where it agrees with the recording, orange where
    not) and, on the right, the recorded (ring) and predicted (dot) camera moves on a +-10 degree plot."""
    from minetrain.data.render import action_text

    font_size = max(10, width // 22)
    line_h = font_size + 3
    height = max(PANEL_LINES * line_h + 6, 44)
    panel = Image.new("RGB", (width, height), (30, 30, 34))
    draw = ImageDraw.Draw(panel)
    buttons_ok, camera_ok = agree if agree is not None else (None, None)
    pitch, yaw = (float(v) for v in np.asarray(predicted[CAMERA_KEY]).reshape(2))
    lines = (
        (f"policy: {action_text({k: v for k, v in predicted.items() if k != CAMERA_KEY})}", buttons_ok),
        (f"policy cam {pitch:+.1f},{yaw:+.1f}", camera_ok),
    )
    for row, (text, ok) in enumerate(lines):
        fill = NEUTRAL if ok is None else AGREE if ok else DIFFER
        draw.text((4, 3 + row * line_h), text, fill=fill, font=_font(font_size))
    side = height - 6
    left, top = width - side - 4, 3
    draw.rectangle([left, top, left + side, top + side], outline=(120, 120, 120))
    draw.line([(left + side / 2, top), (left + side / 2, top + side)], fill=(70, 70, 70))
    draw.line([(left, top + side / 2), (left + side, top + side / 2)], fill=(70, 70, 70))

    def point(camera: Any) -> tuple[float, float]:
        p, y = (float(np.clip(v, -CAMERA_MAXVAL, CAMERA_MAXVAL)) for v in np.asarray(camera).reshape(2))
        return left + side * (0.5 + y / (2 * CAMERA_MAXVAL)), top + side * (0.5 + p / (2 * CAMERA_MAXVAL))

    if recorded is not None:
        x, y = point(recorded[CAMERA_KEY])
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(255, 255, 255), width=2)
    x, y = point(predicted[CAMERA_KEY])
    draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=AGREE if camera_ok is not False else DIFFER)
    return np.asarray(panel)


def _stack_actions(rows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([np.asarray(row[key]) for row in rows]) for key in (*BUTTONS, CAMERA_KEY)}


def run(args: argparse.Namespace) -> int:
    import torch

    from minetrain.data.conditioning import condition_window, empty_condition, item_rng
    from minetrain.data.render import action_row, annotate_frame, make_grid, save_clip, save_png
    from minetrain.data.store import TrajectoryStore
    from minetrain.data.summary import present_modalities

    if args.out.suffix.lower() != ".mp4":
        raise ConfigError(f"--out {args.out} must end in .mp4")
    loaded = open_checkpoint(args.checkpoint)
    if args.ema and loaded.ema is None:
        raise CheckpointError(f"{loaded.source} has no EMA weights; run without --ema")
    policy = (loaded.ema if args.ema else loaded.original).to(args.device).eval()
    overrides = {}
    if args.frame_size is not None:
        overrides = {"frame_width": args.frame_size[0], "frame_height": args.frame_size[1]}
    settings = data_settings(loaded, overrides, DATA_DEFAULTS)
    size = (int(settings["frame_width"]), int(settings["frame_height"]))

    present = present_modalities(args.data_dir)
    if "image" not in present:
        raise DataError(f"{args.data_dir}: has no image modality to run the policy on")
    modalities = [m for m in ("image", "action", "segmentation") if m in present]
    store = TrajectoryStore(args.data_dir, modalities=modalities)
    num_frames = store.locate(args.episode, "image").num_frames
    if args.start >= num_frames:
        raise DataError(
            f"{args.data_dir}: episode {args.episode} has frames 0..{num_frames - 1}; "
            f"--start {args.start} is outside"
        )
    start, stop = args.start, min(num_frames, args.start + args.frames)
    shown = store.read(args.episode, "image", start, stop)
    inputs = store.read(args.episode, "image", start, stop, size=size)
    recorded = store.read(args.episode, "action", start, stop) if "action" in modalities else None
    if "segmentation" in modalities and settings["enable_segment"]:
        segments = store.read(args.episode, "segmentation", start, stop)
        condition = condition_window(segments, size, item_rng(int(settings["seed"]), 0, start))
    else:
        condition = empty_condition(stop - start, size)

    console = Console()
    predicted_rows: list[dict[str, np.ndarray]] = []
    memory = None
    with torch.inference_mode():
        for t in range(stop - start):
            obs = {
                "image": inputs[t],
                "segment": {"obj_id": condition["obj_id"][t], "obj_mask": condition["obj_mask"][t]},
                "first": t == 0,
            }
            action, memory = policy.get_action(obs, memory, deterministic=True)
            predicted_rows.append(action)
    predicted = _stack_actions(predicted_rows)
    agreement = None
    if recorded is not None:
        pred_agent, rec_agent = env_to_agent(predicted), env_to_agent(recorded)
        agreement = (
            pred_agent["buttons"] == rec_agent["buttons"],
            pred_agent["camera"] == rec_agent["camera"],
        )

    drawn = []
    for t in range(stop - start):
        obj_id = int(condition["obj_id"][t])
        masks = [(condition["obj_mask"][t], obj_id)] if obj_id >= 0 else []
        frame = annotate_frame(
            shown[t],
            index=start + t,
            masks=masks,
            events=[condition["event"][t]] if condition["event"][t] else [],
            action=action_row(recorded, t) if recorded is not None else None,
        )
        agree = None if agreement is None else (bool(agreement[0][t]), bool(agreement[1][t]))
        panel = prediction_panel(
            frame.shape[1],
            action_row(predicted, t),
            action_row(recorded, t) if recorded is not None else None,
            agree,
        )
        drawn.append(np.concatenate([frame, panel], axis=0))
    save_clip(drawn, args.out, fps=args.fps)
    if args.png is not None:
        picks = np.unique(np.linspace(0, len(drawn) - 1, num=min(8, len(drawn))).round().astype(int))
        save_png(make_grid([drawn[i] for i in picks], columns=4), args.png)
    summary = f"wrote {args.out}: frames {start}..{stop - 1} of {args.episode}"
    if agreement is not None:
        summary += (
            f"; the policy's most likely action matches the recording on {agreement[0].mean():.0%} of "
            f"frames (buttons) and {agreement[1].mean():.0%} (camera)"
        )
    console.print(summary, soft_wrap=True)
    return 0
