"""Helpers of the offline tests: run training subprocesses and compare their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

SCRIPT = Path(__file__).parent / "run_training.py"


def launch(cfg: dict[str, Any]) -> subprocess.Popen:
    """Start ``run_training.py`` with ``cfg`` in a fresh process (output captured)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cfg["out"],
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def run(cfg: dict[str, Any], timeout: float = 300) -> str:
    """Run ``run_training.py`` to completion; fail with its output if it does not exit 0."""
    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    code, output = finish(launch(cfg), timeout)
    assert code == 0, output[-4000:]
    return output


def read_batches(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_final(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=False)


def assert_same_state(a: dict[str, Any], b: dict[str, Any], buffers: bool = True) -> None:
    """Bitwise equality of weights, EMA weights, optimizer state, learning rates and step.

    ``buffers=False`` leaves out the normalisation statistics, which DDP ranks update locally.
    """
    assert a["global_step"] == b["global_step"]
    assert a["lr"] == b["lr"]
    skip = set() if buffers else set(a["buffers"])
    for name in ("params", "buffers", "ema"):
        assert a[name].keys() == b[name].keys()
        for key in a[name].keys() - skip if name != "buffers" or buffers else ():
            assert torch.equal(a[name][key], b[name][key]), f"{name} {key} differs"
    opt_a, opt_b = a["optimizer"], b["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for index, state in opt_a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, opt_b["state"][index][key]), f"optimizer state {index}.{key} differs"
