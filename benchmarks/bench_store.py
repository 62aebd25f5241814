"""Image-chunk decode speed: TrajectoryStore.read vs plain PyAV on the same MP4 bytes.

Builds a small 224x224 synthetic dataset in a temporary dir, then decodes every image chunk both
ways in the same run and prints frames/s and the ratio (target >= 0.95). The baseline is what a
user would write by hand: open the bytes, decode, `to_ndarray(format="rgb24")`, stack.

The resize case reads the same chunks at 128x128 (the VPT configs' size), one decode thread, with
each ``resize_interpolation`` next to reading at the stored size: medians (and ranges) of
interleaved repetitions.

    python benchmarks/bench_store.py [--episodes 6] [--frames 160] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

import av
import numpy as np

from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resize-only", action="store_true", help="run only the resize case")
    args = parser.parse_args()
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
