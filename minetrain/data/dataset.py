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

A DataLoader fetches whole batches through ``__getitems__``, which decodes every frame straight
into the batch tensors (names as in docs/architecture.md, "Batch"); ``dataset[i]`` is the batch of
``[i]`` without its batch axis. Padded frames have ``mask`` 0, ``timestamp`` -1, zero images and
actions and no condition (``obj_id`` -1, empty mask).

Frames stored at another size than ``frame_width`` x ``frame_height`` are resized as the reference
resizes them (``resize_interpolation='linear'``, OpenCV's INTER_LINEAR pixels, see
``store/codecs.py``); ``'antialias'`` resizes with FFmpeg's swscale instead.

Opt-in fields, named as the reference names them: ``enable_contractor_info`` adds ``meta_info``
(field -> one list of ``win_len`` per-frame values per window, None on padding frames, as the
reference batches it; episodes without meta_info are then not usable); ``enable_video_aug``
augments each window's frames with one draw of the reference's colour jitter and affine warp
(``augment.py``), a pure function of (seed, epoch, window).

Bad data: reading a window whose chunk is missing or corrupt raises the store's ``DataError``
(naming dataset, modality part, episode and chunk). With ``on_error='skip'`` the window is logged
and replaced by an all-padding window (``mask`` all 0, ``first`` set, ``timestamp`` -1): it adds
nothing to the loss and keeps batch shapes and slot positions, and the DataLoader of
``loader.py`` counts such windows and reports the count at the end of each epoch.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Collection, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from minetrain.actions import CAMERA_KEY, ENV_KEYS, env_to_agent
from minetrain.data.augment import VideoAugmentation
from minetrain.data.batching import stack_windows
from minetrain.data.buffers import BufferPool, TakeBuffers, shared_uint8
from minetrain.data.conditioning import condition_window, item_rng, no_condition
from minetrain.data.store import TrajectoryStore
from minetrain.data.store.codecs import check_image_format
from minetrain.errors import ConfigError, DataError, UnsafeDataError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


def split_episodes(
    episodes: Sequence[str],
    split: str,
    split_ratio: float,
    shuffle: bool,
    seed: int,
    apart: Collection[str] = (),
) -> list[str]:
    """The episodes of ``split``: train is the first ``int(n * split_ratio)`` of the (seeded) shuffle.

    The shuffle is Python's ``random.Random(seed).shuffle`` of the name-sorted episodes, the one the
    reference (MineStudio) uses, so both libraries hold out the same validation episodes. Episodes
    in ``apart`` (those the reference leaves out: their modalities disagree on their length) are
    split the same way among themselves and appended, so they do not move the others.
    """

    def cut(order: list[str]) -> list[str]:
        if shuffle:
            random.Random(seed).shuffle(order)
        divider = int(len(order) * split_ratio)
        return order[:divider] if split == "train" else order[divider:]

    extra = set(apart)
    return cut([e for e in episodes if e not in extra]) + cut([e for e in episodes if e in extra])


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
        resize_interpolation: str = "linear",
        enable_contractor_info: bool = False,
        enable_video_aug: bool = False,
        image_format: str = "rgb",
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
        self.enable_contractor_info = enable_contractor_info
        self.enable_video_aug = enable_video_aug
        modalities = ("image", "action", "segmentation") if enable_segment else ("image", "action")
        if enable_contractor_info:
            modalities += ("meta_info",)
        self.image_format = check_image_format(image_format)
        self.store = TrajectoryStore(
            dataset_dirs,
            modalities=modalities,
            decode_threads=decode_threads,
            resize_interpolation=resize_interpolation,
            image_format=image_format,
        )
        # yuv420: frames are batched as stored, (height, width), and resized on the policy's device.
        self.stored_size = self._check_yuv420(resize_interpolation) if image_format == "yuv420" else None
        self.dataset_dirs = self.store.dataset_dirs
        names = split_episodes(
            list(self.store.episodes),
            split,
            split_ratio,
            shuffle_episodes,
            self.seed,
            apart=self.store.length_mismatches,
        )
        self.episode_lengths = [self.store.episodes[name] for name in names]
        self.episodes = names
        span = self.win_len * self.skip_frame
        self.window_counts = [math.ceil(length / span) for length in self.episode_lengths]
        self.offsets = np.concatenate([[0], np.cumsum(self.window_counts)]).astype(np.int64)
        # The epoch lives in shared memory so persistent DataLoader workers see set_epoch().
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._buffers = BufferPool()
        # Set in each DataLoader worker by the loader (loader.py): buffers of a batch slot, or None.
        self.take_buffers: TakeBuffers | None = None

    def _check_yuv420(self, interpolation: str) -> tuple[int, int]:
        """The stored (height, width) of the frames, once ``image_format='yuv420'`` is known to fit."""
        width, height = self.size
        if width % 2 or height % 2:
            raise ConfigError(
                f"image_format='yuv420' needs an even frame_width and frame_height, got {width}x{height}"
            )
        if self.enable_video_aug:
            raise ConfigError("enable_video_aug augments RGB frames; use image_format='rgb' with it")
        stored = self.store.image_resolution()
        if stored is None or stored[0] % 2 or stored[1] % 2:
            raise DataError(
                f"{self.store.dataset_dirs[0]}: frames are stored at {stored}, not an even size as "
                "yuv420p; use image_format='rgb'"
            )
        if stored != (height, width) and interpolation != "linear":
            raise ConfigError(
                f"image_format='yuv420' resizes the stored {stored[1]}x{stored[0]} frames on the device "
                f"with resize_interpolation='linear' only, got {interpolation!r}"
            )
        return stored

    @property
    def epoch(self) -> int:
        # Read through numpy: int() of a tensor is a torch op, slow on cold code paths.
        return int(self._epoch.numpy())

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
        """One window: the batch of ``[index]`` without its batch axis."""
        return _unbatch(self.__getitems__([index]))

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A batch of windows, decoded straight into the batch's tensors.

        The DataLoader calls this with each batch of indices. Every frame is copied once, from the
        decoder into the batch. Buffers are reused (``buffers.py``): in the main process once the
        batch they held is gone; in a DataLoader worker they come from the loader's ``take_buffers``
        (slots of its shared batch ring), so handing the batch to the main process copies nothing either.

        The frames of every window are decoded first and the rest read afterwards: switching
        between the video decoder and Python, LMDB and numpy work evicts each from the CPU caches
        (a small LMDB read right after a decode is several times slower than the next), so the
        switches are made once per batch rather than once per window.
        """
        count = len(indices)
        buffers = self._batch_buffers(count)
        image = buffers["image"].numpy()
        obj_mask = buffers["obj_mask"].numpy() if "obj_mask" in buffers else None
        spans = [self._span(int(index)) for index in indices]
        failed: set[int] = set()
        for row, span in enumerate(spans):
            if self._attempt(span, self._read_frames, span, image[row]) is None:
                failed.add(row)
        epoch = self.epoch
        windows = []
        for row, span in enumerate(spans):
            masks = None if obj_mask is None else obj_mask[row]
            fields = None if row in failed else self._attempt(span, self._read_fields, span, epoch, masks)
            if fields is None:
                self._blank(image[row])
                if masks is not None:
                    masks[:] = 0
                fields = self._padding(span.episode)
            elif span.padding:
                image[row] = np.roll(image[row], span.padding, axis=0)
                if masks is not None:
                    masks[:] = np.roll(masks, span.padding, axis=0)
                fields = _shift_right(fields, span.padding)
            if self.enable_video_aug:
                real = np.flatnonzero(fields["mask"])  # contiguous; none in a skipped window
                if real.size:
                    frames = image[row][real[0] : real[-1] + 1]
                    VideoAugmentation.draw(self.seed, epoch, span.index).apply(frames)
            windows.append({**fields, **self._item_fields(span)})
        meta_info = [window.pop("meta_info") for window in windows] if self.enable_contractor_info else None
        batch = stack_windows(windows)
        if meta_info is not None:
            batch["meta_info"] = _stack_meta_info(meta_info, self.win_len)
        batch["image"] = buffers["image"]
        if self.stored_size is not None:
            batch["frame_size"] = torch.tensor([self.size[::-1]] * count)
        batch["agent_action"] = _agent_action(batch["env_action"])
        if self.enable_prev_action:
            batch["agent_prev_action"] = _agent_action(batch["env_prev_action"])
        if obj_mask is not None:
            batch["segment"]["obj_mask"] = buffers["obj_mask"]
        return batch

    def batch_shapes(self, count: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the uint8 tensors of a batch of ``count`` windows: frames and condition masks."""
        width, height = self.size
        if self.stored_size is None:
            shapes = {"image": (count, self.win_len, height, width, 3)}
        else:
            stored_h, stored_w = self.stored_size
            shapes = {"image": (count, self.win_len, stored_h * 3 // 2, stored_w)}
        if self.enable_segment:
            shapes["obj_mask"] = (count, self.win_len, height, width)
        return shapes

    def _batch_buffers(self, count: int) -> dict[str, torch.Tensor]:
        shapes = self.batch_shapes(count)
        if get_worker_info() is None:
            return {key: self._buffers.take(shape) for key, shape in shapes.items()}
        buffers = self.take_buffers(shapes) if self.take_buffers is not None else None
        return buffers if buffers is not None else {key: shared_uint8(shape) for key, shape in shapes.items()}

    def _span(self, index: int) -> WindowSpan:
        """Which frames item ``index`` reads; subclasses with other windows override it."""
        position, window = self.locate(index)
        episode, span = self.episodes[position], self.win_len * self.skip_frame
        start = window * span
        stop = min(start + span, self.episode_lengths[position])
        return WindowSpan(index, episode, start, stop, 0, f"window {window} of episode {episode}")

    def _item_fields(self, span: WindowSpan) -> dict[str, Any]:
        """Fields of an item beyond what its frames hold (none here; events add their name)."""
        return {}

    def _attempt(self, span: WindowSpan, read: Any, *args: Any) -> Any:
        """``read(*args)``; with ``on_error='skip'`` a ``DataError`` is logged and gives None.

        Never an ``UnsafeDataError``: data that tries to run code stops the run whatever ``on_error`` says.
        """
        try:
            return read(*args)
        except DataError as exc:
            if self.on_error == "raise" or isinstance(exc, UnsafeDataError):
                raise
            log.warning("skipping %s: %s", span.name, exc)
            return None

    def _read_frames(self, span: WindowSpan, image: np.ndarray) -> int:
        """Decode the window's frames into the first rows of ``image``, zero the rest; their count."""
        k, real = self.skip_frame, span.frames(self.skip_frame)
        size = self.size if self.stored_size is None else None
        if k == 1:
            self.store.read(span.episode, "image", span.start, span.stop, size=size, out=image[:real])
        else:
            image[:real] = self.store.read(span.episode, "image", span.start, span.stop, size=size)[::k]
        self._blank(image[real:])
        return real

    def _blank(self, frames: np.ndarray) -> None:
        """Black padding frames: zeros in RGB; Y 16 and chroma 128 as I420 planes, black once converted."""
        if self.stored_size is None:
            frames[...] = 0
            return
        luma = self.stored_size[0]
        frames[..., :luma, :] = 16
        frames[..., luma:, :] = 128

    def _read_fields(self, span: WindowSpan, epoch: int, obj_mask: np.ndarray | None) -> dict[str, Any]:
        """Everything of the window but its frames; the condition masks go into ``obj_mask``."""
        k, length, real = self.skip_frame, self.win_len, span.frames(self.skip_frame)
        episode, start, stop = span.episode, span.start, span.stop
        where = f"{self.store.locate(episode, 'action').describe(episode)} frames [{start}, {stop})"
        action = aggregate_actions(self.store.read(episode, "action", start, stop), k)
        fields = self._padding(episode)
        fields["env_action"] = env_action_rows(action, length, where)
        fields["mask"][:real] = 1
        fields["timestamp"][:real] = np.arange(start, stop, k)
        fields["first"] = fields["timestamp"] == 0
        if self.enable_prev_action:
            fields["env_prev_action"] = self._previous_actions(episode, start, real, where)
        if self.enable_contractor_info:
            frames = self.store.read(episode, "meta_info", start, stop)[::k]
            fields["meta_info"] = meta_info_rows(frames, length)
        if obj_mask is not None:
            segments = self.store.read(episode, "segmentation", start, stop)
            rng = item_rng(self.seed, epoch, span.index)
            try:
                condition = condition_window(
                    segments, self.size, rng, self.condition_dropout, stride=k, obj_mask=obj_mask[:real]
                )
            except DataError as exc:
                masks = self.store.locate(episode, "segmentation").describe(episode)
                raise DataError(f"{masks} frames [{start}, {stop}): {exc}") from None
            obj_mask[real:] = 0
            segment = fields["segment"]
            for key, value in condition.items():
                if key != "obj_mask":
                    segment[key][:real] = value
        return fields

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

    def _padding(self, episode: str) -> dict[str, Any]:
        """The small fields of an all-padding window (``first`` set: nothing continues into it)."""
        length = self.win_len
        first = np.zeros(length, dtype=bool)
        first[0] = True
        fields: dict[str, Any] = {
            "env_action": zero_env_action(length),
            "mask": np.zeros(length, dtype=np.uint8),
            "timestamp": np.full(length, -1, dtype=np.int64),
            "first": first,
            "episode": episode,
        }
        if self.enable_prev_action:
            fields["env_prev_action"] = zero_env_action(length)
        if self.enable_segment:
            fields["segment"] = no_condition(length)
        if self.enable_contractor_info:
            fields["meta_info"] = {}
        return fields


class WindowSpan(NamedTuple):
    """The frames [start, stop) item ``index`` reads from ``episode``, before striding.

    ``padding`` padding frames come before them (windows reaching back before the episode start);
    ``name`` says which window it is in messages.
    """

    index: int
    episode: str
    start: int
    stop: int
    padding: int
    name: str

    def frames(self, stride: int) -> int:
        return len(range(self.start, self.stop, stride))


def _shift_right(value: Any, steps: int) -> Any:
    """Move the right padding of a window to its front, ``steps`` frames, on every per-frame field."""
    if isinstance(value, np.ndarray):
        return np.roll(value, steps, axis=0)
    if isinstance(value, dict):
        return {key: _shift_right(v, steps) for key, v in value.items()}
    if isinstance(value, list):
        return value[-steps:] + value[:-steps]
    return value


def meta_info_rows(frames: Sequence[Any], length: int) -> dict[str, list[Any]]:
    """Per-frame meta_info as the reference batches it: field -> ``length`` values, None where absent.

    Fields are those of any frame of the window; padding frames and frames without a field get None.
    """
    keys = dict.fromkeys(key for frame in frames if isinstance(frame, dict) for key in frame)
    return {
        key: [frame.get(key) if isinstance(frame, dict) else None for frame in frames]
        + [None] * (length - len(frames))
        for key in keys
    }


def _stack_meta_info(windows: list[dict[str, list[Any]]], length: int) -> dict[str, list[list[Any]]]:
    """Batch per-window meta_info: field -> one list per window, all-None for windows without it."""
    keys = dict.fromkeys(key for window in windows for key in window)
    return {key: [window.get(key, [None] * length) for window in windows] for key in keys}


def _agent_action(env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # On the numpy views: small torch ops cost a dispatcher round trip each.
    agent = env_to_agent({key: value.numpy() for key, value in env.items()})
    return {key: torch.from_numpy(value) for key, value in agent.items()}


def _unbatch(batch: Any) -> Any:
    if isinstance(batch, dict):
        return {key: _unbatch(value) for key, value in batch.items()}
    return batch[0]
