"""Helpers of the offline tests: run training subprocesses and compare their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

SCRIPT = Path(__file__).parent / "run_training.py"


def launch(cfg: dict[str, Any], python_warnings: str = "ignore") -> subprocess.Popen:
    """Start ``run_training.py`` with ``cfg`` in a fresh process (output captured); ``python_warnings``
    is its ``PYTHONWARNINGS`` (``default`` shows each warning once)."""
    env = {**os.environ, "PYTHONWARNINGS": python_warnings, "OMP_NUM_THREADS": "1"}
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


def run(cfg: dict[str, Any], timeout: float = 300, python_warnings: str = "ignore") -> str:
    """Run ``run_training.py`` to completion; fail with its output if it does not exit 0."""
    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    code, output = finish(launch(cfg, python_warnings), timeout)
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


def window(
    episodes: list[str], starts: list[int], t: int = 4, stride: int = 1, real: list[int] | None = None
) -> dict:
    timestamp = torch.stack([torch.arange(s, s + t * stride, stride) for s in starts])
    mask = torch.ones(len(starts), t)
    for slot, n in enumerate(real or []):
        mask[slot, n:] = 0
        timestamp[slot, n:] = -1
    first = timestamp == 0
    return {"episode": episodes, "timestamp": timestamp, "mask": mask, "first": first}


class EchoPolicy(nn.Module):
    """Records what it is given; memory = running count of frames seen by each slot since a reset."""

    def __init__(self) -> None:
        super().__init__()
        self.config = {"timesteps": 4}
        self.scale = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, list[torch.Tensor] | None]] = []

    def forward(self, batch: dict, memory: list[torch.Tensor] | None) -> tuple[dict, list[torch.Tensor]]:
        self.calls.append((batch["first"].clone(), memory))
        b, t = batch["first"].shape
        count = torch.zeros(b) if memory is None else memory[0].clone()
        count[batch["first"][:, 0]] = 0
        logits = self.scale.expand(b, t, 8641).clone(), self.scale.expand(b, t, 121).clone()
        return {"pi_logits": {"buttons": logits[0], "camera": logits[1]}}, [count + t]


def actions(b: int, t: int) -> dict:
    return {"buttons": torch.zeros(b, t, dtype=torch.long), "camera": torch.full((b, t), 60)}
