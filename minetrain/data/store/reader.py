"""Reader of MineStudio-layout datasets: the cross-modality episode index and chunk decoding.

Construction only reads bookkeeping (with handles closed again); chunk reads go through the
process-local handles of ``handles.py``, so a store built in the parent is safe to use in
forked or spawned DataLoader workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from minetrain.data.store import layout
from minetrain.data.store.codecs import (
    check_image_format,
    check_interpolation,
    copy_i420,
    decoded_frames,
    iter_video_frames,
)
from minetrain.data.store.handles import read_part_info, reader_env
from minetrain.data.store.modalities import MODALITY_SPECS
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_MODALITIES = ("image", "action", "segmentation")
# Colour tags (FFmpeg's AVColorSpace, AVColorRange) swscale converts as BT.601 limited range, the
# conversion of ``models.frames``: unspecified, bt470bg, smpte170m; unspecified, MPEG.
BT601_COLORSPACES, LIMITED_RANGES = (2, 5, 6), (0, 1)


@dataclass(frozen=True)
class EpisodeLocation:
    """Where one episode of one modality lives."""

    dataset_dir: Path
    modality: str
    part: Path
    episode_idx: int
    num_frames: int
    chunk_size: int

    def describe(self, episode: str, chunk_start: int | None = None) -> str:
        where = f"{self.dataset_dir}: {self.modality} {self.part.name} episode {episode}"
        if chunk_start is not None:
            where += f" chunk {layout.chunk_key(self.episode_idx, chunk_start).decode()}"
        return where


def length_mismatches(
    lengths: dict[str, dict[str, int]], episodes: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Of ``episodes``, those whose modalities (``lengths[modality][episode]``) disagree on frame counts."""
    found = {}
    for name in episodes:
        per_modality = {m: index[name] for m, index in lengths.items() if name in index}
        if len(set(per_modality.values())) > 1:
            found[name] = per_modality
    return found


# (dataset dir, episode) pairs already warned about in this process: the train and val datasets
# each open a store, and a line per store would repeat every warning.
_warned_lengths: set[tuple[Path, str]] = set()


def _as_dirs(dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(dataset_dirs, str | os.PathLike):
        return [Path(dataset_dirs)]
    return [Path(d) for d in dataset_dirs]


class TrajectoryStore:
    """Episodes of one or more dataset dirs, readable per modality and frame range.

    ``resize_interpolation`` is how images read at another ``size`` are resized (``codecs.INTERPOLATIONS``).
    ``image_format``: ``"rgb"`` reads frames as (H, W, 3) RGB; ``"yuv420"`` as their stored I420
    planes (3H/2, W) (``codecs.copy_i420``), at the stored size, for a policy to convert on its
    device. ``reuse_decoder``: decode with this process's reused decoder (``decoder.py``, the same
    frames); False opens every chunk with ``av.open``.
    """

    def __init__(
        self,
        dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike],
        modalities: Sequence[str] = DEFAULT_MODALITIES,
        decode_threads: int = 1,
        resize_interpolation: str = "linear",
        image_format: str = "rgb",
        reuse_decoder: bool = True,
    ) -> None:
        self.dataset_dirs = _as_dirs(dataset_dirs)
        self.image_format = check_image_format(image_format)
        self.reuse_decoder = reuse_decoder
        self.modalities = tuple(modalities)
        self.decode_threads = decode_threads
        self.resize_interpolation = check_interpolation(resize_interpolation)
        unknown = [m for m in self.modalities if m not in MODALITY_SPECS]
        if unknown or not self.modalities:
            raise ConfigError(
                f"unknown modalities {unknown or '(none)'}; choose from {', '.join(MODALITY_SPECS)}"
            )
        if not self.dataset_dirs:
            raise ConfigError("no dataset dirs given")
        self._index: dict[str, dict[str, EpisodeLocation]] = {m: {} for m in self.modalities}
        self.duplicates: dict[str, list[str]] = {m: [] for m in self.modalities}
        chunk_sizes: dict[int, Path] = {}
        for dataset_dir in self.dataset_dirs:
            self._index_dataset_dir(dataset_dir, chunk_sizes)
        if len(chunk_sizes) > 1:
            detail = ", ".join(f"{size} in {path}" for size, path in chunk_sizes.items())
            raise DataError(f"parts use different chunk sizes ({detail}); re-convert them to one chunk size")
        self.chunk_size = next(iter(chunk_sizes))
        self.episodes, self.missing = self._cross_index()
        self.length_mismatches = self._length_mismatches()

    def _index_dataset_dir(self, dataset_dir: Path, chunk_sizes: dict[int, Path]) -> None:
        layout.check_dataset_dir(dataset_dir)
        with layout.permission_errors():
            self._index_modalities(dataset_dir, chunk_sizes)

    def _index_modalities(self, dataset_dir: Path, chunk_sizes: dict[int, Path]) -> None:
        for modality in self.modalities:
            folder = layout.modality_folder(dataset_dir, modality)
            if folder is None:
                names = " or ".join(f"{name}/" for name in MODALITY_SPECS[modality].folders)
                raise DataError(
                    f"{dataset_dir}: no {names} folder for modality {modality}; "
                    f"convert it or leave {modality} out of the requested modalities"
                )
            parts = layout.list_parts(folder)
            if not parts:
                raise DataError(f"{folder}: modality folder holds no LMDB parts; re-convert {modality}")
            for part in parts:
                info = read_part_info(part)
                chunk_sizes.setdefault(info.chunk_size, part)
                index = self._index[modality]
                for chunk_info in info.chunk_infos:
                    name = chunk_info["episode"]
                    if name in index:
                        self.duplicates[modality].append(name)
                        continue
                    index[name] = EpisodeLocation(
                        dataset_dir,
                        modality,
                        part,
                        chunk_info["episode_idx"],
                        chunk_info["num_frames"],
                        info.chunk_size,
                    )
        for modality, names in self.duplicates.items():
            if names:
                logger.warning(
                    "%s: %d episode(s) appear more than once; the first copy is used: %s",
                    modality,
                    len(names),
                    ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""),
                )

    def _cross_index(self) -> tuple[dict[str, int], dict[str, list[str]]]:
        every = set().union(*(set(index) for index in self._index.values()))
        missing = {m: sorted(every - set(index)) for m, index in self._index.items()}
        usable = sorted(set.intersection(*(set(index) for index in self._index.values())))
        episodes = {name: min(index[name].num_frames for index in self._index.values()) for name in usable}
        if any(missing.values()):
            detail = "; ".join(
                f"{m}: {len(names)} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
                for m, names in missing.items()
                if names
            )
            logger.warning(
                "%d of %d episodes are not usable because a modality lacks them; missing per modality: %s",
                len(every) - len(usable),
                len(every),
                detail,
            )
        return episodes, missing

    def _length_mismatches(self) -> dict[str, dict[str, int]]:
        """Usable episodes whose modalities disagree on their length, each warned about once per process."""
        lengths = {
            m: {name: loc.num_frames for name, loc in index.items()} for m, index in self._index.items()
        }
        found = length_mismatches(lengths, list(self.episodes))
        for name, per_modality in found.items():
            dataset_dir = self._index[self.modalities[0]][name].dataset_dir
            if (dataset_dir, name) not in _warned_lengths:
                _warned_lengths.add((dataset_dir, name))
                logger.warning(
                    "%s: episode %s: modalities disagree on its length (%s); training uses the first %d",
                    dataset_dir,
                    name,
                    ", ".join(f"{m} {n}" for m, n in per_modality.items()),
                    self.episodes[name],
                )
        return found

    def modality_episodes(self, modality: str) -> dict[str, int]:
        """Every episode stored for ``modality`` (usable or not) and its frame count there."""
        index = self._index[self._check_modality(modality)]
        return {name: index[name].num_frames for name in sorted(index)}

    def locate(self, episode: str, modality: str) -> EpisodeLocation:
        index = self._index[self._check_modality(modality)]
        location = index.get(episode)
        if location is None:
            raise DataError(
                f"episode {episode} is not in the {modality} modality of "
                f"{', '.join(map(str, self.dataset_dirs))}; "
                "check the name against `minetrain data inspect`"
            )
        return location

    def parts(self, modality: str) -> list[Path]:
        """The LMDB parts holding ``modality``, in index order."""
        return sorted({loc.part for loc in self._index[self._check_modality(modality)].values()})

    def chunk_starts(self, episode: str, modality: str) -> range:
        location = self.locate(episode, modality)
        return range(0, location.num_frames, location.chunk_size)

    def raw_chunk(self, episode: str, modality: str, chunk_start: int) -> bytes:
        """The stored bytes of one chunk (an MP4 for images, a pickle otherwise)."""
        return self.raw_chunks(episode, modality, [chunk_start])[0]

    def raw_chunks(self, episode: str, modality: str, chunk_starts: Sequence[int]) -> list[bytes]:
        """The stored bytes of several chunks of one episode, read in one transaction."""
        location = self.locate(episode, modality)
        with reader_env(location.part).begin(buffers=False) as txn:
            chunks = [txn.get(layout.chunk_key(location.episode_idx, start)) for start in chunk_starts]
        for start, data in zip(chunk_starts, chunks, strict=True):
            if data is None:
                raise DataError(
                    f"{location.describe(episode, start)}: chunk is missing; "
                    "run `minetrain data verify` and re-convert this episode"
                )
        return chunks

    def reads_like(
        self,
        dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike],
        modalities: Sequence[str],
        decode_threads: int,
        resize_interpolation: str,
        image_format: str,
    ) -> bool:
        """Whether a store built with these arguments would read what this one reads, the same way
        (so one index can serve several datasets, such as a run's train and val splits)."""
        return (
            self.dataset_dirs == _as_dirs(dataset_dirs)
            and self.modalities == tuple(modalities)
            and self.decode_threads == decode_threads
            and self.resize_interpolation == resize_interpolation
            and self.image_format == image_format
        )

    def image_resolution(self) -> tuple[int, int] | None:
        """(height, width) of the stored frames, from the first image chunk; None without images."""
        if "image" not in self._index or not self._index["image"]:
            return None
        episode = min(self._index["image"])
        data = self.raw_chunk(episode, "image", 0)
        try:
            frame = next(decoded_frames(data, reuse_decoder=self.reuse_decoder), None)
        except av.FFmpegError as exc:
            where = self.locate(episode, "image").describe(episode, 0)
            raise DataError(
                f"{where}: MP4 chunk does not decode ({exc}); "
                "run `minetrain data verify` and re-convert this episode"
            ) from None
        if frame is None:
            where = self.locate(episode, "image").describe(episode, 0)
            raise DataError(f"{where}: MP4 chunk holds no frames; re-convert this episode")
        return frame.height, frame.width

    def read(
        self,
        episode: str,
        modality: str,
        start: int,
        stop: int,
        *,
        size: tuple[int, int] | None = None,
        out: np.ndarray | None = None,
    ) -> Any:
        """Frames [start, stop) of one modality, reading only the chunks that hold them.

        image -> (n, H, W, 3) uint8 (resized to ``size`` = (width, height) if given), or with
        ``image_format="yuv420"`` (n, 3H/2, W) I420 planes at the stored size (``size`` must be
        None), decoded into ``out`` if given (a batch buffer: saves copying every frame once more);
        action -> dict of arrays; segmentation and meta_info -> list with one dict per frame.
        """
        location = self.locate(episode, modality)
        if not 0 <= start < stop <= location.num_frames:
            raise DataError(
                f"{location.describe(episode)}: frames [{start}, {stop}) are outside "
                f"0..{location.num_frames}; "
                "ask for a range inside the episode"
            )
        spec = MODALITY_SPECS[modality]
        if spec.video:
            return self._read_image(episode, location, start, stop, size, out)
        chunk_starts = range(start - start % location.chunk_size, stop, location.chunk_size)
        pieces = []
        for chunk_start, data in zip(
            chunk_starts, self.raw_chunks(episode, modality, chunk_starts), strict=True
        ):
            where = location.describe(episode, chunk_start)
            expected = min(location.chunk_size, location.num_frames - chunk_start)
            value = load_pickle(data, where, "run `minetrain data verify` and re-convert this episode")
            piece = spec.take(value, expected, max(start - chunk_start, 0), min(stop - chunk_start, expected))
            if piece is None:
                raise DataError(
                    f"{where}: chunk does not hold {expected} frames of {modality}; "
                    "run `minetrain data verify` and re-convert this episode"
                )
            pieces.append(piece)
        try:
            return spec.join(pieces)
        except DataError as exc:
            raise DataError(f"{location.describe(episode)}: {exc}") from None

    def _read_image(
        self,
        episode: str,
        location: EpisodeLocation,
        start: int,
        stop: int,
        size: tuple[int, int] | None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        size_c = location.chunk_size
        chunk_starts = range(start - start % size_c, stop, size_c)
        # Every chunk is read before any is decoded: a decode evicts LMDB's and Python's working
        # set from the CPU caches, making a read right after one much slower than the next read.
        chunks = self.raw_chunks(episode, "image", chunk_starts)
        for chunk_start, data in zip(chunk_starts, chunks, strict=True):
            expected = min(size_c, location.num_frames - chunk_start)
            lo, hi = max(start - chunk_start, 0), min(stop - chunk_start, expected)
            decoded = 0
            try:
                for index, frame in enumerate(self._frames(data, size)):
                    if index >= lo:
                        if out is None:
                            out = np.empty((stop - start, *self._frame_shape(frame)), dtype=np.uint8)
                        row = out[chunk_start + index - start]
                        self._store_frame(frame, row, location, episode, chunk_start)
                    decoded = index + 1
                    if decoded >= hi:
                        break
            except av.FFmpegError as exc:
                raise DataError(
                    f"{location.describe(episode, chunk_start)}: MP4 chunk does not decode ({exc}); "
                    "run `minetrain data verify` and re-convert this episode"
                ) from None
            if decoded < hi:
                raise DataError(
                    f"{location.describe(episode, chunk_start)}: MP4 chunk ends after {decoded} frames, "
                    f"expected {expected}; run `minetrain data verify` and re-convert this episode"
                )
        assert out is not None
        return out

    def _frames(self, data: bytes, size: tuple[int, int] | None) -> Iterator[Any]:
        """RGB arrays, or PyAV frames (for ``copy_i420``) with ``image_format="yuv420"``."""
        if self.image_format == "rgb":
            return iter_video_frames(
                data, size, self.decode_threads, self.resize_interpolation, self.reuse_decoder
            )
        if size is not None:
            raise ConfigError("image_format='yuv420' reads frames at their stored size; pass size=None")
        return decoded_frames(data, self.decode_threads, self.reuse_decoder)

    def _frame_shape(self, frame: Any) -> tuple[int, ...]:
        if self.image_format == "rgb":
            return frame.shape
        return (frame.height * 3 // 2, frame.width)

    def _store_frame(
        self, frame: Any, row: np.ndarray, location: EpisodeLocation, episode: str, chunk_start: int
    ) -> None:
        if self.image_format == "rgb":
            row[...] = frame
            return
        if frame.format.name != "yuv420p" or row.shape != self._frame_shape(frame):
            stored = f"{frame.format.name} {frame.width}x{frame.height}"
            wanted = f"yuv420p {row.shape[1]}x{row.shape[0] * 2 // 3}"
            raise DataError(
                f"{location.describe(episode, chunk_start)}: frames are {stored}, image_format='yuv420' "
                f"batches need {wanted} like the first episode; use image_format='rgb' or re-convert"
            )
        if frame.colorspace not in BT601_COLORSPACES or frame.color_range not in LIMITED_RANGES:
            raise DataError(
                f"{location.describe(episode, chunk_start)}: frames are tagged colorspace "
                f"{frame.colorspace}, "
                f"range {frame.color_range}; image_format='yuv420' converts BT.601 limited range only, "
                "use image_format='rgb'"
            )
        copy_i420(frame, row)

    def _check_modality(self, modality: str) -> str:
        if modality not in self._index:
            raise ConfigError(
                f"modality {modality!r} was not requested; open the store with modalities including it "
                f"(requested: {', '.join(self.modalities)})"
            )
        return modality
