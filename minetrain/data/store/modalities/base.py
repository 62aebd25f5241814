"""What a modality record says, and what its hooks are given.

A ``Modality`` is everything the package knows of one stored modality: the folders it lives in,
how an in-memory episode of it is checked (``validate``) and cut into chunks (``take``), how a
stored chunk is checked (``check``) and joined back (``join``), which batch fields it makes
(``fields``) and how it fills them for one window (``read``) and for the batch (``finish``), how
``view`` draws it and how the synthetic dataset makes it (``synthesize``). The store, the dataset,
``verify``, ``view`` and ``synth`` all go through these records, so a modality's behaviour is in its
own module of this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Field:
    """One batch field: ``shape`` batch first, ``dtype`` numpy's (the tensor has torch's equivalent).

    ``dtype`` ``str``: a list (per window) of strings, or of lists of ``win_len`` strings when the
    shape has a frame axis; ``dict``: field name -> per window a list of ``win_len`` values.
    ``fill``: how it is filled -- ``"frames"`` per window, ``pad`` on padding frames;
    ``"buffer"`` decoded into a reused uint8 batch buffer; ``"batch"`` computed for the whole batch
    (the modality's ``finish``); ``"window"`` one value per window. ``stack(windows, win_len)`` batches
    a ``"frames"`` field that is not an array or a list of strings (None: stacked as those are).
    """

    shape: tuple[int, ...]
    dtype: Any
    fill: str = "frames"
    pad: Any = 0
    stack: Callable[[list[Any], int], Any] | None = None


@dataclass(frozen=True)
class BatchParams:
    """The data parameters a batch's fields depend on (``stored_size``: (h, w) of yuv420 planes)."""

    batch_size: int
    win_len: int
    frame_width: int
    frame_height: int
    stored_size: tuple[int, int] | None = None
    enable_segment: bool = True
    enable_prev_action: bool = False
    enable_contractor_info: bool = False
    mode: str = "raw"


@dataclass(frozen=True)
class WindowRead:
    """One window as a modality's ``read`` sees it.

    Frames ``start, start + stride, ...`` below ``stop`` of ``episode``, ``real`` of them, make the
    first rows of a ``params.win_len``-frame window. ``buffers``: this window's rows of the batch's
    uint8 buffers, by field name. ``seed``, ``epoch`` and ``index`` seed anything drawn at random
    (``conditioning.item_rng``); ``condition_dropout`` is the dataset's.
    """

    store: Any
    episode: str
    start: int
    stop: int
    stride: int
    real: int
    index: int
    params: BatchParams
    buffers: dict[str, np.ndarray]
    seed: int = 0
    epoch: int = 0
    condition_dropout: float = 0.0

    def read(self, modality: str, start: int | None = None, stop: int | None = None) -> Any:
        """Frames [start, stop) of ``modality`` (the window's span by default), every frame."""
        return self.store.read(
            self.episode,
            modality,
            self.start if start is None else start,
            self.stop if stop is None else stop,
        )

    def where(self, modality: str) -> str:
        """The window's frames of ``modality``, as an error message names them."""
        location = self.store.locate(self.episode, modality).describe(self.episode)
        return f"{location} frames [{self.start}, {self.stop})"


@dataclass(frozen=True)
class Target:
    """The object a synthetic episode's frame interacts with: its segment, kind and box.

    ``box``: normalised (top, left, bottom, right); ``start``/``stop``: the segment's frames.
    """

    segment: int
    start: int
    stop: int
    obj_id: int
    event: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class SyntheticEpisode:
    """What a synthetic episode shows (``synth.py``); each modality's ``synthesize`` stores its part."""

    frames: np.ndarray
    action: dict[str, np.ndarray]
    targets: list[Target | None]


@dataclass(frozen=True)
class Modality:
    """One stored modality.

    ``folders``: folder names readers accept, the first the one written. ``validate(value)`` checks
    an in-memory episode's value and returns it (as arrays/lists) with its number of frames,
    raising DataError otherwise. ``video``: chunks are MP4s the store encodes and decodes; otherwise
    pickles, cut by ``take(value, expected, lo, hi)`` (None if the value does not hold ``expected``
    frames) and joined by ``join``. ``check(data, expected)`` raises DataError unless a chunk's bytes
    hold ``expected`` good frames.

    ``fields``: its batch fields for given data parameters (None or empty: not read into batches).
    ``read(window, fields)`` fills its ``"frames"`` fields (and buffers) of one window, the window's
    own fields given with their padding values; ``finish(batch, params)`` adds its ``"batch"``
    fields to a stacked batch. A ``video`` modality is decoded by the dataset into its buffer.
    ``draw(value, offset)``: the ``render.annotate_frame`` arguments of a frame.
    ``synthesize(episode)``: its value for a ``SyntheticEpisode``.
    ``required``: a dataset without it has nothing to train on.
    """

    name: str
    folders: tuple[str, ...]
    validate: Callable[[Any], tuple[Any, int]]
    check: Callable[[bytes, int], None]
    video: bool = False
    take: Callable[[Any, int, int, int], Any] | None = None
    join: Callable[[list[Any]], Any] | None = None
    fields: Callable[[BatchParams], dict[str, Field]] | None = None
    read: Callable[[WindowRead, dict[str, Any]], None] | None = None
    finish: Callable[[dict[str, Any], BatchParams], None] | None = None
    draw: Callable[[Any, int], dict[str, Any]] | None = None
    synthesize: Callable[[SyntheticEpisode], Any] | None = None
    required: bool = False

    def batched(self, params: BatchParams) -> bool:
        """Whether batches under ``params`` carry this modality."""
        return self.fields is not None and bool(self.fields(params))
