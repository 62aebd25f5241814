"""Tiny RocketPolicy configuration and batch builders shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import torch

TINY = {
    "backbone": "test_efficientnet",
    "hiddim": 16,
    "num_heads": 2,
    "num_layers": 2,
    "timesteps": 8,
    "mem_len": 8,
}


def make_batch(b: int, t: int, size: int = 32, seed: int = 0, first: torch.Tensor | None = None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "image": torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=gen),
        "segment": {
            "obj_id": torch.randint(-1, 9, (b, t), generator=gen),
            "obj_mask": torch.randint(0, 2, (b, t, size, size), dtype=torch.uint8, generator=gen),
        },
    }
    if first is not None:
        batch["first"] = first
    return batch


def window(batch: dict, start: int, stop: int) -> dict:
    """The steps [start, stop) of a batch."""
    out = {
        "image": batch["image"][:, start:stop],
        "segment": {key: value[:, start:stop] for key, value in batch["segment"].items()},
    }
    if "first" in batch:
        out["first"] = batch["first"][:, start:stop]
    return out


def save_lightning_checkpoint(module: object, path: Path) -> Path:
    """``module`` (a LightningModule) written by Lightning's own ``save_checkpoint``, without training."""
    import lightning as L

    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.strategy.connect(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path
