"""``RawDataset``: fixed-length windows of consecutive frames, one episode per window.

Which frames each item reads is the dataset's ``WindowIndex`` (``windows.py``): in raw mode
episode e of usable length L is cut into ``ceil(L / (win_len * skip_frame))`` windows of every
``skip_frame``-th frame, the last one padded on the right to ``win_len`` frames; ``EventDataset``
builds its index from event occurrences instead, and is otherwise this dataset.

What a window holds besides its frames comes from the records of the modalities batches carry
(``store/modalities/``): each one's ``read`` fills its fields for a window and ``finish`` the fields
computed over a batch; the dataset decodes the frames, pads, skips and stacks. With
``skip_frame = k > 1`` a kept frame's env action aggregates the k frames it stands for
(``modalities/action.py``); ``enable_prev_action`` adds the aggregate of the k before it.

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

import functools
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from minetrain.data.augment import VideoAugmentation
from minetrain.data.batching import shift_right, stack_windows, unbatch
from minetrain.data.buffers import BufferPool, TakeBuffers, shared_uint8
from minetrain.data.store import TrajectoryStore
from minetrain.data.store.codecs import check_image_format
from minetrain.data.store.modalities import (
    MODALITY_SPECS,
    BatchParams,
    Field,
    WindowRead,
    batch_fields,
    copy_window,
    padding_window,
)
from minetrain.data.windows import WindowIndex, WindowSpan, raw_windows, split_episodes
from minetrain.errors import ConfigError, DataError, UnsafeDataError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


class RawDataset(Dataset):
    """Windows of ``win_len`` frames from the episodes of one split of ``dataset_dirs``."""

    mode = "raw"  # the data param ``mode`` this class serves

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
        *,
        store: TrajectoryStore | None = None,
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
        self.image_format = check_image_format(image_format)
        self.stored_size: tuple[int, int] | None = None
        # The records batches carry, in MODALITY_SPECS order (which does not depend on stored_size).
        self._batched = [spec for spec in MODALITY_SPECS.values() if spec.batched(self.batch_params(1))]
        reading = dict(
            modalities=[spec.name for spec in self._batched],
            decode_threads=decode_threads,
            resize_interpolation=resize_interpolation,
            image_format=image_format,
        )
        # ``store``: an index of the same dirs read the same way, built once for both of a run's splits.
        if store is not None and not store.reads_like(dataset_dirs, **reading):
            raise ConfigError(
                f"RawDataset(store=...): the store reads {store.dataset_dirs} {store.modalities} differently "
                f"from this dataset's {dataset_dirs} {reading}; pass store=None to build its own"
            )
        self.store = TrajectoryStore(dataset_dirs, **reading) if store is None else store
        # yuv420: frames are batched as stored, (height, width), and resized on the policy's device.
        self.stored_size = self._check_yuv420(resize_interpolation) if image_format == "yuv420" else None
        self.dataset_dirs = self.store.dataset_dirs
        episodes = split_episodes(
            list(self.store.episodes),
            split,
            split_ratio,
            shuffle_episodes,
            self.seed,
            apart=self.store.length_mismatches,
        )
        self.windows = self.index_windows(episodes)
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

    def index_windows(self, episodes: list[str]) -> WindowIndex:
        """The items over the split's ``episodes``: every window of each (``EventDataset``: its events)."""
        lengths = [self.store.episodes[name] for name in episodes]
        return raw_windows(episodes, lengths, self.win_len, self.skip_frame)

    @property
    def episodes(self) -> list[str]:
        """The split's episodes, in item order."""
        return self.windows.episodes

    @property
    def window_counts(self) -> list[int]:
        """Items per episode, what ``EpisodeContinuousBatchSampler`` takes."""
        return self.windows.counts

    @property
    def episodes_with_items(self) -> list[tuple[str, int, int]]:
        """(episode, number of windows, index of its first window), as the reference names it."""
        return self.windows.episodes_with_items

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One window: the batch of ``[index]`` without its batch axis."""
        return unbatch(self.__getitems__([index]))

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
        rows = {name: buffer.numpy() for name, buffer in buffers.items()}
        image = rows.pop("image")
        spans = [self.windows.span(int(index)) for index in indices]
        failed: set[int] = set()
        for row, span in enumerate(spans):
            if self._attempt(span, self._read_frames, span, image[row]) is None:
                failed.add(row)
        epoch = self.epoch
        items = []
        for row, span in enumerate(spans):
            others = {name: rows[name][row] for name in rows}
            fields = None if row in failed else self._attempt(span, self._read_fields, span, epoch, others)
            if fields is None:
                self._blank(image[row])
                for other in others.values():
                    other[:] = 0
                fields = self._padding(span.episode)
            elif span.padding:
                image[row] = np.roll(image[row], span.padding, axis=0)
                for other in others.values():
                    other[:] = np.roll(other, span.padding, axis=0)
                fields = shift_right(fields, span.padding)
            if self.enable_video_aug:
                real = np.flatnonzero(fields["mask"])  # contiguous; none in a skipped window
                if real.size:
                    frames = image[row][real[0] : real[-1] + 1]
                    VideoAugmentation.draw(self.seed, epoch, span.index).apply(frames)
            items.append({**fields, **self.windows.item_fields(span.index)})
        return self._stack(items, buffers, count)

    def _stack(
        self, items: list[dict[str, Any]], buffers: dict[str, torch.Tensor], count: int
    ) -> dict[str, Any]:
        """The batch of ``items``: their fields stacked, the buffers, and each modality's batch fields."""
        params = self.batch_params(count)
        stacked = {name: field for name, field in self._fields.items() if field.stack is not None}
        own = {name: [_pop(item, name) for item in items] for name in stacked}
        batch = stack_windows(items)
        for name, values in own.items():
            _put(batch, name, stacked[name].stack(values, self.win_len))
        for name, buffer in buffers.items():
            _put(batch, name, buffer)
        for spec in self._batched:
            if spec.finish is not None:
                spec.finish(batch, params)
        return batch

    def batch_params(self, count: int) -> BatchParams:
        """What the fields of a batch of ``count`` windows depend on (``modalities.batch_fields``)."""
        width, height = self.size
        return BatchParams(
            count,
            self.win_len,
            width,
            height,
            self.stored_size,
            self.enable_segment,
            self.enable_prev_action,
            self.enable_contractor_info,
            self.mode,
        )

    def batch_shapes(self, count: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the uint8 buffers of a batch of ``count`` windows: frames and condition masks."""
        fields = batch_fields(self.batch_params(count))
        return {name: f.shape for name, f in fields.items() if f.fill == "buffer"}

    def _batch_buffers(self, count: int) -> dict[str, torch.Tensor]:
        shapes = self.batch_shapes(count)
        if get_worker_info() is None:
            return {key: self._buffers.take(shape) for key, shape in shapes.items()}
        buffers = self.take_buffers(shapes) if self.take_buffers is not None else None
        return buffers if buffers is not None else {key: shared_uint8(shape) for key, shape in shapes.items()}

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

    def _read_fields(self, span: WindowSpan, epoch: int, buffers: dict[str, np.ndarray]) -> dict[str, Any]:
        """Everything of the window but its frames: each batched modality's ``read`` fills its part,
        and its rows of the batch's other ``buffers`` (condition masks)."""
        k, real = self.skip_frame, span.frames(self.skip_frame)
        fields = self._padding(span.episode)
        fields["mask"][:real] = 1
        fields["timestamp"][:real] = np.arange(span.start, span.stop, k)
        fields["first"] = fields["timestamp"] == 0
        window = WindowRead(
            self.store,
            span.episode,
            span.start,
            span.stop,
            k,
            real,
            span.index,
            self._window_params,
            buffers,
            self.seed,
            epoch,
            self.condition_dropout,
        )
        for spec in self._batched:
            if spec.read is not None:
                spec.read(window, fields)
        return fields

    def _padding(self, episode: str) -> dict[str, Any]:
        """The small fields of an all-padding window (``first`` set: nothing continues into it)."""
        return {**copy_window(self._padding_window), "episode": episode}

    @functools.cached_property
    def _window_params(self) -> BatchParams:
        """The data parameters of one window (first read once ``stored_size`` is known)."""
        return self.batch_params(1)

    @functools.cached_property
    def _padding_window(self) -> dict[str, Any]:
        return padding_window(self._window_params)

    @functools.cached_property
    def _fields(self) -> dict[str, Field]:
        return batch_fields(self._window_params)


def _pop(item: dict[str, Any], name: str) -> Any:
    *parents, key = name.split("/")
    for parent in parents:
        item = item[parent]
    return item.pop(key)


def _put(batch: dict[str, Any], name: str, value: Any) -> None:
    *parents, key = name.split("/")
    for parent in parents:
        batch = batch.setdefault(parent, {})
    batch[key] = value
