"""Bookkeeping at the published scale: datamodule setup, 8-rank batch plans, resume state, ``data inspect``.

Writes index-only datasets (the four bookkeeping keys per LMDB part, no chunks, see
``make_index_only.py``) at the contractor data's size (15,655 episodes, 160.5 M frames) and a tenth
of it, with log-normal episode lengths (a long tail, as in recorded play), and measures for
minetrain and the reference (its venv, /tmp/reference-venv), each in a child process of its own,
alternating implementations within each repetition:

- setup: seconds and RSS growth to build the datamodule and its train/val datasets (after imports);
- plan: seconds per rank to build one epoch's batches at 8 ranks x batch 8 x win_len 128 (ours
  ``EpisodeContinuousBatchSampler.plan``, the reference ``MineDistributedBatchSampler`` iterated);
- windows left out per epoch at those settings (and what minetrain's previous whole-episode plan
  left out: ``(ranks - 1)`` longest episodes and the rounding);
- checkpoint state: bytes of the pickled datamodule state a checkpoint holds (the reference has none:
  it cannot resume mid-epoch);
- ``minetrain data inspect``: seconds of the command after its imports (no reference counterpart).

Any chunk read fails on these datasets, so every figure is bookkeeping only. Medians of ``--reps``
repetitions with their ranges.

    python benchmarks/bench_index.py [--reps 3] [--no-reference] [--data-dir /tmp/minetrain-index] [--json F]
    python benchmarks/bench_index.py --quick      # one small size, one repetition: a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import REFERENCE_PYTHON, rss_mb, run_child
from make_index_only import write_index_only

RANKS, BATCH, WIN_LEN = 8, 8, 128
FULL_SIZES = {"160.5 M frames": (15_655, 160_500_000), "16 M frames": (1_565, 16_050_000)}
QUICK_SIZES = {"1 M frames": (100, 1_000_000)}


def ensure_index(root: Path, episodes: int, frames: int) -> Path:
    """The index-only dataset of this size under ``root`` (written once, reused)."""
    path = root / f"index-{episodes}-{frames}"
    done = path / "bench-complete"
    if not done.exists():
        start = time.perf_counter()
        write_index_only(path, episodes, frames, spread="lognormal")
        done.touch()
        print(
            f"wrote {path} ({episodes:,} episodes, {frames:,} frames) in {time.perf_counter() - start:.1f} s"
        )
    return path


def whole_episode_left_out(counts: list[int]) -> int:
    """Windows minetrain's previous plan (whole episodes per rank) left out per epoch."""
    total, longest = sum(counts), max(counts)
    per_rank = max(0, -(-(total - (RANKS - 1) * longest) // RANKS)) // BATCH
    return total - per_rank * BATCH * RANKS


def inspect_seconds(data: str) -> float:
    """Seconds ``minetrain data inspect DIR`` takes in this process, its imports excluded."""
    from minetrain.cli.main import main as cli

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        start = time.perf_counter()
        code = cli(["data", "inspect", data])
        seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"minetrain data inspect {data} exited with {code}")
    return seconds


def measure_ours(data: str) -> dict[str, Any]:
    from minetrain.data import MineDataModule
    from minetrain.data.sampler import EpisodeContinuousBatchSampler

    before = rss_mb()
    start = time.perf_counter()
    module = MineDataModule(
        data_params=dict(mode="raw", dataset_dirs=[data], win_len=WIN_LEN, enable_segment=True),
        batch_size=BATCH,
        split_ratio=0.9,
        shuffle_episodes=True,
        episode_continuous_batch=True,
    )
    module.setup("fit")
    setup_s = time.perf_counter() - start
    setup_mb = rss_mb() - before
    counts = module.train_dataset.window_counts
    plan_s, used = [], 0
    for rank in range(RANKS):
        start = time.perf_counter()
        sampler = EpisodeContinuousBatchSampler(counts, BATCH, num_replicas=RANKS, rank=rank)
        used += sampler.plan(0).size
        plan_s.append(time.perf_counter() - start)
    state = {"sampler": {**sampler.state_dict(consumed=len(sampler) // 2), "epoch": 0}}
    return {
        "setup_s": setup_s,
        "setup_mb": setup_mb,
        "plan_s": statistics.median(plan_s),
        "windows": int(sum(counts)),
        "left_out": int(sum(counts)) - used,
        "left_out_whole_episodes": whole_episode_left_out(list(counts)),
        "state_bytes": len(pickle.dumps(state)),
        "inspect_s": inspect_seconds(data),
    }


def measure_reference(data: str) -> dict[str, Any]:
    from minestudio.data import RawDataModule
    from minestudio.data.minecraft.callbacks import (
        ActionKernelCallback,
        ImageKernelCallback,
        SegmentationKernelCallback,
    )
    from minestudio.data.minecraft.utils import MineDistributedBatchSampler

    before = rss_mb()
    start = time.perf_counter()
    module = RawDataModule(
        data_params=dict(
            dataset_dirs=[data],
            modal_kernel_callbacks=[
                ImageKernelCallback(frame_width=224, frame_height=224, enable_video_aug=False),
                ActionKernelCallback(),
                SegmentationKernelCallback(frame_width=224, frame_height=224),
            ],
            win_len=WIN_LEN,
            split_ratio=0.9,
            shuffle_episodes=True,
        ),
        batch_size=BATCH,
        num_workers=0,
        episode_continuous_batch=True,
    )
    module.setup()
    setup_s = time.perf_counter() - start
    setup_mb = rss_mb() - before
    plan_s, used = [], 0
    for rank in range(RANKS):
        start = time.perf_counter()
        sampler = MineDistributedBatchSampler(module.train_dataset, BATCH, num_replicas=RANKS, rank=rank)
        used += sum(len(batch) for batch in sampler)
        plan_s.append(time.perf_counter() - start)
    windows = len(module.train_dataset)
    state = module.state_dict() if hasattr(module, "state_dict") else {}
    return {
        "setup_s": setup_s,
        "setup_mb": setup_mb,
        "plan_s": statistics.median(plan_s),
        "windows": windows,
        "left_out": windows - used,
        "state_bytes": len(pickle.dumps(state)) if state else 0,
    }


def spread(values: list[float], digits: int = 3) -> str:
    """``median (min-max)`` of repeated measurements."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}g}"
    return f"{med:.{digits}g} ({min(values):.{digits}g}-{max(values):.{digits}g})"


def report(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """One markdown table per size: a row per figure, a column per implementation."""
    lines = []
    for size, impls in results.items():
        ours = impls["minetrain"][0]
        has_ref = "reference" in impls
        lines += [
            f"**{size}** ({ours['windows']:,} train windows of {WIN_LEN} frames, "
            f"{RANKS} ranks x batch {BATCH})",
            "",
            "| measure | minetrain | reference |" if has_ref else "| measure | minetrain |",
            "|---|---|---|" if has_ref else "|---|---|",
        ]
        rows = [
            ("setup (datamodule + datasets), s", "setup_s"),
            ("setup RSS growth, MB", "setup_mb"),
            ("plan of one epoch, s per rank", "plan_s"),
        ]
        for label, key in rows:
            row = f"| {label} | {spread([r[key] for r in impls['minetrain']])} |"
            if has_ref:
                row += f" {spread([r[key] for r in impls['reference']])} |"
            lines.append(row)
        left = f"{ours['left_out']:,} ({100 * ours['left_out'] / ours['windows']:.3f}%)"
        before = ours["left_out_whole_episodes"]
        left += f"; whole-episode plan: {before:,} ({100 * before / ours['windows']:.2f}%)"
        inspect = spread([r["inspect_s"] for r in impls["minetrain"]])
        fixed = [
            ("windows left out per epoch", left),
            ("checkpoint state of the data order, bytes", str(ours["state_bytes"])),
            ("`minetrain data inspect`, s", inspect),
        ]
        ref_cells = []
        if has_ref:
            ref = impls["reference"][0]
            ref_cells = [
                f"{ref['left_out']:,} ({100 * ref['left_out'] / ref['windows']:.3f}%)",
                f"{ref['state_bytes']} (no mid-epoch resume)",
                "-",
            ]
        for i, (label, cell) in enumerate(fixed):
            lines.append(f"| {label} | {cell} |" + (f" {ref_cells[i]} |" if has_ref else ""))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one small size, one repetition")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-index"))
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, data = args.child
        print(json.dumps(measure_ours(data) if impl == "minetrain" else measure_reference(data)))
        return
    sizes, reps = (QUICK_SIZES, 1) if args.quick else (FULL_SIZES, args.reps)
    impls: dict[str, Path | str] = {"minetrain": sys.executable}
    if not args.no_reference:
        if REFERENCE_PYTHON.exists():
            impls["reference"] = REFERENCE_PYTHON
        else:
            print(
                f"no reference venv at {REFERENCE_PYTHON} (bash benchmarks/reference-venv.sh): minetrain only"
            )
    paths = {size: ensure_index(args.data_dir, *shape) for size, shape in sizes.items()}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        size: {name: [] for name in impls} for size in sizes
    }
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for _ in range(reps):
        for size, path in paths.items():
            for name, python in impls.items():
                value = run_child(python, __file__, ["--child", name, str(path)], f"{name} on {path}")
                results[size][name].append(value)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(
        f"Medians (min-max) of {reps} repetition(s), {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPU cores; "
        "index-only datasets with log-normal episode lengths (make_index_only.py --spread lognormal)."
    )


if __name__ == "__main__":
    main()
