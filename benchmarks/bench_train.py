"""End-to-end training speed and memory: loader + policy + MineLightning + Lightning on CPU.

The small configuration (efficientnet_b0, hiddim 256, 4 heads, 2 layers, timesteps = win_len = 32,
mem_len 32, batch 2, 224x224 frames, segmentation on, episode-continuous batches, the seed's
Trainer settings with devices=1) trained on a synthetic dataset, by minetrain and, when the
reference venv exists (/tmp/reference-venv), by the reference library on the same data in the same
run, each in its own subprocess. Printed per implementation:

- train steps/s over the timed steps (after warm-up), per wall second and per CPU second of the
  training process (at a fixed torch thread count; on a shared machine wall time also measures the
  neighbours);
- peak memory of the whole process tree (trainer + DataLoader workers), sampled every 50 ms as the
  sum of proportional set sizes (PSS: shared pages counted once), and the trainer's own peak RSS.

    python benchmarks/bench_train.py [--steps 8] [--warmup 2] [--workers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BATCH,
    CONFIG,
    REFERENCE_PYTHON,
    SIZE,
    WIN_LEN,
    PeakSampler,
    ensure_dataset,
    offline_timm,
    peak_rss_mb,
    run_child,
)


def datamodule(
    impl: str, data: str, workers: int, batch: int = BATCH, win_len: int = WIN_LEN, size: int = SIZE
) -> Any:
    """The train/val LightningDataModule of one implementation, segmentation on, episode-continuous."""
    prefetch = 2 if workers else None
    if impl == "ours":
        from minetrain.data import MineDataModule

        data_params = dict(
            mode="raw",
            dataset_dirs=[data],
            frame_width=size,
            frame_height=size,
            win_len=win_len,
            enable_segment=True,
        )
        return MineDataModule(
            data_params=data_params,
            batch_size=batch,
            num_workers=workers,
            prefetch_factor=prefetch,
            split_ratio=0.9,
            shuffle_episodes=True,
            episode_continuous_batch=True,
        )
    from minestudio.data import RawDataModule
    from minestudio.data.minecraft.callbacks import (
        ActionKernelCallback,
        ImageKernelCallback,
        SegmentationKernelCallback,
    )

    data_params = dict(
        dataset_dirs=[data],
        modal_kernel_callbacks=[
            ImageKernelCallback(frame_width=size, frame_height=size, enable_video_aug=False),
            ActionKernelCallback(),
            SegmentationKernelCallback(frame_width=size, frame_height=size),
        ],
        win_len=win_len,
        split_ratio=0.9,
        shuffle_episodes=True,
    )
    return RawDataModule(
        data_params=data_params,
        batch_size=batch,
        num_workers=workers,
        prefetch_factor=prefetch,
        episode_continuous_batch=True,
    )


def lightning_module(impl: str, config: dict = CONFIG) -> Any:
    """MineLightning around a RocketPolicy of ``config`` with the BC objective, as the seed builds it."""
    if impl == "ours":
        from minetrain.models import RocketPolicy
        from minetrain.offline import MineLightning
        from minetrain.offline.mine_callbacks import BehaviorCloneCallback
    else:
        offline_timm()
        from minestudio.models import RocketPolicy
        from minestudio.offline import MineLightning
        from minestudio.offline.mine_callbacks import BehaviorCloneCallback
    return MineLightning(
        mine_policy=RocketPolicy(**config),
        log_freq=20,
        learning_rate=4e-5,
        weight_decay=1e-3,
        warmup_steps=2000,
        callbacks=[BehaviorCloneCallback(weight=1.0)],
        hyperparameters={},
    )


def measure(
    impl: str,
    data: str,
    steps: int,
    warmup: int,
    workers: int,
    threads: int | None,
    precision: str,
    config: dict = CONFIG,
    size: int = SIZE,
) -> dict:
    """Run in a child process: train ``warmup + steps`` steps, time the last ``steps``.

    ``threads`` None leaves torch's default (one per core), as a user's run has it.
    """
    import lightning as L
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == warmup:
                self.start = (time.perf_counter(), time.process_time())
            if trainer.global_step == warmup + steps:
                self.end = (time.perf_counter(), time.process_time())

    sampler = PeakSampler()
    sampler.start()
    module = lightning_module(impl, config)
    data_module = datamodule(impl, data, workers, win_len=config["timesteps"], size=size)
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        strategy="ddp_find_unused_parameters_true",
        use_distributed_sampler=False,
        gradient_clip_val=1.0,
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, datamodule=data_module)
    tree_peak = sampler.stop()
    wall = clock.end[0] - clock.start[0]
    cpu = clock.end[1] - clock.start[1]
    return {
        "steps_per_wall_s": steps / wall,
        "steps_per_cpu_s": steps / cpu,
        "tree_peak_pss_mb": tree_peak,
        "trainer_peak_rss_mb": peak_rss_mb(),
    }


def _child(python: Path | str, impl: str, data: Path, args: argparse.Namespace) -> dict:
    cmd = ["--child", impl, "--data", str(data), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--workers", str(args.workers), "--threads", str(args.threads), "--precision", args.precision]
    return run_child(python, __file__, cmd, f"{impl} train benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the training process (0: torch's default)"
    )
    parser.add_argument("--precision", default="32", help="Trainer precision, e.g. 32 or bf16-mixed")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-bench-train"))
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        threads = args.threads or None
        result = measure(
            args.child, args.data, args.steps, args.warmup, args.workers, threads, args.precision
        )
        print(json.dumps(result))
        return

    data = ensure_dataset(args.data_dir, args.episodes, args.frames)
    print(
        f"config {CONFIG}, batch {BATCH}, win_len {WIN_LEN}, {SIZE}x{SIZE} frames, CPU, "
        f"precision {args.precision}, {args.threads or 'default'} torch thread(s), "
        f"{args.workers} loader worker(s), "
        f"{args.steps} timed steps after {args.warmup}"
    )
    results = {"minetrain": _child(sys.executable, "ours", data, args)}
    if REFERENCE_PYTHON.exists():
        results["reference"] = _child(REFERENCE_PYTHON, "reference", data, args)
    for name, r in results.items():
        print(
            f"{name:>10}: {r['steps_per_wall_s']:.3f} steps/wall-s, {r['steps_per_cpu_s']:.3f} steps/CPU-s, "
            f"peak memory {r['tree_peak_pss_mb']:.0f} MB (process tree PSS), "
            f"trainer peak RSS {r['trainer_peak_rss_mb']:.0f} MB"
        )
    if "reference" in results:
        ours, ref = results["minetrain"], results["reference"]
        print(
            f"     ratio: steps/s x{ours['steps_per_wall_s'] / ref['steps_per_wall_s']:.2f} (wall), "
            f"x{ours['steps_per_cpu_s'] / ref['steps_per_cpu_s']:.2f} (CPU); "
            f"peak memory x{ours['tree_peak_pss_mb'] / ref['tree_peak_pss_mb']:.2f} (tree PSS), "
            f"x{ours['trainer_peak_rss_mb'] / ref['trainer_peak_rss_mb']:.2f} (trainer RSS) "
            "(speed: >1 is faster; memory: <1 is smaller)"
        )


if __name__ == "__main__":
    main()
