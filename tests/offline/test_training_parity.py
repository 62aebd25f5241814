"""Training dynamics equal to the reference library's (MineStudio 1.1.6) on the same weights and batches.

Both libraries train the same small RocketPolicy (the reference's weights in
``tests/fixtures/model_rocket_ref``) with their own ``MineLightning``, ``BehaviorCloneCallback``,
AdamW + warmup and ``EMA``, under a Lightning Trainer with gradient clipping, fp32, on one fixed
sequence of 50 episode-continuous batches (episodes end with padded windows, slots move on to new
episodes). Dropout is off in both: its random draws are the only thing they cannot share. Compared:
the BC loss of every step (relative difference <= 1e-4), the trained weights and the EMA weights.
The reference runs in its venv (``scripts/reference_bc_steps.py``); without it the test skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from minetrain.models import load_reference_checkpoint
from minetrain.offline import MineLightning
from minetrain.offline.lightning_callbacks import EMA
from minetrain.offline.mine_callbacks import BehaviorCloneCallback

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "tests" / "fixtures" / "model_rocket_ref"
SCRIPT = ROOT / "scripts" / "reference_bc_steps.py"
REFERENCE_PYTHON = Path(os.environ.get("REFERENCE_VENV", "/tmp/reference-venv")) / "bin" / "python"
STEPS, BATCH, WINDOW, SIZE = 50, 2, 6, 32
# Episode lengths per batch slot: every episode ends inside a window (padded), then a new one starts.
EPISODES = ([40, 70, 200], [100, 27, 200])
CONFIGS = {
    # The seed tutorial's objective weight, optimiser, warmup, clipping and EMA.
    "seed": dict(
        weight=0.01,
        learning_rate=4e-5,
        weight_decay=0.001,
        warmup_steps=2000,
        ema_decay=0.999,
        ema_every_n_steps=8,
        gradient_clip_val=1.0,
    ),
    # Weight 1, a short warmup and a 7x larger rate: the weights move, clipping acts on every step, and
    # the loss scale, the weight decay of every parameter and the EMA's start all show in the figures.
    # (At rates near 1e-3 the run is chaotic: minetrain on 1 vs 2 threads alone drifts apart by 1e-2.)
    "fast": dict(
        weight=1.0,
        learning_rate=3e-4,
        weight_decay=0.05,
        warmup_steps=5,
        ema_decay=0.99,
        ema_every_n_steps=2,
        gradient_clip_val=1.0,
    ),
}

pytestmark = pytest.mark.skipif(
    not REFERENCE_PYTHON.exists(),
    reason=f"no reference library venv at {REFERENCE_PYTHON} (install it: bash benchmarks/reference-venv.sh)",
)


def make_batches() -> list[dict[str, Any]]:
    """Episode-continuous windows in minetrain's layout (what MineDataModule yields)."""
    gen = torch.Generator().manual_seed(0)
    slots = []
    for lengths in EPISODES:
        windows = []
        for e, length in enumerate(lengths):
            for start in range(0, length, WINDOW):
                windows.append((f"ep{len(slots)}-{e}", start, length))
        slots.append(windows[:STEPS])
    batches = []
    for step in range(STEPS):
        timestamp = torch.stack([torch.arange(s[step][1], s[step][1] + WINDOW) for s in slots])
        mask = torch.stack([(torch.arange(s[step][1], s[step][1] + WINDOW) < s[step][2]) for s in slots])
        moved = torch.rand(BATCH, WINDOW, generator=gen) < 0.5
        camera = torch.where(moved, torch.randint(0, 121, (BATCH, WINDOW), generator=gen), 60)
        batches.append(
            {
                "image": torch.randint(
                    0, 256, (BATCH, WINDOW, SIZE, SIZE, 3), dtype=torch.uint8, generator=gen
                ),
                "segment": {
                    "obj_id": torch.randint(-1, 7, (BATCH, WINDOW), generator=gen),
                    "obj_mask": torch.randint(
                        0, 2, (BATCH, WINDOW, SIZE, SIZE), dtype=torch.uint8, generator=gen
                    ),
                },
                "agent_action": {
                    "buttons": torch.randint(0, 24, (BATCH, WINDOW), generator=gen),
                    "camera": camera,
                },
                "mask": mask.float(),
                "timestamp": timestamp,
                "episode": [s[step][0] for s in slots],
                "first": timestamp == 0,
            }
        )
    return batches


def no_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0


class Record(L.Callback):
    def __init__(self) -> None:
        self.loss: list[float] = []
        self.grad_norm: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # type: ignore[no-untyped-def]
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.grad_norm.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.loss.append(float(outputs["loss"]))


def train_minetrain(batches: list[dict[str, Any]], cfg: dict[str, Any]) -> tuple[Record, EMA, nn.Module]:
    policy = load_reference_checkpoint(WEIGHTS).train()
    no_dropout(policy)
    module = MineLightning(
        mine_policy=policy,
        callbacks=[BehaviorCloneCallback(weight=cfg["weight"])],
        log_freq=20,
        learning_rate=cfg["learning_rate"],
        weight_decay=cfg["weight_decay"],
        warmup_steps=cfg["warmup_steps"],
        seed=0,
    )
    ema = EMA(decay=cfg["ema_decay"], validate_original_weights=True, every_n_steps=cfg["ema_every_n_steps"])
    record = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        precision=32,
        max_steps=len(batches),
        gradient_clip_val=cfg["gradient_clip_val"],
        callbacks=[ema, record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return record, ema, policy


def drift(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], start: dict[str, torch.Tensor]
) -> float:
    """How far apart two sets of weights are, relative to how far the reference's moved from ``start``.

    Over all weights at once: Adam moves weights whose gradients are rounding noise by about the
    learning rate in either direction, so a per-tensor maximum measures noise, not the dynamics.
    """
    names = sorted(theirs)
    ours_v, theirs_v, start_v = (
        torch.cat([d[n].detach().flatten() for n in names]) for d in (ours, theirs, start)
    )
    return float((ours_v - theirs_v).norm() / (theirs_v - start_v).norm())


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_per_step_bc_loss_equals_the_references(tmp_path: Path, config: str) -> None:
    cfg = CONFIGS[config]
    batches = make_batches()
    torch.save(batches, tmp_path / "batches.pt")
    job = {
        **cfg,
        "batches": str(tmp_path / "batches.pt"),
        "weights": str(WEIGHTS),
        "out": str(tmp_path / "ref.pt"),
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    reference = subprocess.Popen(
        [str(REFERENCE_PYTHON), str(SCRIPT), str(tmp_path / "job.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    torch.set_num_threads(1)
    record, ema, policy = train_minetrain(batches, cfg)
    output, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, output[-4000:]
    ref = torch.load(tmp_path / "ref.pt", weights_only=True)

    ours, theirs = (
        torch.tensor(record.loss, dtype=torch.float64),
        torch.tensor(ref["loss"], dtype=torch.float64),
    )
    assert len(ours) == len(theirs) == STEPS
    rel = ((ours - theirs).abs() / theirs.abs()).max().item()
    print(
        f"\n{config}: max relative BC loss difference over {STEPS} steps {rel:.2e}; loss {theirs[0]:.4f} -> "
        f"{theirs[-1]:.4f}; clipped steps {sum(n > cfg['gradient_clip_val'] for n in record.grad_norm)}"
    )
    assert rel <= 1e-4, list(zip(record.loss, ref["loss"], strict=True))

    start = dict(load_reference_checkpoint(WEIGHTS).named_parameters())
    shadow = {name: ema.ema_state_dict()[f"mine_policy.{name}"] for name in ref["ema"]}
    weights = drift(dict(policy.named_parameters()), ref["params"], start)
    averaged = drift(shadow, ref["ema"], start)
    absolute = drift(shadow, ref["ema"], {name: torch.zeros_like(value) for name, value in shadow.items()})
    print(
        f"{config}: weights differ by {weights:.1e} of their change, EMA weights by {averaged:.1e} of their "
        f"change and {absolute:.1e} of their size"
    )
    # Rounding noise amplified by Adam stays below 1e-3; the previous defaults (weight decay on matrices
    # only, an EMA that starts by copying) differ by 2e-2 to 7e-2 in the "fast" run. With the seed's
    # EMA (0.999 every 8 steps) the shadow weights move less in 50 steps than float32 resolves.
    assert weights <= 5e-3 and absolute <= 1e-5
    if config == "fast":
        assert averaged <= 5e-3
