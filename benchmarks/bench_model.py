"""RocketPolicy speed on CPU: training steps (forward + backward) and streaming inference.

Measures minetrain's RocketPolicy and, when the reference venv exists (/tmp/reference-venv), the
reference library's RocketPolicy on the same configuration in the same run, each in its own
subprocess (so peak memory is per model), and prints the ratios.

Rates come from process CPU time at a fixed thread count (default 1): on a shared machine wall
time mostly measures the neighbours. Wall-clock rates are printed too.

    python benchmarks/bench_model.py [--steps 3] [--frames 32] [--threads 1] [--precision bf16-mixed]

``--precision bf16-mixed`` runs both under bf16 autocast, as Lightning's ``precision="bf16-mixed"`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import BATCH, CONFIG, REFERENCE_PYTHON, SIZE, Clock, offline_timm, peak_rss_mb, rss_mb, run_child


def _build(impl: str, config: dict):
    import torch

    torch.manual_seed(0)
    if impl == "ours":
        from minetrain.models import RocketPolicy

        return RocketPolicy(**config)
    offline_timm()
    from minestudio.models import RocketPolicy

    return RocketPolicy(**config)


def _batch(t: int, seed: int, size: int = SIZE):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (BATCH, t, size, size, 3), dtype=torch.uint8, generator=gen),
        "segment": {
            "obj_id": torch.randint(-1, 9, (BATCH, t), generator=gen),
            "obj_mask": torch.randint(0, 2, (BATCH, t, size, size), dtype=torch.uint8, generator=gen),
        },
    }


def _logits(out: dict, key: str):
    logits = out["pi_logits"][key]
    return logits.reshape(*logits.shape[:2], -1)  # the reference adds a singleton axis


def measure(
    impl: str,
    steps: int,
    frames: int,
    threads: int,
    config: dict = CONFIG,
    size: int = SIZE,
    precision: str = "32",
) -> dict:
    """Run in a child process: training steps/s, peak memory, streaming frames/s."""
    import torch

    torch.set_num_threads(threads)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        return _measure(impl, steps, frames, config, size)


def _measure(impl: str, steps: int, frames: int, config: dict, size: int) -> dict:
    import torch

    model = _build(impl, config).train()
    t = config["timesteps"]
    batches = [_batch(t, seed, size) for seed in range(steps + 1)]
    memory = None
    rss_before = rss_mb()
    train = Clock()
    for i, batch in enumerate(batches):
        with train if i else Clock():  # the first step is a warm-up
            out, memory = model(batch, memory)
            loss = -sum(_logits(out, key)[..., 0].float().mean() for key in ("buttons", "camera"))
            loss.backward()
            model.zero_grad(set_to_none=True)
            memory = [m.detach() for m in memory]
    train_peak = peak_rss_mb()

    model.eval()
    if impl == "reference":
        model.first = torch.zeros(BATCH, 1, dtype=torch.bool)  # it caches the flags' shape of its first call
    stream = _batch(frames + 4, 99, size)
    memory = None
    streaming = Clock()
    with torch.inference_mode():
        for i in range(frames + 4):
            step = {
                "image": stream["image"][:, i : i + 1],
                "segment": {k: v[:, i : i + 1] for k, v in stream["segment"].items()},
            }
            with streaming if i >= 4 else Clock():  # the first calls pay one-off kernel setup
                _, memory = model(step, memory)
    return {
        "train_steps_per_s": steps / train.cpu,
        "train_steps_per_wall_s": steps / train.wall,
        "train_peak_rss_mb": train_peak,
        "train_rss_growth_mb": train_peak - rss_before,
        "stream_frames_per_s": frames * BATCH / streaming.cpu,
        "stream_frames_per_wall_s": frames * BATCH / streaming.wall,
        "params": sum(p.numel() for p in model.parameters()),
    }


def _child(python: Path | str, impl: str, args: argparse.Namespace) -> dict:
    cmd = ["--child", impl, "--steps", str(args.steps), "--frames", str(args.frames)]
    cmd += ["--size", str(args.size), "--threads", str(args.threads), "--precision", args.precision]
    return run_child(python, __file__, cmd, f"{impl} model benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    parser.add_argument("--frames", type=int, default=32, help="timed streaming steps (after four warm-ups)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each measurement")
    parser.add_argument("--size", type=int, default=SIZE, help="frame height and width")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.child, args.steps, args.frames, args.threads, CONFIG, args.size, args.precision)
        print(json.dumps(result))
        return

    print(
        f"config {CONFIG}, batch {BATCH}, {args.size}x{args.size} frames, CPU, {args.threads} thread(s), "
        f"precision {args.precision}"
    )
    results = {"minetrain": _child(sys.executable, "ours", args)}
    if REFERENCE_PYTHON.exists():
        results["reference"] = _child(REFERENCE_PYTHON, "reference", args)
    for name, r in results.items():
        print(
            f"{name:>10}: train {r['train_steps_per_s']:.3f} steps/CPU-s "
            f"({r['train_steps_per_wall_s']:.3f}/wall-s), "
            f"peak RSS {r['train_peak_rss_mb']:.0f} MB (+{r['train_rss_growth_mb']:.0f} MB while training), "
            f"streaming {r['stream_frames_per_s']:.1f} frames/CPU-s "
            f"({r['stream_frames_per_wall_s']:.1f}/wall-s), "
            f"{r['params']:,} params"
        )
    if "reference" in results:
        ours, ref = results["minetrain"], results["reference"]
        print(
            f"     ratio: train speed x{ours['train_steps_per_s'] / ref['train_steps_per_s']:.2f}, "
            f"peak RSS x{ours['train_peak_rss_mb'] / ref['train_peak_rss_mb']:.2f}, "
            f"streaming speed x{ours['stream_frames_per_s'] / ref['stream_frames_per_s']:.2f} "
            "(speed: >1 is faster; memory: <1 is smaller)"
        )


if __name__ == "__main__":
    main()
