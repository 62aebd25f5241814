"""Train the reference library's (MineStudio 1.1.6) MineLightning on given batches; record every step.

Run in the reference venv, offline (tests/offline/test_training_parity.py does it):
    HF_HUB_OFFLINE=1 /tmp/reference-venv/bin/python scripts/reference_bc_steps.py CONFIG.json

CONFIG holds ``batches`` (a torch file: a list of batches in minetrain's layout, agent actions
(B,T)), ``weights`` (a reference RocketPolicy Hub directory), ``out`` (the result file), the seed
tutorial's ``weight``, ``learning_rate``, ``weight_decay``, ``warmup_steps``, ``ema_decay``,
``ema_every_n_steps`` and ``gradient_clip_val``. Dropout is switched off, so the steps depend on
nothing but the weights, the batches and the optimiser. Writes ``{"loss": [per step],
"params": {name: tensor}, "ema": {name: tensor}}`` (``ema``: the EMA callback's shadow weights,
named like the policy's parameters).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import lightning as L
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

_create_model = timm.create_model


def _offline_create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The reference always asks timm for pretrained weights; there is no network here."""
    return _create_model(name, pretrained=False, **kwargs)


timm.create_model = _offline_create_model

from minestudio.models import RocketPolicy  # noqa: E402
from minestudio.offline import MineLightning  # noqa: E402
from minestudio.offline.lightning_callbacks import EMA  # noqa: E402
from minestudio.offline.mine_callbacks import BehaviorCloneCallback  # noqa: E402


def no_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0


def reference_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The reference's layout: agent actions with a trailing dim of 1."""
    return {**batch, "agent_action": {k: v[..., None] for k, v in batch["agent_action"].items()}}


class Record(L.Callback):
    def __init__(self) -> None:
        self.loss: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.loss.append(float(outputs["loss"]))


def main() -> None:
    with open(sys.argv[1]) as handle:
        cfg = json.load(handle)
    torch.set_num_threads(1)
    batches = [reference_batch(b) for b in torch.load(cfg["batches"], weights_only=True)]
    # from_pretrained leaves the model in eval mode and Lightning keeps modules' modes: train it as the
    # seed's freshly built policy is (BatchNorm on batch statistics).
    policy = RocketPolicy.from_pretrained(cfg["weights"]).train()
    no_dropout(policy)
    module = MineLightning(
        mine_policy=policy,
        callbacks=[BehaviorCloneCallback(weight=cfg["weight"])],
        log_freq=20,
        learning_rate=cfg["learning_rate"],
        weight_decay=cfg["weight_decay"],
        warmup_steps=cfg["warmup_steps"],
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
    (optimizer,) = trainer.optimizers
    optimizer.join()
    names = [name for name, _ in policy.named_parameters()]
    torch.save(
        {
            "loss": record.loss,
            "params": {name: p.detach().clone() for name, p in policy.named_parameters()},
            "ema": dict(zip(names, optimizer.ema_params, strict=True)),
        },
        cfg["out"],
    )


if __name__ == "__main__":
    main()
