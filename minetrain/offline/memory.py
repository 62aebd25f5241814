"""Recurrent memory carried per batch slot from one batch to the next (truncated BPTT).

With episode-continuous batches, slot ``i`` of batch ``n+1`` usually continues the window that slot
``i`` held in batch ``n``. The policy resets its memory wherever ``first`` is True, so carrying
memory only needs ``first[:, 0]`` set on slots whose window does not continue the previous one: a
different episode, or a gap/overlap in the frame timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from minetrain.errors import ConfigError

# Timestamp stored for a slot whose previous window held no real frame: nothing continues it.
_NO_FRAME = -(2**62)


def last_real_timestamp(timestamp: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B,) timestamp of each slot's last real (unpadded) frame, a sentinel for all-padding slots."""
    if mask is None:
        return timestamp[:, -1].long()
    real = mask.bool()
    t = timestamp.shape[1]
    last = (t - 1) - real.flip(1).long().argmax(dim=1)
    picked = timestamp.gather(1, last[:, None])[:, 0].long()
    return torch.where(real.any(dim=1), picked, torch.full_like(picked, _NO_FRAME))


def window_stride(timestamp: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B,) frame step between the first two frames of each window, 0 where they are not both real."""
    b = timestamp.shape[0]
    if timestamp.shape[1] < 2:
        return torch.zeros(b, dtype=torch.long, device=timestamp.device)
    step = (timestamp[:, 1] - timestamp[:, 0]).long()
    both_real = torch.ones_like(step, dtype=torch.bool) if mask is None else mask[:, :2].bool().all(dim=1)
    return torch.where(both_real & (step > 0), step, torch.zeros_like(step))


def continues(
    prev_episode: Sequence[str | None],
    prev_last: torch.Tensor,
    prev_stride: torch.Tensor,
    episode: Sequence[str],
    timestamp: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """(B,) bool: True where a slot's window directly follows that slot's previous window.

    The frame step comes from the new window, or from the previous one when the new window has a
    single real frame (1 when neither tells).
    """
    device = timestamp.device
    # Made on the host and copied without blocking: made on a GPU it would wait for the device.
    same = torch.tensor(
        [a is not None and a == b for a, b in zip(prev_episode, episode, strict=True)], dtype=torch.bool
    ).to(device, non_blocking=True)
    stride = window_stride(timestamp, mask)
    prev_stride = prev_stride.to(device)
    stride = torch.where(
        stride > 0, stride, torch.where(prev_stride > 0, prev_stride, torch.ones_like(stride))
    )
    return same & timestamp[:, 0].long().eq(prev_last.to(device) + stride)


class SlotMemory:
    """Memory and position (episode, last timestamp) of every batch slot for one stage (train or val)."""

    def __init__(self) -> None:
        self.memory: list[torch.Tensor] | None = None
        self.episode: list[str] | None = None
        self.last_timestamp: torch.Tensor | None = None
        self.stride: torch.Tensor | None = None

    def prepare(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], list[torch.Tensor] | None]:
        """The batch with ``first[:, 0]`` set on slots that start afresh, and the memory to feed in."""
        missing = [key for key in ("timestamp", "episode") if key not in batch]
        if missing:
            raise ConfigError(
                f"batch has no {' or '.join(map(repr, missing))}; MineLightning carries the recurrent memory "
                "per batch slot by episode and frame timestamp (MineDataModule batches have both)"
            )
        timestamp = batch["timestamp"]
        b, t = timestamp.shape
        first = batch.get("first")
        first = (
            torch.zeros(b, t, dtype=torch.bool, device=timestamp.device) if first is None else first.bool()
        )
        first = first.clone()
        memory = self.memory
        if memory is None or self.episode is None or len(self.episode) != b:
            # A new run, or a batch of another size (e.g. a short last batch): start every slot afresh.
            memory = None
            first[:, 0] = True
        else:
            follows = continues(
                self.episode,
                self.last_timestamp,
                self.stride,
                list(batch["episode"]),
                timestamp,
                batch.get("mask"),
            )
            first[:, 0] |= ~follows
        return {**batch, "first": first}, memory

    def update(self, batch: Mapping[str, Any], memory: Sequence[torch.Tensor]) -> None:
        """Remember the memory after ``batch`` (detached: gradients stop at the window boundary)."""
        self.memory = [m.detach() for m in memory]
        self.episode = [str(e) for e in batch["episode"]]
        self.last_timestamp = last_real_timestamp(batch["timestamp"], batch.get("mask"))
        self.stride = window_stride(batch["timestamp"], batch.get("mask"))

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": None if self.memory is None else [m.cpu().clone() for m in self.memory],
            "episode": self.episode,
            "last_timestamp": None if self.last_timestamp is None else self.last_timestamp.cpu().clone(),
            "stride": None if self.stride is None else self.stride.cpu().clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memory = state["memory"]
        self.episode = state["episode"]
        self.last_timestamp = state["last_timestamp"]
        self.stride = state["stride"]
