"""Offline evaluation of a policy on recorded episodes: BC metrics overall and per interaction type.

The loss and its diagnostics are the training objective's own (``bc_terms``), evaluated on the
frames of each group (all frames, and the frames conditioned on each interaction type) and
aggregated over batches as sums weighted by each metric's frame count, so a group's number is its
mean over all its frames, whatever the batching. The camera angle error is the distance, in
degrees of (pitch, yaw), between the camera move of the most likely camera class and the recorded
move.

Episodes are walked window after window in ``lanes`` parallel rows (``lane_plan``), each row
carrying its policy memory to the next window of its episode as training does; the first window
of an episode has ``first`` set, which resets the memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torch.utils.data import DataLoader, Dataset

from minetrain.actions import CAMERA_KEY, CAMERA_NULL_CLASS, camera_bins, dequantize_camera
from minetrain.data.loader import collate_windows
from minetrain.data.render import INTERACTION_NAMES, interaction_name
from minetrain.offline.mine_callbacks.behavior_clone import bc_terms

ALL = "all"
# Each metric of ``bc_terms`` (and the angle error) with the frames it is a mean over.
METRIC_FRAMES = {
    "loss": "frames",
    "buttons_nll": "frames",
    "buttons_acc": "frames",
    "camera_nll": "camera_moved_frames",
    "camera_acc": "camera_moved_frames",
    "camera_move_precision": "predicted_moves",
    "camera_angle_error_deg": "frames",
}
COUNTS = ("frames", "camera_moved_frames", "predicted_moves")


def camera_angle_error(camera_log_probs: torch.Tensor, recorded: torch.Tensor) -> torch.Tensor:
    """(B,T) degrees between the move of the most likely camera class and the recorded (B,T,2) move."""
    predicted = dequantize_camera(camera_bins(camera_log_probs.argmax(-1)))
    return torch.linalg.vector_norm(predicted - recorded.to(predicted.dtype), dim=-1)


def recorded_camera(batch: Mapping[str, Any]) -> torch.Tensor:
    """(B,T,2) recorded camera move in degrees: the env action, else the agent action's bin centres."""
    env = batch.get("env_action")
    if env is not None and CAMERA_KEY in env:
        return env[CAMERA_KEY].double()
    camera = batch["agent_action"]["camera"].long()
    if camera.ndim == 3:
        camera = camera[..., 0]
    return dequantize_camera(camera_bins(camera))


def interaction_groups(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """(B,T) bool masks of the real frames of every group present: ``all`` and each interaction type."""
    real = batch["mask"].bool() if "mask" in batch else torch.ones(batch["image"].shape[:2], dtype=torch.bool)
    groups = {ALL: real}
    segment = batch.get("segment")
    obj_id = (
        segment["obj_id"].long()
        if segment is not None and "obj_id" in segment
        else torch.full_like(real, -1, dtype=torch.long)
    )
    for value in torch.unique(obj_id[real]).tolist():
        groups[interaction_name(value)] = real & (obj_id == value)
    return groups


class MetricSums:
    """Running sums and frame counts of the evaluation metrics, per group."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = {}

    def add(self, pi_logits: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        camera = batch["agent_action"]["camera"].long()
        camera = camera[..., 0] if camera.ndim == 3 else camera
        moved = camera != CAMERA_NULL_CLASS
        predicted_moves = pi_logits["camera"].argmax(-1) != CAMERA_NULL_CLASS
        angle = camera_angle_error(pi_logits["camera"], recorded_camera(batch).to(camera.device))
        for group, mask in interaction_groups(batch).items():
            terms = bc_terms(pi_logits, batch["agent_action"], mask)
            counts = {
                "frames": float(mask.sum()),
                "camera_moved_frames": float((moved & mask).sum()),
                "predicted_moves": float((predicted_moves & mask).sum()),
            }
            row = self.sums.setdefault(group, dict.fromkeys((*COUNTS, *METRIC_FRAMES), 0.0))
            for name, count in counts.items():
                row[name] += count
            # bc_terms returns means over each metric's frames; times that count gives back the sum.
            for name, frames in METRIC_FRAMES.items():
                if name == "camera_angle_error_deg":
                    row[name] += float((angle * mask).sum())
                else:
                    row[name] += float(terms[name]) * counts[frames]

    def result(self) -> dict[str, dict[str, float | int | None]]:
        """Per group: the frame counts and each metric's mean (None where it has no frames)."""
        out: dict[str, dict[str, float | int | None]] = {}
        for group in sorted(self.sums, key=_group_order):
            row = self.sums[group]
            means: dict[str, float | int | None] = {name: int(row[name]) for name in COUNTS}
            for name, frames in METRIC_FRAMES.items():
                means[name] = row[name] / row[frames] if row[frames] > 0 else None
            out[group] = means
        return out


def _group_order(group: str) -> tuple[int, str]:
    names = [ALL, *INTERACTION_NAMES.values()]
    return (names.index(group), group) if group in names else (len(names), group)


def lane_plan(window_counts: Sequence[int], lanes: int) -> list[list[tuple[int, int]]]:
    """Batches of (lane, window index) covering every window once, each lane walking whole episodes.

    Windows are indexed episode after episode (as ``RawDataset`` does). Episodes go, in order, to
    the lane with the fewest windows so far; batch ``i`` holds the ``i``-th window of every lane
    that still has one, so a lane's consecutive windows are in consecutive batches.
    """
    offsets = np.concatenate([[0], np.cumsum(window_counts)]).astype(int)
    queues: list[list[int]] = [[] for _ in range(max(1, lanes))]
    for episode, count in enumerate(window_counts):
        lane = min(range(len(queues)), key=lambda i: len(queues[i]))
        queues[lane].extend(range(offsets[episode], offsets[episode] + count))
    depth = max((len(q) for q in queues), default=0)
    return [[(lane, q[i]) for lane, q in enumerate(queues) if i < len(q)] for i in range(depth)]


@torch.inference_mode()
def evaluate_policies(
    policies: Mapping[str, nn.Module],
    dataset: Dataset,
    window_counts: Sequence[int],
    lanes: int = 4,
    max_batches: int | None = None,
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Metrics of every policy (by name) on the windows of ``dataset``, all read once.

    ``on_batch(done, total)`` is called after each batch (for a progress bar).
    """
    plan = lane_plan(window_counts, lanes)
    if max_batches is not None:
        plan = plan[:max_batches]
    loader = DataLoader(
        dataset,
        batch_sampler=[[index for _, index in batch] for batch in plan],
        collate_fn=collate_windows,
        num_workers=num_workers,
    )
    sums = {name: MetricSums() for name in policies}
    memory: dict[str, list[torch.Tensor]] = {
        name: policy.initial_state(max(1, lanes)) for name, policy in policies.items()
    }
    for done, (batch, rows) in enumerate(zip(loader, plan, strict=True), start=1):
        rows_t = torch.tensor([lane for lane, _ in rows])
        for name, policy in policies.items():
            outputs, carried = policy(batch, [m[rows_t] for m in memory[name]])
            for slot, value in zip(memory[name], carried, strict=True):
                slot[rows_t] = value.to(slot.device)
            logits = {key: value.cpu() for key, value in outputs["pi_logits"].items()}
            sums[name].add(logits, batch)
        if on_batch is not None:
            on_batch(done, len(plan))
    return {name: total.result() for name, total in sums.items()}


# ------------------------------------------------------------------------------------------ plot
# (metric, title, fixed top of the scale or None to fit the values)
PLOT_METRICS = (
    ("loss", "BC loss", None),
    ("buttons_acc", "buttons accuracy", 1.0),
    ("camera_acc", "camera accuracy (frames where the camera moved)", 1.0),
    ("camera_angle_error_deg", "camera angle error (degrees)", None),
)
WEIGHT_COLOURS = ((70, 130, 220), (240, 140, 40), (90, 190, 110))
_PANEL = (560, 250)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_panel(
    draw: ImageDraw.ImageDraw,
    origin: tuple[int, int],
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    scale: float | None,
) -> None:
    """One bar chart: a bar per (group, series) value, labelled with the value."""
    x0, y0 = origin
    width, height = _PANEL
    left, top, bottom = x0 + 10, y0 + 26, y0 + height - 34
    draw.text((x0 + 10, y0 + 4), title, fill=(20, 20, 20), font=_font(15))
    values = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    top_value = scale or max(values, default=1.0) or 1.0
    draw.line([(left, bottom), (x0 + width - 10, bottom)], fill=(90, 90, 90))
    slot = (width - 20) / max(1, len(groups))
    bar = min(34.0, (slot - 10) / max(1, len(series)))
    for g, group in enumerate(groups):
        gx = left + g * slot + (slot - bar * len(series)) / 2
        for s, (_, vs) in enumerate(series):
            value = vs[g]
            bx = gx + s * bar
            if value is None or not math.isfinite(value):
                draw.text((bx + 2, bottom - 14), "-", fill=(120, 120, 120), font=_font(11))
                continue
            bar_top = bottom - (bottom - top - 14) * max(value, 0.0) / top_value
            draw.rectangle([bx, bar_top, bx + bar - 2, bottom], fill=WEIGHT_COLOURS[s % len(WEIGHT_COLOURS)])
            draw.text((bx, bar_top - 13), f"{value:.2f}", fill=(30, 30, 30), font=_font(10))
        label_x = left + g * slot + (slot - draw.textlength(group, font=_font(12))) / 2
        draw.text((label_x, bottom + 4), group, fill=(30, 30, 30), font=_font(12))


def plot_report(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> np.ndarray:
    """An RGB image: one bar chart per headline metric, bars per interaction group (with its frame
    count) and weights set."""
    names = list(results)
    groups = sorted({g for per_group in results.values() for g in per_group}, key=_group_order)
    frames = {g: per_group[g]["frames"] for per_group in results.values() for g in per_group}
    labels = [f"{g} ({frames[g]})" for g in groups]
    columns = 2
    rows = -(-len(PLOT_METRICS) // columns)
    legend_h = 30
    image = Image.new("RGB", (columns * _PANEL[0], rows * _PANEL[1] + legend_h), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for i, name in enumerate(names):
        x = 10 + i * 160
        draw.rectangle([x, 9, x + 14, 23], fill=WEIGHT_COLOURS[i % len(WEIGHT_COLOURS)])
        draw.text((x + 20, 8), f"{name} weights", fill=(20, 20, 20), font=_font(14))
    for p, (metric, title, scale) in enumerate(PLOT_METRICS):
        r, c = divmod(p, columns)
        series = [(name, [results[name].get(g, {}).get(metric) for g in groups]) for name in names]
        _draw_panel(draw, (c * _PANEL[0], legend_h + r * _PANEL[1]), title, labels, series, scale)
    return np.asarray(image)
