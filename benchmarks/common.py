"""What the benchmark scripts share: the small configuration, synthetic data, clocks, memory probes,
and running a measurement in a child process (minetrain's or the reference venv's Python).

Importable by the reference venv's Python too: nothing here imports minetrain at module level.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

# The small training configuration every benchmark uses (the seed's model, scaled down for CPU).
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


def gameplay_frames(n: int, size: int = SIZE, seed: int = 0) -> Any:
    """``n`` (size, size, 3) uint8 frames of a procedural Minecraft-like scene, as a camera sees it.

    A block world (sky, a grass line, dirt and stone layers with scattered other blocks, each block
    a 16x16 pixel-art texture of a small palette) seen through a camera that pans with momentum,
    turns quickly now and then, looks up and down and moves closer or further (so frames are
    resampled, not just shifted), with vertical shading and sensor noise of std 4. Unlike flat
    synthetic frames it decodes at the speed of the project's gameplay-calibrated noisy frames
    (see ``bench_store.py``); it is texture and motion, not noise, that the codec has to carry.
    """
    import numpy as np

    from minetrain.data.store.codecs import LinearResize

    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(24):
        palette = np.clip(rng.integers(40, 220, 3) + rng.normal(0, 28, (5, 3)), 0, 255)
        tiles.append(palette[rng.integers(0, 5, (16, 16))])
    tiles = np.stack(tiles).astype(np.float32)
    tiles[0] = np.linspace(235, 150, 16)[:, None, None] * np.array([0.55, 0.75, 1.0])  # sky
    blocks_h, blocks_w = 24, 96
    ground = 8 + np.cumsum(rng.integers(-1, 2, blocks_w)).clip(-3, 5)
    rows = np.arange(blocks_h)[:, None]
    ids = np.select([rows < ground, rows == ground, rows < ground + 4], [0, 1, 2], 3)
    scattered = (rng.random(ids.shape) < 0.15) & (ids > 0)
    ids[scattered] = rng.integers(4, len(tiles), int(scattered.sum()))
    world = tiles[ids].transpose(0, 2, 1, 3, 4).reshape(blocks_h * 16, blocks_w * 16, 3)
    world = world.repeat(2, 0).repeat(2, 1)  # 2 world pixels per texel
    height, width = world.shape[:2]
    world = np.concatenate([world, world[:, : 2 * size]], axis=1).astype(np.uint8)  # wraps around
    x, y, vx, vy, zoom = 0.0, height / 2 - size, 0.0, 0.0, 1.0
    shade = np.linspace(1.1, 0.8, size, dtype=np.float32)[:, None, None]
    out = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        if rng.random() < 0.04:
            vx += rng.normal(0, 25)
        vx = 0.9 * vx + rng.normal(0, 2.0)
        vy = 0.9 * vy + rng.normal(0, 1.0)
        zoom = float(np.clip(zoom * np.exp(rng.normal(0, 0.01)), 0.75, 1.3))
        x, y = (x + vx) % width, float(np.clip(y + vy, 0, height - 2 * size))
        span = int(size * 1.5 / zoom)
        crop = np.ascontiguousarray(world[int(y) : int(y) + span, int(x) : int(x) + span])
        frame = LinearResize((span, span), (size, size))(crop) * shade
        out[t] = np.clip(frame + rng.normal(0, 4.0, frame.shape), 0, 255)
    return out


def ensure_dataset(
    path: Path, episodes: int, frames: int, size: int = SIZE, noise: float = 0.0, gameplay: bool = False
) -> Path:
    """The synthetic dataset at ``path`` (written once, reused), Gaussian pixel noise ``noise`` added.

    Plain synthetic frames are flat colours that decode several times faster than gameplay, which
    inflates every per-frame cost next to decoding; noise of about 8 brings decoding to the speed
    reported for real 224x224 chunks (~2,000 frames/s). ``gameplay``: frames of ``gameplay_frames``
    instead (actions and segmentation stay the synthetic episode's).
    """
    import numpy as np

    from minetrain.data.store import DatasetWriter
    from minetrain.data.synth import synth_episode

    done = path / "bench-complete"
    if not done.exists():
        kind = "gameplay-like" if gameplay else f"synthetic (noise {noise:g})"
        print(f"writing {episodes} x {frames} {kind} frames at {size}x{size} to {path}")
        rng = np.random.default_rng(0)
        with DatasetWriter(path) as writer:
            for index in range(episodes):
                episode = synth_episode(index, frames, size=size, seed=0)
                if gameplay:
                    episode.image = gameplay_frames(len(episode.image), size, seed=index)
                elif noise:
                    grain = rng.normal(0.0, noise, episode.image.shape).astype(np.float32)
                    episode.image = np.clip(episode.image + grain, 0, 255).astype(np.uint8)
                writer.write(episode)
        done.touch()
    return path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tree_pss_mb(root: int) -> float:
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
    """Samples the process tree's memory every 50 ms until stopped; ``peak`` is the largest sample."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_pss_mb(os.getpid()))
            time.sleep(0.05)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


class Clock:
    """CPU and wall seconds spent inside ``with`` blocks."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def __enter__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.cpu += time.process_time() - self._cpu
        self.wall += time.perf_counter() - self._wall


def children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (DataLoader workers once they exit)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def offline_timm() -> None:
    """Make ``timm.create_model`` never download: the reference asks for pretrained weights."""
    import timm

    create = timm.create_model
    timm.create_model = lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw)


def run_child(python: Path | str, script: str, args: list[str], what: str) -> Any:
    """Run ``python script args`` and return the JSON value its last stdout line holds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([str(python), script, *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
