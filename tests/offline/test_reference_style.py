"""Objectives written in MineStudio's style run unchanged in MineLightning."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from minetrain.models import RocketPolicy
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback, ObjectiveCallback

TINY = {
    "backbone": "test_efficientnet",
    "hiddim": 16,
    "num_heads": 2,
    "num_layers": 1,
    "timesteps": 4,
    "mem_len": 4,
}


class ReferenceStyleBC(ObjectiveCallback):
    """Behaviour cloning written the way MineStudio's objectives are (through ``pi_head``)."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight
        self.shapes: list[tuple] = []

    def before_step(self, batch, batch_idx, step_name):  # type: ignore[no-untyped-def]
        self.shapes.append(tuple(batch["agent_action"]["buttons"].shape))
        return batch

    def __call__(self, batch, batch_idx, step_name, latents, mine_policy):  # type: ignore[no-untyped-def]
        agent_action, pi_logits = batch["agent_action"], latents["pi_logits"]
        self.shapes.append((tuple(agent_action["camera"].shape), tuple(pi_logits["camera"].shape)))
        log_prob = mine_policy.pi_head.logprob(agent_action, pi_logits, return_dict=True)
        entropy = mine_policy.pi_head.entropy(pi_logits, return_dict=True)
        camera_mask = (agent_action["camera"] != 60).float().squeeze(-1)
        global_mask = batch.get("mask", torch.ones_like(camera_mask))
        logp_camera = (log_prob["camera"] * global_mask * camera_mask).sum(-1)
        logp_buttons = (log_prob["buttons"] * global_mask).sum(-1)
        entropy_all = (entropy["camera"] * global_mask * camera_mask + entropy["buttons"] * global_mask).sum(
            -1
        )
        return {
            "loss": -(logp_camera + logp_buttons).mean() * self.weight,
            "ref_entropy": entropy_all.mean(),
            "kl_self": mine_policy.pi_head.kl_divergence(pi_logits, pi_logits).mean(),
        }


def _batches(n: int, b: int = 2, t: int = 4, size: int = 32) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        camera = torch.randint(55, 66, (b, t), generator=gen)
        out.append(
            {
                "image": torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=gen),
                "segment": {
                    "obj_id": torch.randint(-1, 7, (b, t), generator=gen),
                    "obj_mask": torch.randint(0, 2, (b, t, size, size), dtype=torch.uint8, generator=gen),
                },
                "agent_action": {"buttons": torch.randint(0, 8641, (b, t), generator=gen), "camera": camera},
                "mask": torch.ones(b, t),
                "timestamp": torch.arange(i * t, (i + 1) * t).repeat(b, 1),
                "episode": [f"ep{j}" for j in range(b)],
                "first": torch.zeros(b, t, dtype=torch.bool),
            }
        )
    return out


def test_reference_style_objective_runs_unchanged_and_equals_behaviour_cloning() -> None:
    torch.manual_seed(0)
    policy = RocketPolicy(**TINY, pooling_dropout=0.0)
    reference_style = ReferenceStyleBC(0.01)
    module = MineLightning(policy, callbacks=[reference_style, BehaviorCloneCallback(0.01)])
    batch = _batches(1)[0]
    metrics = module._batch_step(batch, 0, "train")["metrics"]
    assert reference_style.shapes == [(2, 4, 1), ((2, 4, 1), (2, 4, 1, 121))]
    assert metrics["objective/loss"].item() == pytest.approx(metrics["bc/loss"].item(), rel=1e-5)
    assert metrics["objective/ref_entropy"].item() == pytest.approx(metrics["bc/entropy"].item(), rel=1e-5)
    assert metrics["objective/kl_self"].item() == pytest.approx(0.0, abs=1e-6)

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = MineLightning(policy, callbacks=[ReferenceStyleBC(0.01)], warmup_steps=2)
    trainer.fit(module, train_dataloaders=DataLoader(_batches(3), batch_size=None))
    assert trainer.global_step == 3
