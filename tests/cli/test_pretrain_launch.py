"""`minetrain pretrain` on several processes: Lightning's local DDP launcher, and torchrun "nodes"."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pretrain import SMALL

from minetrain.data.synth import write_synthetic_dataset

# SMALL without the demo dataset's settings, on a dataset given explicitly, 3 steps on 2 processes.
TWO_PROCESSES = [*SMALL[3:], "trainer.max_steps=3", "save_freq=2", "trainer.strategy=ddp", "name=multi"]


def minetrain_command() -> list[str]:
    """The `minetrain` console script installed beside this Python, else the module it runs."""
    script = Path(sys.executable).with_name("minetrain")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "minetrain.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("ddp-data") / "synth", episodes=4, frames=60, size=32, seed=1
    )


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def only_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "outputs" / "multi").iterdir()
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["console script", "python -m minetrain.cli.main"])
def test_two_devices_on_cpu_train_and_write_checkpoints(tmp_path: Path, dataset: Path, launcher: str):
    command = (
        minetrain_command() if launcher == "console script" else [sys.executable, "-m", "minetrain.cli.main"]
    )
    result = subprocess.run(
        [*command, "pretrain", f"data.dataset_dirs=[{dataset}]", *TWO_PROCESSES, "trainer.devices=2"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr
    run_dir = only_run_dir(tmp_path)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    assert (run_dir / "weights" / "weight-epoch=0-step=2.ckpt").is_file()


@pytest.mark.slow
def test_two_torchrun_nodes_share_one_run_dir(tmp_path: Path, dataset: Path):
    port = free_port()
    overrides = [f"data.dataset_dirs=[{dataset}]", *TWO_PROCESSES, "trainer.num_nodes=2"]
    agents = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                "--rdzv-id", "two-nodes", "-m", "minetrain.cli.pretrain", *overrides,
            ],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    outputs = [agent.communicate(timeout=300) for agent in agents]
    for agent, (_, stderr) in zip(agents, outputs, strict=True):
        assert agent.returncode == 0, stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name == "two-nodes"
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("last.ckpt"))
    assert written == [run_dir.relative_to(tmp_path) / "checkpoints" / "last.ckpt"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    assert "Resume:" in outputs[0][0] and "Resume:" not in outputs[1][0]
