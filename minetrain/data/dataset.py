"""``RawDataset``: fixed-length windows of consecutive frames, one episode per window.

Episode e of usable length L is cut into ``ceil(L / (win_len * skip_frame))`` windows; window w
covers the frames ``[w * win_len * skip_frame, (w + 1) * win_len * skip_frame)`` and keeps every
``skip_frame``-th one. The last window of an episode is padded on the right to ``win_len`` frames.
Windows are indexed episode after episode (``window_counts`` gives the count per episode), the
indexing ``EpisodeContinuousBatchSampler`` expects.

With ``skip_frame = k > 1`` a kept frame t stands for the k frames [t, t + k) before the next kept
frame, so its env action aggregates theirs: camera moves are summed and every other key takes its
maximum (a button counts as pressed if it was pressed on any of those frames). The agent action is
computed from that aggregated env action. With ``enable_prev_action`` the previous action of frame
t is the aggregate of [t - k, t), zero at the start of an episode.

Items are dicts of tensors (names as in docs/architecture.md, "Batch"); padded frames have
``mask`` 0, ``timestamp`` -1, zero images and actions and no condition (``obj_id`` -1, empty mask).

Bad data: reading a window whose chunk is missing or corrupt raises the store's ``DataError``
(naming dataset, modality part, episode and chunk). With ``on_error='skip'`` the window is logged
and replaced by an all-padding window (``mask`` all 0, ``first`` set, ``timestamp`` -1): it adds
nothing to the loss and keeps batch shapes and slot positions, and the DataLoader of
``datamodule.py`` counts such windows and reports the count at the end of each epoch.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from minetrain.actions import CAMERA_KEY, ENV_KEYS, env_to_agent
from minetrain.data.conditioning import condition_window, empty_condition, item_rng
from minetrain.data.store import TrajectoryStore
from minetrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


def split_episodes(
    episodes: Sequence[str], split: str, split_ratio: float, shuffle: bool, seed: int
) -> list[str]:
    """The episodes of ``split``: train is the first ``int(n * split_ratio)`` of the (seeded) shuffle."""
    order = list(episodes)
    if shuffle:
        order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    divider = int(len(order) * split_ratio)
    return order[:divider] if split == "train" else order[divider:]


def aggregate_actions(action: dict[str, np.ndarray], stride: int) -> dict[str, np.ndarray]:
    """Env actions of every ``stride``-th frame, each covering the frames up to the next kept one."""
    if stride == 1:
        return action
    length = len(next(iter(action.values())))
    starts = np.arange(0, length, stride)
    return {
        key: np.add.reduceat(value, starts, axis=0)
        if key == CAMERA_KEY
        else np.maximum.reduceat(value, starts, axis=0)
        for key, value in action.items()
    }


def env_action_rows(action: dict[str, np.ndarray], length: int, where: str) -> dict[str, np.ndarray]:
    """The VPT env-action keys as int64 buttons and float32 camera, zero-padded to ``length`` rows.

    Keys beyond the VPT set (e.g. ``ESC``) are left out so that every batch has the same keys.
    """
    missing = [key for key in ENV_KEYS if key not in action]
    if missing:
        raise DataError(f"{where}: action chunk lacks key(s) {', '.join(missing)}; re-convert this episode")
    rows = {}
    for key in ENV_KEYS:
        value = np.asarray(action[key], dtype=np.float32 if key == CAMERA_KEY else np.int64)
        out = np.zeros((length, *value.shape[1:]), dtype=value.dtype)
        out[: len(value)] = value
        rows[key] = out
    return rows


def zero_env_action(length: int) -> dict[str, np.ndarray]:
    """``length`` rows of the null env action, in the dtypes of ``env_action_rows``."""
    return {
        key: np.zeros((length, 2), dtype=np.float32)
        if key == CAMERA_KEY
        else np.zeros(length, dtype=np.int64)
        for key in ENV_KEYS
    }


class RawDataset(Dataset):
    """Windows of ``win_len`` frames from the episodes of one split of ``dataset_dirs``."""

    def __init__(
        self,
        dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike],
        frame_width: int = 224,
        frame_height: int = 224,
        win_len: int = 128,
        skip_frame: int = 1,
        enable_segment: bool = True,
        enable_prev_action: bool = False,
        condition_dropout: float = 0.0,
        split: Literal["train", "val"] = "train",
        split_ratio: float = 0.8,
        shuffle_episodes: bool = False,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        decode_threads: int = 1,
    ) -> None:
        super().__init__()
        if win_len < 1 or skip_frame < 1:
            raise ConfigError(f"win_len and skip_frame must be >= 1, got {win_len} and {skip_frame}")
        if frame_width < 1 or frame_height < 1:
            raise ConfigError(f"frame_width and frame_height must be >= 1, got {frame_width}x{frame_height}")
        if not 0.0 <= condition_dropout <= 1.0:
            raise ConfigError(f"condition_dropout must be in [0, 1], got {condition_dropout}")
        if not 0.0 <= split_ratio <= 1.0:
            raise ConfigError(f"split_ratio must be in [0, 1], got {split_ratio}")
        if split not in ("train", "val"):
            raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        self.size = (int(frame_width), int(frame_height))
        self.win_len = int(win_len)
        self.skip_frame = int(skip_frame)
        self.enable_segment = enable_segment
        self.enable_prev_action = enable_prev_action
        self.condition_dropout = float(condition_dropout)
        self.split = split
        self.seed = int(seed)
        self.on_error = on_error
        modalities = ("image", "action", "segmentation") if enable_segment else ("image", "action")
        self.store = TrajectoryStore(dataset_dirs, modalities=modalities, decode_threads=decode_threads)
        self.dataset_dirs = self.store.dataset_dirs
        names = split_episodes(list(self.store.episodes), split, split_ratio, shuffle_episodes, self.seed)
        self.episode_lengths = [self.store.episodes[name] for name in names]
        self.episodes = names
        span = self.win_len * self.skip_frame
        self.window_counts = [math.ceil(length / span) for length in self.episode_lengths]
        self.offsets = np.concatenate([[0], np.cumsum(self.window_counts)]).astype(np.int64)
        # The epoch lives in shared memory so persistent DataLoader workers see set_epoch().
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch that seeds relabelling and dropout (with the seed and item index)."""
        self._epoch.fill_(int(epoch))

    @property
    def episodes_with_items(self) -> list[tuple[str, int, int]]:
        """(episode, number of windows, index of its first window), as the reference names it."""
        return [
            (e, n, int(o)) for e, n, o in zip(self.episodes, self.window_counts, self.offsets, strict=False)
        ]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(episode position, window number) of a window index."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} is outside 0..{len(self) - 1}")
        episode = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return episode, index - int(self.offsets[episode])

    def __getitem__(self, index: int) -> dict[str, Any]:
        position, window = self.locate(int(index))
        episode, length = self.episodes[position], self.episode_lengths[position]
        span = self.win_len * self.skip_frame
        start, stop = window * span, min((window + 1) * span, length)
        try:
            item = self._read_window(int(index), episode, start, stop)
        except DataError as exc:
            if self.on_error == "raise":
                raise
            log.warning(
                "skipping window %d of episode %s (frames %d-%d): %s", window, episode, start, stop, exc
            )
            item = self._empty_window(episode)
        return item

    def _read_window(self, index: int, episode: str, start: int, stop: int) -> dict[str, Any]:
        k, length = self.skip_frame, self.win_len
        frames = self.store.read(episode, "image", start, stop, size=self.size)[::k]
        real = len(frames)
        image = np.zeros((length, self.size[1], self.size[0], 3), dtype=np.uint8)
        image[:real] = frames
        where = f"{self.store.locate(episode, 'action').describe(episode)} frames [{start}, {stop})"
        env = env_action_rows(
            aggregate_actions(self.store.read(episode, "action", start, stop), k), length, where
        )
        timestamp = np.full(length, -1, dtype=np.int64)
        timestamp[:real] = np.arange(start, stop, k)
        mask = np.zeros(length, dtype=np.uint8)
        mask[:real] = 1
        item: dict[str, Any] = {
            "image": image,
            "env_action": env,
            "agent_action": env_to_agent(env),
            "mask": mask,
            "timestamp": timestamp,
            "first": timestamp == 0,
            "episode": episode,
        }
        if self.enable_prev_action:
            prev = self._previous_actions(episode, start, real, where)
            item["env_prev_action"] = prev
            item["agent_prev_action"] = env_to_agent(prev)
        if self.enable_segment:
            segments = self.store.read(episode, "segmentation", start, stop)
            rng = item_rng(self.seed, self.epoch, index)
            try:
                condition = condition_window(segments, self.size, rng, self.condition_dropout, stride=k)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            item["segment"] = self._pad_condition(condition)
        return _to_tensors(item)

    def _previous_actions(self, episode: str, start: int, real: int, where: str) -> dict[str, np.ndarray]:
        """Aggregated actions of [t - k, t) for every kept frame t; zero before the episode starts."""
        k = self.skip_frame
        last = start + (real - 1) * k
        if start > 0:
            read = self.store.read(episode, "action", start - k, last)
            return env_action_rows(aggregate_actions(read, k), self.win_len, where)
        prev = zero_env_action(self.win_len)
        if real > 1:
            rows = env_action_rows(
                aggregate_actions(self.store.read(episode, "action", 0, last), k), real - 1, where
            )
            for key, value in rows.items():
                prev[key][1:real] = value
        return prev

    def _pad_condition(self, condition: dict[str, Any]) -> dict[str, Any]:
        real = len(condition["obj_id"])
        if real == self.win_len:
            return condition
        pad = empty_condition(self.win_len - real, self.size)
        return {
            key: value + pad[key] if isinstance(value, list) else np.concatenate([value, pad[key]])
            for key, value in condition.items()
        }

    def _empty_window(self, episode: str) -> dict[str, Any]:
        """The all-padding stand-in for a window that could not be read."""
        length = self.win_len
        env = zero_env_action(length)
        first = np.zeros(length, dtype=bool)
        first[0] = True
        item: dict[str, Any] = {
            "image": np.zeros((length, self.size[1], self.size[0], 3), dtype=np.uint8),
            "env_action": env,
            "agent_action": env_to_agent(env),
            "mask": np.zeros(length, dtype=np.uint8),
            "timestamp": np.full(length, -1, dtype=np.int64),
            "first": first,
            "episode": episode,
        }
        if self.enable_prev_action:
            item["env_prev_action"] = {key: value.copy() for key, value in env.items()}
            item["agent_prev_action"] = env_to_agent(env)
        if self.enable_segment:
            item["segment"] = empty_condition(length, self.size)
        return _to_tensors(item)


def _to_tensors(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {key: _to_tensors(v) for key, v in value.items()}
    return value
