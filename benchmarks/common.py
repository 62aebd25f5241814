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


def ensure_dataset(path: Path, episodes: int, frames: int, size: int = SIZE, noise: float = 0.0) -> Path:
    """The synthetic dataset at ``path`` (written once, reused), Gaussian pixel noise ``noise`` added.

    Plain synthetic frames are flat colours that decode several times faster than gameplay, which
    inflates every per-frame cost next to decoding; noise of about 8 brings decoding to the speed
    reported for real 224x224 chunks (~2,000 frames/s).
    """
    import numpy as np

    from minetrain.data.store import DatasetWriter
    from minetrain.data.synth import synth_episode

    done = path / "bench-complete"
    if not done.exists():
        print(f"writing {episodes} x {frames} synthetic frames at {size}x{size}, noise {noise:g}, to {path}")
        rng = np.random.default_rng(0)
        with DatasetWriter(path) as writer:
            for index in range(episodes):
                episode = synth_episode(index, frames, size=size, seed=0)
                if noise:
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
