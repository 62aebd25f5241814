"""Frames/s the train DataLoader of ``MineDataModule`` delivers, against the decode-only bound.

The bound is single-threaded PyAV decoding (with RGB conversion at 224x224) of exactly the image
chunks the train split holds, measured in the same run; the loader figures use the seed's data
block (224x224, win_len 128, segmentation on, episode-continuous batches), in the steady state of
a second epoch (``loader_rate``). Targets on a 2-core machine: >= 85% of the bound with
num_workers=0 and >= 1.6x the num_workers=0 figure with 2. A third figure, ``batch_floor``, is
reading the same chunks, decoding them into batch memory and writing the batch's condition-mask
memory, and nothing else: the part of the gap to the bound that any loader of this batch format
pays on this machine, whatever it does besides.

Two synthetic datasets by default: the plain one (flat colours, which decode 3-5x faster than
gameplay) and one with pixel noise that decodes at about the speed of real 224x224 chunks.
Run: ``python benchmarks/bench_loader.py [--data-dir DIR] [--noise 0 8] [--rounds 3]``. The
datasets are written once under ``--data-dir`` and reused.

``--shared-memory`` compares instead the two hand-overs from workers (``shared_batch_ring`` true:
the batch ring, false: torch's own shared memory per batch) at batch 8, 2 workers,
prefetch_factor 4: frames/s and the peak ``/dev/shm`` bytes the loader's processes hold (sampled
every 20 ms), for a consumer that drops each batch before the next and for one that keeps the
previous batch, as Lightning's fit loop does.

``--formats`` compares ``image_format`` rgb and yuv420 (batch 8, workers 0 pinned to one core and 2
unpinned) on gameplay-like data (``common.gameplay_frames``) against two one-core decode-only bounds:
issue 21's row 1 (``av.open`` per chunk, ``to_ndarray("rgb24")``) and the loader's method before the
reused decoder (``av.open`` per chunk, one reused scaler): ``bench_loader.py --formats --noise``.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench_store import OLD_METHOD, ROW_1, old_loader_method, one_core, to_ndarray_rgb
from common import SIZE, ensure_dataset

from minetrain.data import MineDataModule
from minetrain.data.buffers import private_uint8
from minetrain.data.shm import batch_bytes, process_tree, shared_memory_held, shared_memory_need
from minetrain.data.store import TrajectoryStore
from minetrain.data.store.codecs import iter_video_frames

WIN_LEN = 128


def _decode(chunks: list[bytes], clock: Callable[[], float] = time.perf_counter) -> tuple[int, float]:
    start = clock()
    # av.open per chunk, as the loader decoded before it kept one decoder: today's PyAV bound.
    frames = sum(1 for data in chunks for _ in iter_video_frames(data, (SIZE, SIZE), reuse_decoder=False))
    return frames, clock() - start


def decode_bound(path: Path, episodes: list[str], processes: int = 1, cpu: bool = False) -> float:
    """Frames/s of decoding every image chunk of ``episodes`` and nothing else, in ``processes``.

    With several processes (each one thread, chunks dealt round-robin) it is the ceiling for the
    same number of DataLoader workers on this machine at this moment. ``cpu``: frames per CPU
    second of one process instead (what other processes on a shared machine do not change).
    """
    store = TrajectoryStore([path], modalities=("image",))
    chunks = [store.raw_chunk(e, "image", s) for e in episodes for s in store.chunk_starts(e, "image")]
    if processes == 1:
        frames, seconds = _decode(chunks, time.process_time if cpu else time.perf_counter)
        return frames / seconds
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        results = pool.map(_decode, [chunks[i::processes] for i in range(processes)])
    return sum(frames for frames, _ in results) / max(seconds for _, seconds in results)


def batch_floor(path: Path, episodes: list[str], batch_size: int) -> float:
    """Frames/s of the work no loader can skip: decode each window into batch memory, write its masks.

    Windows of ``WIN_LEN`` frames, ``batch_size`` to a batch. As the loader does, every window's
    frames are decoded first, then every window's condition-mask memory is written (zeros here:
    the batch holds ``obj_mask`` whatever the masks are), into the same batch-sized buffers each
    batch (the consumer has dropped the previous batch, see ``drain``), in the second of two passes
    like ``loader_rate``. No actions, segmentation or conditioning are read. Next to the
    decode-only bound it shows what reading chunks and writing a batch's frames and masks into
    memory last touched a batch ago cost on this machine; next to the loader, what the loader adds
    beyond that.
    """
    store = TrajectoryStore([path], modalities=("image",))
    windows = [(e, s) for e in episodes for s in range(0, store.episodes[e], WIN_LEN)]
    batch = private_uint8((batch_size, WIN_LEN, SIZE, SIZE, 3)).numpy()
    masks = private_uint8((batch_size, WIN_LEN, SIZE, SIZE)).numpy()
    for _ in range(2):  # the first pass faults the buffers in
        start, frames = time.perf_counter(), 0
        for first in range(0, len(windows), batch_size):
            rows = windows[first : first + batch_size]
            for row, (episode, window_start) in enumerate(rows):
                stop = min(window_start + WIN_LEN, store.episodes[episode])
                out = batch[row, : stop - window_start]
                store.read(episode, "image", window_start, stop, size=(SIZE, SIZE), out=out)
                frames += len(out)
            masks[: len(rows)] = 0
    return frames / (time.perf_counter() - start)


def make_module(
    path: Path, batch_size: int, workers: int, ring: bool = True, image_format: str = "rgb"
) -> MineDataModule:
    return MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(path)],
            frame_width=SIZE,
            frame_height=SIZE,
            win_len=WIN_LEN,
            enable_segment=True,
            image_format=image_format,
        ),
        batch_size=batch_size,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        split_ratio=0.95,
        shuffle_episodes=True,
        episode_continuous_batch=True,
        shared_batch_ring=ring,
    )


def real_frames(batch: dict) -> int:
    # Counted with numpy on the tensor's memory, the cheapest way, so the count adds next to nothing.
    return int(batch["mask"].numpy().sum())


def drain(iterator: Iterator[dict]) -> int:
    """Real frames of the remaining batches, each dropped before the next is fetched.

    As Lightning's fit loop consumes a DataLoader with a length: it fetches the next batch only
    once the step is done with the last one, and holds none meanwhile (every training step of a
    ``num_workers=0`` run gets the same batch memory back), so the loader can reuse that memory.
    """
    frames = 0
    while (batch := next(iterator, None)) is not None:
        frames += real_frames(batch)
        del batch
    return frames


def loader_rate(
    path: Path, batch_size: int, workers: int, image_format: str = "rgb", reuse_decoder: bool = True
) -> tuple[float, float, float]:
    """(frames/s of the second epoch after its first batch, frames/s of the first epoch in full,
    frames per CPU second of this process in the second epoch: the loader's cost with workers=0).

    The second epoch is the steady state a training run lives in: batch buffers and worker slots
    are allocated and faulted in during the first (a one-off of about 2 batches; Lightning keeps
    the train DataLoader, its buffers and its persistent workers across epochs). Each batch is
    dropped once counted, before the next is fetched (``drain``). ``reuse_decoder=False``: the
    loader's stores open every chunk with ``av.open``, as before the reused decoder.
    """
    module = make_module(path, batch_size, workers, image_format=image_format)
    module.setup()
    module.train_dataset.store.reuse_decoder = reuse_decoder
    loader = module.train_dataloader()
    if len(loader) < 3:  # the first batch is left out of the steady state: too few leave nothing to time
        raise SystemExit(
            f"bench_loader: {path} gives {len(loader)} batch(es) of {batch_size} windows per epoch; "
            "timing needs at least 3: raise --episodes or --frames"
        )
    rates = []
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        start = time.perf_counter()
        iterator = iter(loader)
        first = real_frames(next(iterator))
        warm, warm_cpu = time.perf_counter(), time.process_time()
        steady = drain(iterator)
        end, cpu = time.perf_counter(), time.process_time() - warm_cpu
        rates.append((steady / (end - warm), (steady + first) / (end - start), steady / cpu))
    return rates[1][0], rates[0][1], rates[1][2]


def report(path: Path, rounds: int) -> None:
    """Per dataset: the bounds, the batch-memory floor, and each loader configuration against them."""
    module = make_module(path, 1, 0)
    module.setup()
    train = module.train_dataset.episodes
    configs = [(batch_size, workers) for batch_size in (2, 8) for workers in (0, 2)]
    rates: dict[tuple[int, int], list[float]] = {config: [] for config in configs}
    ratios: dict[tuple[int, int], list[float]] = {config: [] for config in configs}
    cold: dict[tuple[int, int], list[float]] = {config: [] for config in configs}
    bounds: dict[int, list[float]] = {1: [], 2: []}
    floors: dict[int, list[float]] = {batch_size: [] for batch_size, _ in configs}
    for _ in range(rounds):
        for batch_size, workers in configs:
            # The bound for as many processes as the loader uses, measured right before and right
            # after it and averaged: this machine's speed drifts by tens of percent within minutes.
            processes = max(1, workers)
            before = decode_bound(path, train, processes)
            floor = batch_floor(path, train, batch_size) if not workers else None
            steady, first_epoch, _ = loader_rate(path, batch_size, workers)
            bound = (before + decode_bound(path, train, processes)) / 2
            if floor is not None:
                floors[batch_size].append(floor / bound)
            cold[(batch_size, workers)].append(first_epoch)
            bounds[processes].append(bound)
            rates[(batch_size, workers)].append(steady)
            ratios[(batch_size, workers)].append(steady / bound)
    median = statistics.median
    for processes, values in bounds.items():
        print(
            f"decode-only bound, {processes} process(es): median {median(values):,.0f} frames/s "
            f"(range {min(values):,.0f}-{max(values):,.0f})"
        )
    for batch_size, values in floors.items():
        print(
            f"read + decode into batch memory + write mask memory (nothing else), batch {batch_size}: "
            f"median {median(values):.0%} of the 1-process bound (range {min(values):.0%}-{max(values):.0%})"
        )
    print(
        f"{'batch':>5} {'workers':>7} {'frames/s':>9} {'vs bound':>8} {'range':>9} "
        f"{'vs w=0':>7} {'epoch 1':>8}"
        f"   (medians of {rounds} rounds, range over them; workers=2 against the 2-process bound;"
        " epoch 1 = the first epoch in full, start-up included)"
    )
    for batch_size, workers in configs:
        speedup = [w / b for w, b in zip(rates[(batch_size, workers)], rates[(batch_size, 0)], strict=True)]
        ratio = ratios[(batch_size, workers)]
        print(
            f"{batch_size:>5} {workers:>7} {median(rates[(batch_size, workers)]):>9,.0f} "
            f"{median(ratio):>8.0%} {f'{min(ratio):.0%}-{max(ratio):.0%}':>9} {median(speedup):>6.2f}x "
            f"{median(cold[(batch_size, workers)]):>8,.0f}"
        )


class PeakSharedMemory:
    """The most ``/dev/shm`` bytes this process and its children held, sampled in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, shared_memory_held(process_tree()))

    def __enter__(self) -> PeakSharedMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def hand_over_rate(path: Path, ring: bool, keep: bool) -> tuple[float, int, int]:
    """(frames/s of the second epoch, peak /dev/shm bytes over both, batches that missed a ring slot).

    ``keep``: the consumer keeps the previous batch while fetching the next, so two are alive as in
    Lightning's fit loop (the batch of the step and the one its fetcher took ahead); else it drops
    each batch first.
    """
    loader = make_module(path, 8, 2, ring).train_dataloader()
    with PeakSharedMemory() as peak:
        for epoch in range(2):
            loader.batch_sampler.set_epoch(epoch)
            previous = None
            iterator = iter(loader)
            batch = next(iterator)
            start, frames = time.perf_counter(), 0
            while batch is not None:
                previous = batch if keep else None
                del batch
                batch = next(iterator, None)
                frames += real_frames(batch) if batch is not None else 0
            rate = frames / (time.perf_counter() - start)
            del previous, iterator
    fallbacks = int(loader.batch_ring.fallbacks.sum()) if loader.batch_ring is not None else -1
    del loader
    return rate, peak.peak, fallbacks


def shared_memory_report(path: Path, rounds: int) -> None:
    """Both hand-overs, interleaved (order alternating per round), medians with ranges."""
    module = make_module(path, 8, 2)
    module.setup()
    per_batch = batch_bytes(module.train_dataset.batch_shapes(8))
    bound = shared_memory_need(per_batch, 2, 4)
    print(
        f"batch 8 x {WIN_LEN} x {SIZE}^2 (+ masks) = {per_batch / 2**20:.0f} MiB; ring: 2 workers x "
        f"prefetch_factor 4 = {8 * per_batch / 2**20:.0f} MiB; the check's need (+2 held): "
        f"{bound / 2**20:.0f} MiB"
    )
    results: dict[tuple[bool, bool], list[tuple[float, int, int]]] = collections.defaultdict(list)
    for round_ in range(rounds):
        for keep in (False, True):
            for ring in (True, False) if round_ % 2 == 0 else (False, True):
                results[(keep, ring)].append(hand_over_rate(path, ring, keep))
    median = statistics.median
    print(
        f"{'consumer':>18} {'hand-over':>9} {'frames/s':>9} {'range':>13} {'ring/torch':>10} "
        f"{'peak shm MiB':>12} {'range':>11} {'fallbacks':>9}   (medians of {rounds} interleaved rounds)"
    )
    for keep in (False, True):
        for ring in (True, False):
            runs = results[(keep, ring)]
            rates, peaks = [r for r, _, _ in runs], [p / 2**20 for _, p, _ in runs]
            ratio = [a[0] / b[0] for a, b in zip(results[(keep, True)], results[(keep, False)], strict=True)]
            print(
                f"{'keeps previous' if keep else 'drops each batch':>18} {'ring' if ring else 'torch':>9} "
                f"{median(rates):>9,.0f} {f'{min(rates):,.0f}-{max(rates):,.0f}':>13} "
                f"{f'{median(ratio):.2f}x' if ring else '':>10} {median(peaks):>12,.0f} "
                f"{f'{min(peaks):,.0f}-{max(peaks):,.0f}':>11} "
                f"{median(f for _, _, f in runs) if ring else '-':>9}"
            )


def bound_rates(chunks: list[bytes]) -> dict[str, tuple[float, float]]:
    """(frames/s, frames per CPU second) of issue 21's row 1 and of the old loader method, this process."""
    rates = {}
    for name, decode in ((ROW_1, to_ndarray_rgb), (OLD_METHOD, old_loader_method)):
        wall, cpu = time.perf_counter(), time.process_time()
        frames = decode(chunks)
        rates[name] = (frames / (time.perf_counter() - wall), frames / (time.process_time() - cpu))
    return rates


def formats_report(path: Path, rounds: int, batch_size: int = 8, cpu: int | None = None) -> None:
    """Loader frames/s with each ``image_format``, against issue 21's row 1 and the old loader method.

    workers=0 runs pinned to one core (``bench_store.one_core``), as do both decode-only bounds
    (the train split's image chunks, measured right before each loader run): frames/s on that core
    and frames per CPU second, each as a ratio to the bounds'. workers=2 runs unpinned, for
    information, against the same one-core bounds. ``rgb, av.open`` is the loader as it decoded
    before the reused decoder (``reuse_decoder=False``).
    """
    module = make_module(path, 1, 0)
    module.setup()
    store, train = module.train_dataset.store, module.train_dataset.episodes
    chunks = [store.raw_chunk(e, "image", s) for e in train for s in store.chunk_starts(e, "image")]
    before = "rgb, av.open"
    configs = [(before, 0), ("rgb", 0), ("yuv420", 0), ("rgb", 2), ("yuv420", 2)]
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {config: [] for config in configs}
    bounds: dict[tuple[str, int], list[dict[str, tuple[float, float]]]] = {config: [] for config in configs}
    for _ in range(rounds):
        for config in configs:
            label, workers = config
            with one_core(cpu) as core:
                bounds[config].append(bound_rates(chunks))
                if not workers:
                    image_format = "rgb" if label == before else label
                    steady, _, per_cpu = loader_rate(path, batch_size, 0, image_format, label != before)
            if workers:
                steady, _, per_cpu = loader_rate(path, batch_size, workers, label)
            rates[config].append((steady, per_cpu))
    median = statistics.median

    def spread(values: list[float], digits: str = ",.0f") -> str:
        return f"{median(values):{digits}} ({min(values):{digits}}-{max(values):{digits}})"

    every = [b for config in configs for b in bounds[config]]
    print(
        f"loader batch {batch_size}, win_len {WIN_LEN}, segmentation on; {len(chunks)} train chunks; "
        f"workers=0 and the bounds pinned to CPU {core}, workers=2 unpinned; medians (ranges) of {rounds} "
        "rounds; ratios to the bounds measured right before each loader run"
    )
    for name in (ROW_1, OLD_METHOD):
        walls, cpus = [b[name][0] for b in every], [b[name][1] for b in every]
        print(f"  bound {name}: {spread(walls)} frames/s, {spread(cpus)} frames per CPU-s")
    print(
        f"  {'image_format':>12} {'workers':>7} {'frames/s':>22} {'vs row 1':>18} {'vs old':>18}"
        f" {'per CPU-s vs row 1':>18} {'per CPU-s vs old':>18}"
    )
    for config in configs:
        runs, marks = rates[config], bounds[config]
        columns = [spread([wall for wall, _ in runs])]
        for index in (0, 1) if not config[1] else (0,):
            for name in (ROW_1, OLD_METHOD):
                ratios = [run[index] / mark[name][index] for run, mark in zip(runs, marks, strict=True)]
                columns.append(spread(ratios, ".2f"))
        print(f"  {config[0]:>12} {config[1]:>7} " + " ".join(f"{column:>18}" for column in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-bench-loader"))
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--frames", type=int, default=5 * WIN_LEN, help="frames per episode")
    parser.add_argument(
        "--noise", type=float, nargs="*", default=[0.0, 8.0], help="pixel noise std per dataset"
    )
    parser.add_argument("--formats", action="store_true", help="compare image_format rgb and yuv420")
    parser.add_argument("--cpu", type=int, help="the CPU --formats pins workers=0 to (default: the last)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved repetitions (the machine may be shared)"
    )
    parser.add_argument(
        "--shared-memory", action="store_true", help="compare the batch ring with torch's hand-over"
    )
    args = parser.parse_args()
    for noise in args.noise:
        print(f"\n== synthetic {SIZE}x{SIZE}, pixel noise {noise:g} ==")
        path = ensure_dataset(args.data_dir / f"noise-{noise:g}", args.episodes, args.frames, noise=noise)
        (shared_memory_report if args.shared_memory else report)(path, args.rounds)
    if args.formats:
        print(f"\n== gameplay-like {SIZE}x{SIZE}: image_format rgb and yuv420 ==")
        path = ensure_dataset(args.data_dir / "gameplay", args.episodes, args.frames, gameplay=True)
        formats_report(path, args.rounds, cpu=args.cpu)


if __name__ == "__main__":
    main()
