"""OpenAI VPT contractor recordings (``<name>.mp4`` + ``<name>.jsonl``) -> trajectory store.

The per-frame action rules (VPT's published loader) are in ``vpt_actions.py``. The mouse cursor
is drawn on frames while a GUI is open, at the recorded position scaled from the recorder's
720-row coordinates.

Every frame is kept by default: the store has to stay frame-aligned with the source video (the
segmentation annotations index its frames) and memory-based policies need real time steps. VPT's
training loader dropped "null" frames (no button, no camera move); ``skip_null_actions`` does the
same, visibly, and ``meta_info`` records ``source_frame`` so kept frames can be traced back.
Frames are resized with area interpolation (FFmpeg's swscale) and episode tails are kept.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from minetrain.data.convert.report import ConversionReport
from minetrain.data.convert.vpt_actions import read_jsonl, steps_to_actions
from minetrain.data.store import MODALITY_SPECS, DatasetWriter, Episode, layout
from minetrain.data.store.handles import read_part_info
from minetrain.data.store.lock import dataset_write_lock
from minetrain.data.workers import die_with_parent
from minetrain.errors import ConfigError, DataError
from minetrain.files import fsync_directory

RECORDER_HEIGHT = 720  # mouse x/y are in the recorder's 720-row screen coordinates
STAGING_DIR = ".staging"
MAX_EPISODES_PER_SHARD = 64


@dataclass(frozen=True)
class VptOptions:
    size: tuple[int, int] = (224, 224)  # (width, height)
    chunk_size: int = 32
    crf: int = 23
    skip_null_actions: bool = False


@functools.lru_cache(maxsize=1)
def cursor_rgba() -> np.ndarray:
    """A 16x16 white arrow cursor with a black outline, (16, 16, 4) uint8 RGBA."""
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    arrow = [(0, 0), (0, 13), (3, 10), (6, 15), (8, 14), (5, 9), (10, 9)]
    ImageDraw.Draw(image).polygon(arrow, fill=(255, 255, 255, 255), outline=(0, 0, 0, 255))
    return np.asarray(image)


def draw_cursor(frame: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend the cursor onto ``frame`` (H, W, 3) in place with its tip at (x, y)."""
    cursor = cursor_rgba()
    height, width = frame.shape[:2]
    if x >= width or y >= height or x <= -16 or y <= -16:
        return
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + 16, width), min(y + 16, height)
    patch = cursor[y0 - y : y1 - y, x0 - x : x1 - x]
    alpha = patch[..., 3:].astype(np.float32) / 255.0
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (region * (1 - alpha) + patch[..., :3] * alpha).astype(np.uint8)


def read_frames(video: Path, meta: list[dict], size: tuple[int, int]) -> np.ndarray:
    """The first ``len(meta)`` frames of ``video``, cursor drawn where a GUI is open, resized to ``size``.

    Like VPT's converters, a video may hold one frame more than the jsonl has steps (dropped); any
    other difference is an error.
    """
    width, height = size
    n = len(meta)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    count = 0
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if count < n:
                    info = meta[count]
                    if info["isGuiOpen"]:
                        rgb = frame.to_ndarray(format="rgb24")
                        scale = rgb.shape[0] / RECORDER_HEIGHT
                        draw_cursor(rgb, int(info["cursor_x"] * scale), int(info["cursor_y"] * scale))
                        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    out[count] = frame.reformat(
                        width, height, format="rgb24", interpolation="AREA"
                    ).to_ndarray()
                count += 1
    except (av.FFmpegError, IndexError) as exc:
        raise DataError(f"{video}: does not decode after {count} frames ({exc})") from None
    if not n <= count <= n + 1:
        raise DataError(
            f"{video}: frame/action count mismatch: video has {count} frames, jsonl has {n} steps"
        )
    return out


def convert_recording(
    name: str, video: Path, jsonl: Path, options: VptOptions, skip: frozenset = frozenset()
) -> Episode:
    """One recording as an Episode (image, action, meta_info), leaving out modalities in ``skip``."""
    steps = read_jsonl(jsonl)
    action, null, meta = steps_to_actions(steps, jsonl)
    frames = read_frames(video, meta, options.size) if "image" not in skip else None
    if options.skip_null_actions:
        keep = np.flatnonzero(~null)
        if keep.size == 0:
            raise DataError(f"{jsonl}: every step is a null action; nothing left with --skip-null-actions")
        action = {key: value[keep] for key, value in action.items()}
        meta = [meta[i] for i in keep]
        frames = frames[keep] if frames is not None else None
    return Episode(
        name=name,
        image=frames,
        action=action if "action" not in skip else None,
        meta_info=meta if "meta_info" not in skip else None,
    )


def discover(src: Path) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, str]]]:
    """Complete (name, mp4, jsonl) recordings under ``src``, and (name, reason) for incomplete ones."""
    videos = {p.stem: p for p in src.rglob("*.mp4")}
    logs = {p.stem: p for p in src.rglob("*.jsonl")}
    complete, broken = [], []
    for name in sorted(videos.keys() | logs.keys()):
        if name not in logs:
            broken.append((name, f"missing {name}.jsonl next to {videos[name]}"))
        elif name not in videos:
            broken.append((name, f"missing {name}.mp4 next to {logs[name]}"))
        else:
            complete.append((name, videos[name], logs[name]))
    return complete, broken


_MODALITIES = ("image", "action", "meta_info")


def _stored(out: Path, chunk_size: int) -> dict[str, set[str]]:
    """Episodes per modality already committed in ``out``; refuses a different chunk size."""
    stored: dict[str, set[str]] = {m: set() for m in _MODALITIES}
    for modality in _MODALITIES:
        folder = layout.modality_folder(out, modality)
        for part in layout.list_parts(folder) if folder else []:
            info = read_part_info(part)
            if info.chunk_size != chunk_size:
                raise ConfigError(
                    f"{part}: stored with chunk size {info.chunk_size}; convert with --chunk-size "
                    f"{info.chunk_size} or into a new dir"
                )
            stored[modality].update(ci["episode"] for ci in info.chunk_infos)
    return stored


def _promote(shard: Path, out: Path) -> None:
    """Move the committed parts of a staging shard into ``out`` as new parts, then drop the shard."""
    for modality in _MODALITIES:
        folder = layout.modality_folder(shard, modality)
        if folder is None:
            continue
        target = out / MODALITY_SPECS[modality].folders[0]
        target.mkdir(parents=True, exist_ok=True)
        for part in layout.list_parts(folder):
            numbers = [layout.part_number(p) for p in layout.list_parts(target)]
            next_number = max((n for n in numbers if n is not None), default=-1) + 1
            os.rename(part, target / layout.part_name(next_number))
        fsync_directory(target)
    shutil.rmtree(shard, ignore_errors=True)


def _convert_shard(
    out: str,
    items: list[tuple[str, str, str, frozenset]],
    options: VptOptions,
    on_done: Callable | None = None,
) -> list[tuple[str, int, str | None]]:
    """Convert recordings into the dataset dir ``out``: (name, frames, error or None) each."""
    results = []
    with DatasetWriter(
        out, chunk_size=options.chunk_size, image_crf=options.crf, episodes_per_part=256
    ) as writer:
        for name, video, jsonl, skip in items:
            try:
                episode = convert_recording(name, Path(video), Path(jsonl), options, skip)
                writer.write(episode)
                result = (name, episode.num_frames, None)
            except DataError as exc:
                result = (name, 0, str(exc))
            except Exception as exc:
                result = (name, 0, f"{type(exc).__name__}: {exc}")
            results.append(result)
            if on_done is not None:
                on_done(name)
    return results


def convert_vpt(
    src: str | Path,
    out: str | Path,
    options: VptOptions = VptOptions(),
    jobs: int = 1,
    on_plan: Callable[[int], None] | None = None,
    on_item: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Convert every recording under ``src`` into ``out``; broken ones are reported, not raised.

    With ``jobs > 1`` shards of recordings are written by worker processes into ``out/.staging/``
    and their finished parts renamed into ``out``; a rerun promotes what an interrupted run
    finished and skips episodes already stored.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"{src}: source dir does not exist; point it at the VPT recordings")
    if min(options.size) < 2 or options.chunk_size < 1:
        raise ConfigError(
            f"size must be at least 2x2 and chunk size >= 1, got {options.size}, {options.chunk_size}"
        )
    complete, broken = discover(src)
    if not complete and not broken:
        raise DataError(f"{src}: no <name>.mp4 / <name>.jsonl recordings found")
    with dataset_write_lock(out):
        staging = out / STAGING_DIR
        if staging.is_dir():
            for shard in sorted(staging.iterdir()):
                _promote(shard, out)
        stored = _stored(out, options.chunk_size)
        report = ConversionReport(failed=list(broken))
        todo = []
        for name, video, jsonl in complete:
            skip = frozenset(m for m in _MODALITIES if name in stored[m])
            if len(skip) == len(_MODALITIES):
                report.already_stored.append(name)
            else:
                todo.append((name, str(video), str(jsonl), skip))
        if on_plan is not None:
            on_plan(len(complete) + len(broken))
        for name in [b[0] for b in broken] + report.already_stored:
            if on_item is not None:
                on_item(name)
        if jobs <= 1 or len(todo) <= 1:
            results = _convert_shard(str(out), todo, options, on_item)
        else:
            results = _convert_parallel(out, staging, todo, options, jobs, on_item)
        for name, frames, error in results:
            if error is None:
                report.converted.append(name)
                report.frames += frames
            else:
                report.failed.append((name, error))
    return report


def _convert_parallel(
    out: Path,
    staging: Path,
    todo: list,
    options: VptOptions,
    jobs: int,
    on_item: Callable[[str], None] | None,
) -> list[tuple[str, int, str | None]]:
    shard_size = max(1, min(MAX_EPISODES_PER_SHARD, math.ceil(len(todo) / (jobs * 4))))
    shards = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    results = []
    with ProcessPoolExecutor(max_workers=jobs, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {
            pool.submit(_convert_shard, str(staging / f"shard-{i}"), shard, options): (i, shard)
            for i, shard in enumerate(shards)
        }
        for future in as_completed(futures):
            index, shard = futures[future]
            try:
                shard_results = future.result()
            except BrokenProcessPool as exc:
                shard_results = [(item[0], 0, f"worker process died ({exc})") for item in shard]
            _promote(staging / f"shard-{index}", out)
            results.extend(shard_results)
            for item in shard:
                if on_item is not None:
                    on_item(item[0])
    shutil.rmtree(staging, ignore_errors=True)
    return results
