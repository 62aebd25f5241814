"""Image-chunk decode speed: TrajectoryStore.read vs plain PyAV on the same MP4 bytes.

Builds a small 224x224 synthetic dataset in a temporary dir, then decodes every image chunk both
ways in the same run and prints frames/s and the ratio (target >= 0.95). The baseline is what a
user would write by hand: open the bytes, decode, `to_ndarray(format="rgb24")`, stack.

The resize case reads the same chunks at 128x128 (the VPT configs' size), one decode thread, with
each ``resize_interpolation`` next to reading at the stored size: medians (and ranges) of
interleaved repetitions.

The decode-path case (``--paths-only``) decodes the same chunks each way issue 21 compares, on
gameplay-like chunks (``common.gameplay_frames``) and, for the bound and the fastest path, on flat
and noisy synthetic chunks: ``av.open`` per chunk to RGB (the PyAV bound) or to I420 planes, the
reused decoder (``store/decoder.py``) to RGB or planes, ``TrajectoryStore.read`` with each
``image_format``, the ffmpeg command line and torchcodec when available. Frames per CPU second of
one process (per core), medians of interleaved rounds.

    python benchmarks/bench_store.py [--episodes 6] [--frames 160] [--repeats 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import av
import numpy as np
from common import ensure_dataset

from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import copy_i420, decoded_frames, iter_video_frames


def synthetic_frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    frames = np.empty((n, 224, 224, 3), np.uint8)
    for t in range(n):
        frames[t] = np.roll(base, shift=(2 * t, 3 * t), axis=(0, 1))
        frames[t] ^= rng.integers(0, 24, (224, 224, 3), dtype=np.uint8)  # texture, like game frames
    return frames


def plain_pyav(chunks: list[bytes], threads: int) -> int:
    count = 0
    for data in chunks:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = threads
            if threads != 1:
                stream.thread_type = "AUTO"
            frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        count += len(frames)
    return count


def store_read(store: TrajectoryStore) -> int:
    return sum(len(store.read(name, "image", 0, n)) for name, n in store.episodes.items())


def best_rate(fn, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = fn()
        rates.append(frames / (time.perf_counter() - start))
    return max(rates)


def resize_case(dataset: str, repeats: int) -> None:
    cases = {
        "stored 224x224": (None, "linear"),
        "128x128 linear": ((128, 128), "linear"),
        "128x128 antialias": ((128, 128), "antialias"),
    }
    stores = {
        label: TrajectoryStore(dataset, modalities=("image",), resize_interpolation=interpolation)
        for label, (_, interpolation) in cases.items()
    }
    rates: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(repeats):
        for label, (size, _) in cases.items():
            store = stores[label]
            start = time.perf_counter()
            frames = sum(len(store.read(e, "image", 0, n, size=size)) for e, n in store.episodes.items())
            rates[label].append(frames / (time.perf_counter() - start))
    base = float(np.median(rates["stored 224x224"]))
    for label, values in rates.items():
        median = float(np.median(values))
        print(
            f"[resize, 1 thread] {label:18s} {median:8.1f} frames/s "
            f"(range {min(values):.1f}-{max(values):.1f}), {1e3 / median:.3f} ms/frame, "
            f"{median / base:.2f}x the stored-size read"
        )


def open_rgb(chunks: list[bytes]) -> int:
    """Today's bound, the loader's method until now: ``av.open`` per chunk, decode, RGB arrays."""
    return sum(1 for data in chunks for _ in iter_video_frames(data, reuse_decoder=False))


def planes(frames: Iterable[av.VideoFrame], out: np.ndarray) -> int:
    count = 0
    for count, frame in enumerate(frames, 1):
        copy_i420(frame, out[count - 1])
    return count


def open_yuv(chunks: list[bytes], out: np.ndarray) -> int:
    return sum(planes(decoded_frames(data, reuse_decoder=False), out) for data in chunks)


def open_to_ndarray(chunks: list[bytes]) -> int:
    """``av.open`` per chunk, ``frame.to_ndarray(format="rgb24")``, PyAV's default threads."""
    count = 0
    for data in chunks:
        with av.open(io.BytesIO(data)) as container:
            count += sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24").size)
    return count


def reused_rgb(chunks: list[bytes]) -> int:
    return sum(1 for data in chunks for _ in iter_video_frames(data, reuse_decoder=True))


def reused_yuv(chunks: list[bytes], out: np.ndarray) -> int:
    return sum(planes(decoded_frames(data), out) for data in chunks)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg_cli(listing: Path, count: int, rgb: bool) -> Callable[[], tuple[int, float]]:
    """The ffmpeg command line decoding every chunk (concat demuxer, one thread), to null or rgb24."""
    output = ["-pix_fmt", "rgb24", "-f", "rawvideo", "-y", os.devnull] if rgb else ["-f", "null", "-"]
    command = ["ffmpeg", "-v", "error", "-threads", "1", "-f", "concat", "-safe", "0", "-i", str(listing)]

    def run() -> tuple[int, float]:
        before = children_cpu()
        subprocess.run([*command, *output], check=True)
        return count, children_cpu() - before

    return run


def torchcodec_rgb(chunks: list[bytes]) -> int:
    from torchcodec.decoders import VideoDecoder

    count = 0
    for data in chunks:
        decoder = VideoDecoder(data, device="cpu", num_ffmpeg_threads=1, seek_mode="approximate")
        count += len(decoder.get_frames_in_range(0, len(decoder)).data)
    return count


def timed(fn: Callable[[], int]) -> Callable[[], tuple[int, float]]:
    def run() -> tuple[int, float]:
        start = time.process_time()
        return fn(), time.process_time() - start

    return run


def chunks_of(path: Path) -> list[bytes]:
    store = TrajectoryStore(path, modalities=("image",))
    return [store.raw_chunk(e, "image", s) for e in store.episodes for s in store.chunk_starts(e, "image")]


def store_reads(path: Path, image_format: str, reuse: bool) -> Callable[[], int]:
    store = TrajectoryStore(path, modalities=("image",), image_format=image_format, reuse_decoder=reuse)
    return lambda: sum(len(store.read(e, "image", 0, n)) for e, n in store.episodes.items())


def ffmpeg_cases(chunks: list[bytes], tmp: str) -> dict[str, Callable[[], tuple[int, float]]]:
    if not shutil.which("ffmpeg"):
        print("[paths] ffmpeg is not installed: its rows are left out")
        return {}
    names = []
    for index, data in enumerate(chunks):
        (Path(tmp) / f"{index}.mp4").write_bytes(data)
        names.append(f"file '{tmp}/{index}.mp4'")
    listing = Path(tmp) / "chunks.txt"
    listing.write_text("\n".join(names) + "\n")
    frames = 32 * len(chunks)
    return {
        "ffmpeg CLI, decode only": ffmpeg_cli(listing, frames, rgb=False),
        "ffmpeg CLI, to rgb24": ffmpeg_cli(listing, frames, rgb=True),
    }


def paths_case(data_dir: Path, rounds: int) -> None:
    gameplay = ensure_dataset(data_dir / "gameplay", 4, 320, gameplay=True)
    chunks = chunks_of(gameplay)
    out = np.empty((32, 336, 224), np.uint8)
    bound = "av.open per chunk, RGB (the PyAV bound)"
    cases = {
        bound: timed(lambda: open_rgb(chunks)),
        "av.open per chunk, to_ndarray, PyAV defaults": timed(lambda: open_to_ndarray(chunks)),
        "av.open per chunk, YUV planes": timed(lambda: open_yuv(chunks, out)),
        "reused decoder, RGB": timed(lambda: reused_rgb(chunks)),
        "reused decoder, YUV planes": timed(lambda: reused_yuv(chunks, out)),
        "TrajectoryStore.read rgb, av.open (before)": timed(store_reads(gameplay, "rgb", False)),
        "TrajectoryStore.read rgb (reused decoder)": timed(store_reads(gameplay, "rgb", True)),
        "TrajectoryStore.read yuv420": timed(store_reads(gameplay, "yuv420", True)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        cases.update(ffmpeg_cases(chunks, tmp))
        try:
            import torchcodec.decoders  # noqa: F401

            cases["torchcodec, CPU, RGB"] = timed(lambda: torchcodec_rgb(chunks))
        except (ImportError, RuntimeError, OSError) as exc:
            print(f"[paths] torchcodec unavailable ({type(exc).__name__}): its row is left out")
        for name, noise in (("flat", 0.0), ("noise-8", 8.0)):
            other = chunks_of(ensure_dataset(data_dir / name, 4, 320, noise=noise))
            cases[f"{name} synthetic: av.open, RGB"] = timed(lambda other=other: open_rgb(other))
            cases[f"{name} synthetic: reused, YUV planes"] = timed(lambda other=other: reused_yuv(other, out))
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for run in cases.values():
            run()  # warm up once
        for _ in range(rounds):
            for name, run in cases.items():
                count, seconds = run()
                rates[name].append(count / seconds)
    base = float(np.median(rates[bound]))
    size = sum(map(len, chunks)) / (32 * len(chunks))
    print(
        f"[paths] {len(chunks)} gameplay-like 224x224 chunks of 32 frames ({size:,.0f} bytes/frame); "
        f"frames per CPU second, medians of {rounds} interleaved rounds (range), vs the PyAV bound:"
    )
    for name, values in rates.items():
        median = float(np.median(values))
        spread = f"{min(values):,.0f}-{max(values):,.0f}"
        print(f"  {name:45s} {median:7,.0f} ({spread:>13s}) {median / base:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resize-only", action="store_true", help="run only the resize case")
    parser.add_argument("--paths-only", action="store_true", help="run only the decode-path case")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the decode-path case")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-bench-store"))
    args = parser.parse_args()
    if not args.resize_only:
        paths_case(args.data_dir, args.rounds)
    if args.paths_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        with DatasetWriter(tmp, image_preset="veryfast") as writer:
            for index in range(args.episodes):
                writer.write(Episode(f"ep{index}", image=synthetic_frames(args.frames, index)))
        resize_case(tmp, args.repeats)
        for threads in () if args.resize_only else (1, 0):
            store = TrajectoryStore(tmp, modalities=("image",), decode_threads=threads)
            chunks = [
                store.raw_chunk(name, "image", start)
                for name in store.episodes
                for start in store.chunk_starts(name, "image")
            ]
            store_read(store)  # warm caches and LMDB pages once
            baseline = best_rate(
                lambda chunks=chunks, threads=threads: plain_pyav(chunks, threads), args.repeats
            )
            ours = best_rate(lambda store=store: store_read(store), args.repeats)
            label = "1 thread" if threads == 1 else "auto threads"
            print(
                f"[{label}] {len(chunks)} chunks of 224x224: plain PyAV {baseline:8.1f} frames/s, "
                f"TrajectoryStore.read {ours:8.1f} frames/s, ratio {ours / baseline:.3f}"
            )


if __name__ == "__main__":
    main()
