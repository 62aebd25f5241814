"""Image-chunk decode speed: TrajectoryStore.read vs plain PyAV on the same MP4 bytes.

Builds a small 224x224 synthetic dataset in a temporary dir, then decodes every image chunk both
ways in the same run and prints frames/s and the ratio (target >= 0.95). The baseline is what a
user would write by hand: open the bytes, decode, `to_ndarray(format="rgb24")`, stack.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with DatasetWriter(tmp, image_preset="veryfast") as writer:
            for index in range(args.episodes):
                writer.write(Episode(f"ep{index}", image=synthetic_frames(args.frames, index)))
        for threads in (1, 0):
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
