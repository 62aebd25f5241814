"""Under DDP every gradient has its parameter's layout: no "Grad strides do not match bucket view strides"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from offline_support import SCRIPT

from minetrain.data.synth import write_synthetic_dataset


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_two_process_ddp_warns_of_no_stride_mismatch(tmp_path: Path, precision: str) -> None:
    # 64x64 frames leave a 2x2 feature map: at 32x32 it is 1x1 and every layout looks the same.
    data = write_synthetic_dataset(tmp_path / "data", episodes=8, frames=24, size=64)
    cfg = {
        "data": str(data),
        "out": str(tmp_path),
        "devices": 2,
        "strategy": "ddp",
        "precision": precision,
        "frame_size": 64,
        "num_workers": 0,
        "max_steps": 2,
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), json.dumps(cfg)],
        env={**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Grad strides do not match" not in result.stdout + result.stderr, result.stderr[-3000:]
