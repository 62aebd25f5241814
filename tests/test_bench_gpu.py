"""``benchmarks/bench_gpu.py`` keeps running: its CPU mode (a tiny model) and its no-CUDA exit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_cpu_tiny_mode_reports_rate_memory_and_loader_workers(tmp_path: Path) -> None:
    done = run(["--device", "cpu", "--tiny", "--data-dir", str(tmp_path)])
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["device"] == "cpu" and figures["model"] == "tiny" and figures["precision"] == "bf16-mixed"
    assert figures["frames_per_s"] > 0 and figures["peak_mib"] > 0 and figures["loader_fps_per_worker"] > 0
    assert figures["workers_per_gpu"] >= 1
    assert "loader workers per GPU" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_it_says_so_and_exits_0() -> None:
    done = run([])
    assert done.stdout.startswith("no CUDA device here") and "--device cpu --tiny" in done.stdout
