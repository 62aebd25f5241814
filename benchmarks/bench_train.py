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
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CONFIG = {
    "backbone": "efficientnet_b0.ra_in1k",
    "hiddim": 256,
    "num_heads": 4,
    "num_layers": 2,
    "timesteps": 32,
    "mem_len": 32,
}
BATCH, SIZE, WIN_LEN = 2, 224, 32
REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")


def ensure_dataset(path: Path, episodes: int, frames: int) -> Path:
    """The synthetic dataset (written once and reused)."""
    done = path / "bench-complete"
    if not done.exists():
        from minetrain.data.synth import write_synthetic_dataset

        write_synthetic_dataset(path, episodes=episodes, frames=frames, size=SIZE, seed=0)
        done.touch()
    return path


def _tree_pss_mb(root: int) -> float:
    """Sum of PSS (RSS where PSS is unreadable) of ``root`` and all its descendants, in MB."""
    pids, total = [root], 0.0
    while pids:
        pid = pids.pop()
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            fields = {line.split(":")[0]: line.split()[1] for line in rollup if ":" in line}
            total += int(fields.get("Pss", fields.get("Rss", 0))) / 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return total


class PeakSampler(threading.Thread):
    """Samples the process tree's memory until stopped; ``peak`` is the largest sample."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _tree_pss_mb(os.getpid()))
            time.sleep(0.05)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


def _parts(impl: str, data: str, workers: int) -> tuple[Any, Any, list]:
    """(LightningModule, LightningDataModule, objective list) of one implementation."""
    if impl == "ours":
        from minetrain.data import MineDataModule
        from minetrain.models import RocketPolicy
        from minetrain.offline import MineLightning
        from minetrain.offline.mine_callbacks import BehaviorCloneCallback

        data_params = dict(
            mode="raw",
            dataset_dirs=[data],
            frame_width=SIZE,
            frame_height=SIZE,
            win_len=WIN_LEN,
            enable_segment=True,
        )
        datamodule = MineDataModule(
            data_params=data_params,
            batch_size=BATCH,
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            split_ratio=0.9,
            shuffle_episodes=True,
            episode_continuous_batch=True,
        )
    else:
        import timm

        create = timm.create_model
        # The reference asks timm for pretrained weights (a download); the benchmark needs none.
        timm.create_model = lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw)
        from minestudio.data import RawDataModule
        from minestudio.data.minecraft.callbacks import (
            ActionKernelCallback,
            ImageKernelCallback,
            SegmentationKernelCallback,
        )
        from minestudio.models import RocketPolicy
        from minestudio.offline import MineLightning
        from minestudio.offline.mine_callbacks import BehaviorCloneCallback

        data_params = dict(
            dataset_dirs=[data],
            modal_kernel_callbacks=[
                ImageKernelCallback(frame_width=SIZE, frame_height=SIZE, enable_video_aug=False),
                ActionKernelCallback(),
                SegmentationKernelCallback(frame_width=SIZE, frame_height=SIZE),
            ],
            win_len=WIN_LEN,
            split_ratio=0.9,
            shuffle_episodes=True,
        )
        datamodule = RawDataModule(
            data_params=data_params,
            batch_size=BATCH,
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            episode_continuous_batch=True,
        )
    module = MineLightning(
        mine_policy=RocketPolicy(**CONFIG),
        log_freq=20,
        learning_rate=4e-5,
        weight_decay=1e-3,
        warmup_steps=2000,
        callbacks=[BehaviorCloneCallback(weight=1.0)],
        hyperparameters={},
    )
    return module, datamodule


def measure(
    impl: str, data: str, steps: int, warmup: int, workers: int, threads: int, precision: str
) -> dict:
    """Run in a child process: train ``warmup + steps`` steps, time the last ``steps``."""
    import lightning as L
    import torch

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
    module, datamodule = _parts(impl, data, workers)
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
    trainer.fit(module, datamodule=datamodule)
    tree_peak = sampler.stop()
    wall = clock.end[0] - clock.start[0]
    cpu = clock.end[1] - clock.start[1]
    return {
        "steps_per_wall_s": steps / wall,
        "steps_per_cpu_s": steps / cpu,
        "tree_peak_pss_mb": tree_peak,
        "trainer_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(python: Path | str, impl: str, data: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [str(python), __file__, "--child", impl, "--data", str(data)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--workers", str(args.workers), "--threads", str(args.threads), "--precision", args.precision]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{impl} benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--precision", default="32", help="Trainer precision, e.g. 32 or bf16-mixed")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-bench-train"))
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(
            args.child, args.data, args.steps, args.warmup, args.workers, args.threads, args.precision
        )
        print(json.dumps(result))
        return

    data = ensure_dataset(args.data_dir, args.episodes, args.frames)
    print(
        f"config {CONFIG}, batch {BATCH}, win_len {WIN_LEN}, {SIZE}x{SIZE} frames, CPU, "
        f"precision {args.precision}, {args.threads} torch thread(s), {args.workers} loader worker(s), "
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
