"""Image-chunk decode speed: TrajectoryStore.read vs plain PyAV on the same MP4 bytes.

Builds a small 224x224 synthetic dataset in a temporary dir, then decodes every image chunk both
ways in the same run and prints frames/s and the ratio (target >= 0.95). The baseline is what a
user would write by hand: open the bytes, decode, `to_ndarray(format="rgb24")`, stack.

The resize case reads the same chunks at 128x128 (the VPT configs' size), one decode thread, with
each ``resize_interpolation`` next to reading at the stored size: medians (and ranges) of
interleaved repetitions.

The decode-path case (``--paths-only``) is issue 21's table, each row as it reads, on
gameplay-like chunks (``common.gameplay_frames``, 224x224, 32-frame chunks): ``av.open`` per chunk
+ decode + ``to_ndarray("rgb24")`` with PyAV's defaults (row 1, the issue's bound), the same with
the frames left as I420 planes, one reused ``av.CodecContext`` fed pre-demuxed packets (RGB, then
planes), the ffmpeg command line (decode only, to rgb24) and torchcodec when installed, then the
loader's method when the issue was filed (``av.open`` per chunk, one reused scaler, one thread) and
``TrajectoryStore.read`` with each ``image_format``; flat synthetic chunks through row 1 for scale.
Everything runs pinned to one core (``one_core``: decoder and scaler threads share it): frames/s on
that core and frames per CPU second, each round's median of interleaved passes and the range.

    python benchmarks/bench_store.py [--episodes 6] [--frames 160] [--repeats 3] [--paths-only]
        [--rounds 2] [--passes 5] [--cpu N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from common import ensure_dataset

from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.codecs import iter_video_frames
from minetrain.data.store.decoder import ReusedDecoder, StreamParams, mp4_packets


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


@contextlib.contextmanager
def one_core(cpu: int | None = None) -> Iterator[int]:
    """Pin this process (and what it starts meanwhile) to one CPU, the last allowed by default.

    Any decoder or scaler threads then share that core, so a rate is what one core delivers.
    """
    allowed = os.sched_getaffinity(0)
    chosen = max(allowed) if cpu is None else cpu
    os.sched_setaffinity(0, {chosen})
    try:
        yield chosen
    finally:
        os.sched_setaffinity(0, allowed)


def to_ndarray_rgb(chunks: list[bytes]) -> int:
    """Issue 21's row 1: ``av.open`` per chunk, decode, ``frame.to_ndarray("rgb24")``, PyAV defaults."""
    count = 0
    for data in chunks:
        with av.open(io.BytesIO(data)) as container:
            count += sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24").size)
    return count


def to_ndarray_yuv(chunks: list[bytes]) -> int:
    """Row 1 with the frames left as I420 planes: ``frame.to_ndarray()`` of a yuv420p frame."""
    count = 0
    for data in chunks:
        with av.open(io.BytesIO(data)) as container:
            count += sum(1 for frame in container.decode(video=0) if frame.to_ndarray().size)
    return count


def old_loader_method(chunks: list[bytes], size: tuple[int, int] | None = None) -> int:
    """The loader's method when issue 21 was filed: ``av.open`` per chunk, one reused scaler, 1 thread."""
    return sum(1 for data in chunks for _ in iter_video_frames(data, size, reuse_decoder=False))


def demuxed(chunks: list[bytes]) -> list[tuple[StreamParams, list[bytes]]]:
    found = [mp4_packets(data) for data in chunks]
    if any(packets is None for packets in found):
        raise SystemExit("a benchmark chunk is not a plain one-track MP4")
    return found  # type: ignore[return-value]


def reused_context(packets: list[tuple[StreamParams, list[bytes]]], rgb: bool) -> Callable[[], int]:
    """One reused ``av.CodecContext`` fed pre-demuxed packets, ``to_ndarray`` RGB or I420 planes."""
    decoder = ReusedDecoder()
    fmt = "rgb24" if rgb else None

    def run() -> int:
        return sum(
            1
            for params, chunk in packets
            for frame in decoder.decode(params, chunk)
            if frame.to_ndarray(format=fmt).size
        )

    return run


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg_cli(listing: Path, count: int, rgb: bool) -> Callable[[], int]:
    """The ffmpeg command line (its defaults) decoding every chunk (concat demuxer), to null or rgb24."""
    output = ["-pix_fmt", "rgb24", "-f", "rawvideo", "-y", os.devnull] if rgb else ["-f", "null", "-"]
    command = ["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), *output]

    def run() -> int:
        subprocess.run(command, check=True)
        return count

    return run


def torchcodec_rgb(chunks: list[bytes]) -> int:
    from torchcodec.decoders import VideoDecoder

    count = 0
    for data in chunks:
        decoder = VideoDecoder(data, device="cpu", seek_mode="approximate")
        count += len(decoder.get_frames_in_range(0, len(decoder)).data)
    return count


def chunks_of(path: Path) -> list[bytes]:
    store = TrajectoryStore(path, modalities=("image",))
    return [store.raw_chunk(e, "image", s) for e in store.episodes for s in store.chunk_starts(e, "image")]


def store_reads(path: Path, image_format: str) -> Callable[[], int]:
    """``TrajectoryStore.read`` of every episode into one reused buffer, as the loader reads."""
    store = TrajectoryStore(path, modalities=("image",), image_format=image_format)
    longest, (height, width) = max(store.episodes.values()), store.image_resolution()
    shape = (longest, height, width, 3) if image_format == "rgb" else (longest, height * 3 // 2, width)
    out = np.empty(shape, np.uint8)
    return lambda: sum(len(store.read(e, "image", 0, n, out=out[:n])) for e, n in store.episodes.items())


def ffmpeg_cases(chunks: list[bytes], tmp: str) -> dict[str, Callable[[], int]]:
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
        "ffmpeg command line, decode only": ffmpeg_cli(listing, frames, rgb=False),
        "ffmpeg command line, to rgb24": ffmpeg_cli(listing, frames, rgb=True),
    }


def torchcodec_case(chunks: list[bytes]) -> dict[str, Callable[[], int]]:
    try:
        import torchcodec
        import torchcodec.decoders
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"[paths] torchcodec unavailable ({type(exc).__name__}: {exc}): its row is left out")
        return {}
    return {f"torchcodec {torchcodec.__version__.split('+')[0]} on CPU, RGB": lambda: torchcodec_rgb(chunks)}


def measure(fn: Callable[[], int]) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second of this process and the children it waited for)."""
    wall, cpu, children = time.perf_counter(), time.process_time(), children_cpu()
    frames = fn()
    cpu = time.process_time() - cpu + children_cpu() - children
    return frames / (time.perf_counter() - wall), frames / cpu


ROW_1 = 'av.open per chunk + decode + to_ndarray("rgb24") (the issue\'s bound)'
OLD_METHOD = "av.open per chunk, one reused scaler, 1 thread (the old loader)"


def summary(rounds: list[list[float]]) -> str:
    """Each round's median, then the range over every pass: "2,168 / 2,208 (2,101-2,250)"."""
    every = [value for values in rounds for value in values]
    medians = " / ".join(f"{statistics.median(values):,.0f}" for values in rounds)
    return f"{medians} ({min(every):,.0f}-{max(every):,.0f})"


def paths_case(data_dir: Path, rounds: int, passes: int, cpu: int | None) -> None:
    """Issue 21's table, row by row as it reads, on one core: medians of interleaved passes per round."""
    gameplay = ensure_dataset(data_dir / "gameplay", 4, 320, gameplay=True)
    chunks = chunks_of(gameplay)
    flat = chunks_of(ensure_dataset(data_dir / "flat", 4, 320))
    packets = demuxed(chunks)
    cases: dict[str, Callable[[], int]] = {
        ROW_1: lambda: to_ndarray_rgb(chunks),
        "same, frames left as YUV planes (to_ndarray())": lambda: to_ndarray_yuv(chunks),
        "reused CodecContext, pre-demuxed packets, RGB": reused_context(packets, rgb=True),
        "reused CodecContext, pre-demuxed packets, YUV planes": reused_context(packets, rgb=False),
    }
    with tempfile.TemporaryDirectory() as tmp:
        cases.update(ffmpeg_cases(chunks, tmp))
        cases.update(torchcodec_case(chunks))
        cases[OLD_METHOD] = lambda: old_loader_method(chunks)
        cases["TrajectoryStore.read, image_format rgb"] = store_reads(gameplay, "rgb")
        cases["TrajectoryStore.read, image_format yuv420"] = store_reads(gameplay, "yuv420")
        cases["flat synthetic chunks: row 1 (for scale)"] = lambda: to_ndarray_rgb(flat)
        results: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in cases}
        with one_core(cpu) as core:
            for _ in range(rounds):
                for run in cases.values():
                    run()  # warm up
                for name in cases:
                    results[name].append([])
                for _ in range(passes):
                    for name, run in cases.items():
                        results[name][-1].append(measure(run))
    size = sum(map(len, chunks)) / (32 * len(chunks))
    median = statistics.median
    print(
        f"[paths] {len(chunks)} gameplay-like 224x224 chunks of 32 frames ({size:,.0f} bytes/frame), "
        f"pinned to CPU {core}: frames/s on that core and frames per CPU second, median of each round "
        f"of {passes} interleaved passes (range over all {rounds * passes}); ratios of the overall medians"
    )
    header = f"  {'path':70s} {'frames/s per core':>30s} {'frames per CPU-s':>30s}"
    print(f"{header} {'vs row 1 (wall/CPU)':>19s} {'vs old (wall/CPU)':>17s}")
    walls = {name: [[w for w, _ in passes_] for passes_ in rows] for name, rows in results.items()}
    cpus = {name: [[c for _, c in passes_] for passes_ in rows] for name, rows in results.items()}
    wall_all = {name: median(v for values in rounds_ for v in values) for name, rounds_ in walls.items()}
    cpu_all = {name: median(v for values in rounds_ for v in values) for name, rounds_ in cpus.items()}
    for name in results:
        versus = [
            f"{wall_all[name] / wall_all[base]:.2f}/{cpu_all[name] / cpu_all[base]:.2f}x"
            for base in (ROW_1, OLD_METHOD)
        ]
        rates = f"{summary(walls[name]):>30s} {summary(cpus[name]):>30s}"
        print(f"  {name:70s} {rates} {versus[0]:>19s} {versus[1]:>17s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resize-only", action="store_true", help="run only the resize case")
    parser.add_argument("--paths-only", action="store_true", help="run only the decode-path case")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the decode-path case")
    parser.add_argument("--passes", type=int, default=5, help="interleaved passes per round")
    parser.add_argument("--cpu", type=int, help="the CPU the decode-path case runs on (default: the last)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-bench-store"))
    args = parser.parse_args()
    if not args.resize_only:
        paths_case(args.data_dir, args.rounds, args.passes, args.cpu)
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
