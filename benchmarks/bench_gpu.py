"""The rocket1 training step on a GPU: frames/s, peak memory, and the loader workers that rate needs.

The model of ``minetrain/configs/rocket1.yaml`` at its batch (8 windows of 128 frames at 224x224)
runs MineLightning's training step as Lightning's ``precision="bf16-mixed"`` runs it: forward and
loss under bf16 autocast, backward, gradient clipping at 1.0 and an AdamW step, with the recurrent
memory carried from batch to batch. Each batch is copied from pinned host memory without blocking,
as Lightning moves a loader's pinned batches. The backbone is channels-last, as RocketPolicy
always builds it; ``--compile`` compiles it, the pooling and the recurrent blocks as
``model.compile=true`` does (the first steps, not timed, include the compilation).

Reported: frames/s over the timed steps (forward + backward + optimizer), the peak of
``torch.cuda.max_memory_allocated`` over them, and the DataLoader workers each GPU needs to feed
that rate: ``ceil(frames/s / frames/s per worker)``. The per-worker rate is measured here with one
worker on a short synthetic dataset whose pixel noise decodes at about the speed of real chunks,
or given with ``--loader-fps-per-worker`` (e.g. from ``bench_loader.py`` on the GPU node: its
``workers=2`` figure divided by 2). Decoding runs on the host's cores, so measure it on the
machine that trains.

    python benchmarks/bench_gpu.py [--compile] [--steps 20] [--loader-fps-per-worker F]
    python benchmarks/bench_gpu.py --device cpu --tiny     # the same code on CPU, a tiny model (CI)

Without a CUDA device (and without ``--device cpu``) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from common import ensure_dataset, peak_rss_mb
from omegaconf import OmegaConf

from minetrain.data import MineDataModule
from minetrain.models import RocketPolicy
from minetrain.models.compiled import DEFAULT_BACKEND, compile_policy
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback
from minetrain.offline.optim import param_groups

ROCKET1 = Path(__file__).resolve().parents[1] / "minetrain" / "configs" / "rocket1.yaml"
# --tiny: the CLI tests' policy on 32x32 frames, a couple of steps.
TINY_MODEL = dict(backbone="test_efficientnet", hiddim=32, num_heads=2, num_layers=1, timesteps=8, mem_len=8)


def rocket1() -> tuple[dict[str, Any], dict[str, Any], float]:
    """The rocket1 config's model section, its data section and its objective weight."""
    cfg = OmegaConf.load(ROCKET1)
    return OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.data), float(cfg.objective_weight)


def host_batch(batch: int, win: int, size: int, pin: bool) -> dict[str, Any]:
    """One random batch in the loader's format, in pinned memory when ``pin``."""
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "image": torch.randint(0, 256, (batch, win, size, size, 3), dtype=torch.uint8, generator=gen),
        "segment": {
            "obj_id": torch.randint(-1, 9, (batch, win), generator=gen),
            "obj_mask": torch.randint(0, 2, (batch, win, size, size), dtype=torch.uint8, generator=gen),
        },
        "agent_action": {
            "buttons": torch.randint(0, 8641, (batch, win), generator=gen),
            "camera": torch.randint(0, 121, (batch, win), generator=gen),
        },
        "mask": torch.ones(batch, win, dtype=torch.uint8),
        "timestamp": torch.arange(win).repeat(batch, 1),
    }
    if pin:
        tensors = _apply(tensors, torch.Tensor.pin_memory)
    return {**tensors, "episode": [f"episode-{i}" for i in range(batch)]}


def _apply(tree: Any, fn: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _apply(value, fn) for key, value in tree.items()}
    return fn(tree) if isinstance(tree, torch.Tensor) else tree


def train_rate(
    model: dict[str, Any],
    batch: int,
    size: int,
    weight: float,
    device: torch.device,
    args: argparse.Namespace,
) -> tuple[float, float]:
    """(frames/s of training steps, peak memory in MiB: CUDA allocations, or the process RSS on CPU)."""
    torch.manual_seed(0)
    policy = RocketPolicy(**model)
    if args.compile:
        compile_policy(policy, args.compile)
    module = MineLightning(
        policy, [BehaviorCloneCallback(weight=weight)], learning_rate=4e-5, warmup_steps=0, seed=0
    ).to(device)
    module.train()
    optimizer = torch.optim.AdamW(param_groups(policy, 0.001), lr=4e-5)
    win = model["timesteps"]
    cuda = device.type == "cuda"
    host = host_batch(batch, win, size, pin=cuda)

    def step(index: int) -> None:
        # Consecutive windows of the same episodes: the memory is carried, as in training.
        on_device = _apply(host, lambda t: t.to(device, non_blocking=True))
        on_device["timestamp"] = on_device["timestamp"] + index * win
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            loss = module._batch_step(on_device, index, "train")["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for index in range(args.warmup):
        step(index)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for index in range(args.warmup, args.warmup + args.steps):
        step(index)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()
    return batch * win * args.steps / seconds, peak


def loader_fps_per_worker(path: Path, batch: int, win: int, size: int) -> float:
    """Frames/s one DataLoader worker delivers in the seed's data block, over an epoch after its first
    two batches (the worker starts and its batch memory is faulted in)."""
    module = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(path)],
            frame_width=size,
            frame_height=size,
            win_len=win,
            enable_segment=True,
        ),
        batch_size=batch,
        num_workers=1,
        prefetch_factor=2,
        split_ratio=1.0,
        episode_continuous_batch=True,
    )
    module.setup()
    loader = module.train_dataloader()
    start, frames = 0.0, 0
    for index, loaded in enumerate(loader):
        if index == 1:
            start = time.perf_counter()
        elif index > 1:
            frames += int(loaded["mask"].sum())
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny model on 32x32 frames (CI, CPU)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const=DEFAULT_BACKEND,
        default=None,
        metavar="BACKEND",
        help=f"torch.compile the backbone, pooling and blocks (backend {DEFAULT_BACKEND} unless given)",
    )
    parser.add_argument("--precision", choices=("bf16-mixed", "32"), default="bf16-mixed")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, --tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 3, --tiny 1)")
    parser.add_argument("--loader-fps-per-worker", type=float, default=None, help="skip the loader measure")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-bench-gpu"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): nothing to measure; "
              "python benchmarks/bench_gpu.py --device cpu --tiny runs the same code on CPU")  # fmt: skip
        return
    model, data, weight = rocket1()
    batch, size = data["batch_size"], data["frame_width"]
    if args.tiny:
        model, batch, size = TINY_MODEL, 2, 32
    args.steps = args.steps if args.steps is not None else (2 if args.tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    win = model["timesteps"]
    name = "tiny" if args.tiny else "rocket1"
    print(
        f"{name} model ({model['backbone']}, hiddim {model['hiddim']}, {model['num_layers']} layers), batch "
        f"{batch} x {win} x {size}^2 on {device}, {args.precision}, compile {args.compile or 'off'}"
    )
    rate, peak = train_rate(model, batch, size, weight, device, args)
    what = "peak CUDA memory allocated" if device.type == "cuda" else "peak RSS of this process"
    print(f"training step (forward + backward + AdamW): {rate:,.1f} frames/s over {args.steps} steps")
    print(f"{what}: {peak:,.0f} MiB")
    per_worker = args.loader_fps_per_worker
    if per_worker is None:
        # Eight batches of windows: two to start the worker, six timed.
        path = args.data_dir / f"{size}px-{batch}x{win}"
        ensure_dataset(path, episodes=2 * batch, frames=4 * win, size=size, noise=8.0)
        per_worker = loader_fps_per_worker(path, batch, win, size)
        print(f"one loader worker (measured here, frames with pixel noise 8): {per_worker:,.0f} frames/s")
    workers = math.ceil(rate / per_worker)
    print(
        f"loader workers per GPU to feed {rate:,.0f} frames/s at {per_worker:,.0f} frames/s each: {workers}"
    )
    print(
        json.dumps(
            {
                "device": str(device),
                "model": name,
                "compile": args.compile,
                "precision": args.precision,
                "frames_per_s": rate,
                "peak_mib": peak,
                "loader_fps_per_worker": per_worker,
                "workers_per_gpu": workers,
            }
        )
    )


if __name__ == "__main__":
    main()
