"""Atomic, resumable writer of MineStudio-layout datasets.

Each modality gets its own LMDB parts. A part is built under ``<out>/.incomplete/`` and renamed
into ``<out>/<modality>/part-K`` only once its bookkeeping is written, so a killed run never
leaves a part that looks complete. Re-running on the same directory skips episodes that
committed parts already hold and numbers new parts after the existing ones. A writer holds the
dir's write lock (``lock.py``) from construction to ``close()``.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import lmdb

from minetrain.data.store import layout
from minetrain.data.store.codecs import DEFAULT_CRF, DEFAULT_PRESET, dumps_chunk, encode_video
from minetrain.data.store.episode import Episode
from minetrain.data.store.handles import read_part_info
from minetrain.data.store.lock import dataset_write_lock
from minetrain.data.store.modalities import MODALITY_SPECS
from minetrain.errors import ConfigError, DataError
from minetrain.files import fsync_directory

logger = logging.getLogger(__name__)

_INITIAL_MAP_SIZE = 1 << 26


class _PartBuilder:
    """One LMDB part under construction; its map grows as needed instead of reserving terabytes."""

    def __init__(self, tmp_path: Path, final_path: Path, chunk_size: int) -> None:
        self.tmp_path = tmp_path
        self.final_path = final_path
        self.chunk_size = chunk_size
        self.chunk_infos: list[dict] = []
        self.num_total_frames = 0
        tmp_path.mkdir(parents=True)
        self.env = lmdb.open(str(tmp_path), map_size=_INITIAL_MAP_SIZE, subdir=True)

    def _put_all(self, items: list[tuple[bytes, bytes]]) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def add(self, name: str, num_frames: int, chunks: list[tuple[int, bytes]]) -> None:
        episode_idx = len(self.chunk_infos)
        self._put_all([(layout.chunk_key(episode_idx, start), data) for start, data in chunks])
        self.chunk_infos.append({"episode": name, "episode_idx": episode_idx, "num_frames": num_frames})
        self.num_total_frames += num_frames

    def commit(self) -> None:
        self._put_all(
            [
                (layout.CHUNK_SIZE_KEY, dumps_chunk(self.chunk_size)),
                (layout.CHUNK_INFOS_KEY, dumps_chunk(self.chunk_infos)),
                (layout.NUM_EPISODES_KEY, dumps_chunk(len(self.chunk_infos))),
                (layout.NUM_TOTAL_FRAMES_KEY, dumps_chunk(self.num_total_frames)),
            ]
        )
        self.env.sync(True)
        self.env.close()
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.tmp_path, self.final_path)
        fsync_directory(self.final_path.parent)

    def discard(self) -> None:
        self.env.close()
        shutil.rmtree(self.tmp_path, ignore_errors=True)


class DatasetWriter:
    """Write episodes into ``out_dir`` in the reference's LMDB layout.

    Use as a context manager (or call ``close()``): open parts are committed on exit, also when
    the block raises, because every episode in them is complete.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        chunk_size: int = 32,
        image_crf: int = DEFAULT_CRF,
        fps: int = 20,
        episodes_per_part: int = 256,
        image_preset: str = DEFAULT_PRESET,
    ) -> None:
        if chunk_size <= 0 or episodes_per_part <= 0 or fps <= 0:
            raise ConfigError(
                f"chunk_size, episodes_per_part and fps must be positive, got {chunk_size}, "
                f"{episodes_per_part}, {fps}"
            )
        self.out_dir = Path(out_dir)
        self.chunk_size = chunk_size
        self.image_crf = image_crf
        self.image_preset = image_preset
        self.fps = fps
        self.episodes_per_part = episodes_per_part
        self.written: list[str] = []
        self.skipped: list[str] = []
        self._builders: dict[str, _PartBuilder] = {}
        self._closed = False
        self._lock = ExitStack()
        self._lock.enter_context(dataset_write_lock(self.out_dir))
        try:
            stale = self.out_dir / layout.INCOMPLETE_DIR
            if stale.exists():
                logger.warning("%s: removing parts left unfinished by an interrupted run", stale)
                shutil.rmtree(stale)
            with layout.permission_errors():
                self._committed, self._next_part = self._scan_committed()
        except BaseException:
            self._lock.close()
            raise

    def _scan_committed(self) -> tuple[dict[str, set[str]], dict[str, int]]:
        committed: dict[str, set[str]] = {m: set() for m in MODALITY_SPECS}
        next_part: dict[str, int] = {m: 0 for m in MODALITY_SPECS}
        for modality in MODALITY_SPECS:
            folder = layout.modality_folder(self.out_dir, modality)
            if folder is None:
                continue
            for part in layout.list_parts(folder):
                info = read_part_info(part)
                committed[modality].update(ci["episode"] for ci in info.chunk_infos)
                number = layout.part_number(part)
                if number is not None:
                    next_part[modality] = max(next_part[modality], number + 1)
        return committed, next_part

    def _encode(self, episode: Episode, modality: str) -> list[tuple[int, bytes]]:
        chunks = []
        for start in range(0, episode.num_frames, self.chunk_size):
            value = episode.chunk(modality, start, start + self.chunk_size)
            if MODALITY_SPECS[modality].video:
                data = encode_video(value, fps=self.fps, crf=self.image_crf, preset=self.image_preset)
            else:
                data = dumps_chunk(value)
            chunks.append((start, data))
        return chunks

    def _builder(self, modality: str) -> _PartBuilder:
        builder = self._builders.get(modality)
        if builder is None:
            name = layout.part_name(self._next_part[modality])
            self._next_part[modality] += 1
            builder = self._builders[modality] = _PartBuilder(
                self.out_dir / layout.INCOMPLETE_DIR / modality / name,
                self.out_dir / MODALITY_SPECS[modality].folders[0] / name,
                self.chunk_size,
            )
        return builder

    def write(self, episode: Episode) -> bool:
        """Add one episode; returns False (and records it in ``skipped``) if it is already stored."""
        if self._closed:
            raise DataError(f"{self.out_dir}: writer is closed; open a new DatasetWriter to add episodes")
        if not isinstance(episode, Episode):
            raise ConfigError(f"DatasetWriter.write takes an Episode, got {type(episode).__name__}")
        todo = [m for m in episode.modalities if episode.name not in self._committed[m]]
        if not todo:
            logger.info("%s: episode %s is already stored, skipping it", self.out_dir, episode.name)
            self.skipped.append(episode.name)
            return False
        encoded = {modality: self._encode(episode, modality) for modality in todo}
        for modality, chunks in encoded.items():
            builder = self._builder(modality)
            builder.add(episode.name, episode.num_frames, chunks)
            self._committed[modality].add(episode.name)
            if len(builder.chunk_infos) >= self.episodes_per_part:
                builder.commit()
                del self._builders[modality]
        self.written.append(episode.name)
        return True

    def close(self) -> None:
        """Commit every open part and remove the temporary folder."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for builder in self._builders.values():
                if builder.chunk_infos:
                    builder.commit()
                else:
                    builder.discard()
            self._builders.clear()
            shutil.rmtree(self.out_dir / layout.INCOMPLETE_DIR, ignore_errors=True)
        if self.skipped:
            logger.warning(
                "%s: skipped %d episode(s) already stored: %s",
                self.out_dir,
                len(self.skipped),
                ", ".join(self.skipped[:10]) + (" ..." if len(self.skipped) > 10 else ""),
            )

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
